//! Mutual challenge/response with a shared secret (HMAC-SHA256).
//!
//! 1. P→S `Hello { volume, nonce_p }`
//! 2. S→P `Challenge { nonce_s, proof_s }`, proof_s = HMAC(secret, "rewind-repl/secondary" ‖ volume ‖ nonce_p ‖ nonce_s)
//! 3. P checks proof_s (the secondary knows the secret), then P→S `Proof { proof_p }`,
//!    proof_p = HMAC(secret, "rewind-repl/primary" ‖ volume ‖ nonce_p ‖ nonce_s)
//! 4. S checks proof_p.
//!
//! Nonces are 32 random bytes from each side, so neither proof can be replayed into another
//! session; the role label keeps one side's proof from being reflected as the other's. The
//! secret never crosses the wire. Proofs are compared in constant time (`Mac::verify_slice`).
//! The channel itself is not encrypted: see `docs/replication.md`.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::auth::secrets::Secret;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy)]
pub enum Role {
    Primary,
    Secondary,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Primary => b"rewind-repl/primary",
            Role::Secondary => b"rewind-repl/secondary",
        }
    }
}

/// A fresh random nonce, hex encoded.
pub fn nonce() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn mac(secret: &Secret, role: Role, volume: &str, nonce_p: &str, nonce_s: &str) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret.expose()).expect("HMAC takes any key length");
    for part in [
        role.label(),
        volume.as_bytes(),
        nonce_p.as_bytes(),
        nonce_s.as_bytes(),
    ] {
        m.update(&(part.len() as u32).to_be_bytes());
        m.update(part);
    }
    m
}

/// The proof `role` sends, hex encoded.
pub fn proof(secret: &Secret, role: Role, volume: &str, nonce_p: &str, nonce_s: &str) -> String {
    hex::encode(
        mac(secret, role, volume, nonce_p, nonce_s)
            .finalize()
            .into_bytes(),
    )
}

/// Does `proof` (hex) show that `role` knows the secret?
pub fn check(
    secret: &Secret,
    role: Role,
    volume: &str,
    nonce_p: &str,
    nonce_s: &str,
    proof: &str,
) -> bool {
    let Ok(bytes) = hex::decode(proof) else {
        return false;
    };
    mac(secret, role, volume, nonce_p, nonce_s)
        .verify_slice(&bytes)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_check_only_with_the_same_secret_role_and_nonces() {
        let s = Secret::new("twelve+bytes-secret");
        let (np, ns) = (nonce(), nonce());
        let p = proof(&s, Role::Primary, "vol0", &np, &ns);
        assert!(check(&s, Role::Primary, "vol0", &np, &ns, &p));
        assert!(!check(&s, Role::Secondary, "vol0", &np, &ns, &p));
        assert!(!check(&s, Role::Primary, "vol1", &np, &ns, &p));
        assert!(!check(&s, Role::Primary, "vol0", &ns, &np, &p));
        let other = Secret::new("another-secret-entirely");
        assert!(!check(&other, Role::Primary, "vol0", &np, &ns, &p));
        assert!(!check(&s, Role::Primary, "vol0", &np, &ns, "zz"));
    }
}
