//! CHAP for iSCSI (RFC 7143 section 12.1.3 on top of RFC 1994), target side, as a pure state
//! machine: key/value pairs in, key/value pairs out, no I/O.
//!
//! The exchange inside the login security stage:
//!
//! ```text
//! I-> CHAP_A=<A1,A2,...>                      T-> CHAP_A=<A> CHAP_I=<I> CHAP_C=<C>
//! I-> CHAP_N=<N> CHAP_R=<R>                   T-> (nothing: one-way CHAP)
//!   or, when the initiator authenticates the target too (mutual CHAP):
//! I-> CHAP_N=<N> CHAP_R=<R> CHAP_I=<I'> CHAP_C=<C'>
//!                                             T-> CHAP_N=<target user> CHAP_R=<R'>
//! ```
//!
//! with `R = H(I || secret || C)` (one byte of identifier, the secret, the challenge) and
//! `H` the algorithm picked from `CHAP_A`: 5 = MD5, 6 = SHA1, 7 = SHA-256, 8 = SHA3-256 (the
//! PPP CHAP algorithm numbers IANA assigns). The target picks the strongest one offered.
//! Binary values (`CHAP_C`, `CHAP_R`) are read as hex (`0x...`) or base64 (`0b...`) and are
//! sent as hex; their binary length must not exceed 1024 bytes.
//!
//! Nothing here panics on initiator input: every malformed value is an [`AuthError`].

use md5::Md5;
use rand::rngs::OsRng;
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use sha3::Sha3_256;
use subtle::ConstantTimeEq;
use thiserror::Error;

use rewind_protocol::opcode::LoginStatus;

use super::secrets::Secret;

/// Binary CHAP values (`CHAP_C`, `CHAP_R`) may not exceed this many bytes (RFC 7143).
pub const MAX_BINARY_LEN: usize = 1024;
/// The shortest challenge rewind sends.
pub const MIN_CHALLENGE_LEN: usize = 16;

pub const KEY_A: &str = "CHAP_A";
pub const KEY_I: &str = "CHAP_I";
pub const KEY_C: &str = "CHAP_C";
pub const KEY_N: &str = "CHAP_N";
pub const KEY_R: &str = "CHAP_R";
/// The value answered to a `CHAP_A` list with no supported algorithm.
pub const REJECT: &str = "Reject";

/// A CHAP hash algorithm, by its `CHAP_A` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChapAlgorithm {
    Md5,
    Sha1,
    Sha256,
    Sha3_256,
}

impl ChapAlgorithm {
    /// Every supported algorithm, the strongest first: the target's order of preference.
    pub const ALL: [ChapAlgorithm; 4] = [
        ChapAlgorithm::Sha3_256,
        ChapAlgorithm::Sha256,
        ChapAlgorithm::Sha1,
        ChapAlgorithm::Md5,
    ];

    /// The `CHAP_A` value.
    pub fn code(self) -> u8 {
        match self {
            ChapAlgorithm::Md5 => 5,
            ChapAlgorithm::Sha1 => 6,
            ChapAlgorithm::Sha256 => 7,
            ChapAlgorithm::Sha3_256 => 8,
        }
    }

    pub fn from_code(code: u64) -> Option<ChapAlgorithm> {
        match code {
            5 => Some(ChapAlgorithm::Md5),
            6 => Some(ChapAlgorithm::Sha1),
            7 => Some(ChapAlgorithm::Sha256),
            8 => Some(ChapAlgorithm::Sha3_256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChapAlgorithm::Md5 => "MD5",
            ChapAlgorithm::Sha1 => "SHA1",
            ChapAlgorithm::Sha256 => "SHA-256",
            ChapAlgorithm::Sha3_256 => "SHA3-256",
        }
    }

    /// Length in bytes of a response (the digest).
    pub fn digest_len(self) -> usize {
        match self {
            ChapAlgorithm::Md5 => 16,
            ChapAlgorithm::Sha1 => 20,
            ChapAlgorithm::Sha256 | ChapAlgorithm::Sha3_256 => 32,
        }
    }

    /// Length of the challenges rewind sends: at least 16 bytes, else the digest length.
    pub fn challenge_len(self) -> usize {
        self.digest_len().max(MIN_CHALLENGE_LEN)
    }
}

/// `H(id || secret || challenge)`: the CHAP response (RFC 1994 section 4.1).
pub fn chap_response(alg: ChapAlgorithm, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
    fn h<D: Digest>(id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        let mut d = D::new();
        d.update([id]);
        d.update(secret);
        d.update(challenge);
        d.finalize().to_vec()
    }
    match alg {
        ChapAlgorithm::Md5 => h::<Md5>(id, secret, challenge),
        ChapAlgorithm::Sha1 => h::<Sha1>(id, secret, challenge),
        ChapAlgorithm::Sha256 => h::<Sha256>(id, secret, challenge),
        ChapAlgorithm::Sha3_256 => h::<Sha3_256>(id, secret, challenge),
    }
}

/// Credentials of one target (or of discovery sessions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapConfig {
    /// The name the initiator must send as `CHAP_N`.
    pub username: String,
    /// The secret the initiator proves it knows.
    pub secret: Secret,
    /// For mutual CHAP: the name the target answers as `CHAP_N` and the secret it proves it
    /// knows. Used only when the initiator asks for it by sending `CHAP_I` and `CHAP_C`.
    pub mutual: Option<(String, Secret)>,
}

/// What the login layer does after a successful [`ChapServer::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChapStep {
    /// Send these keys (possibly none) in a Login Response that stays in the security stage
    /// (T bit clear), and feed the next request to `step` again.
    Continue(Vec<(String, String)>),
    /// The initiator is authenticated. Send these keys (the mutual-CHAP `CHAP_N`/`CHAP_R`, or
    /// none); the security stage may now transit to the stage the initiator asked for.
    Done(Vec<(String, String)>),
}

/// Why CHAP failed. [`AuthError::login_status`] is the status of the Login Response that ends
/// the login; [`AuthError::reply_keys`] are keys to put in it, if any.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("no supported CHAP algorithm among CHAP_A={offered:?}")]
    NoCommonAlgorithm { offered: String },
    #[error("unknown CHAP name {name:?}")]
    UnknownName { name: String },
    #[error("wrong CHAP response for CHAP name {name:?}")]
    BadResponse { name: String },
    #[error("the initiator reflected the target's CHAP challenge back at it")]
    Reflection,
    #[error("the initiator asked the target to authenticate (mutual CHAP), but no mutual credentials are configured")]
    MutualNotConfigured,
    #[error("the target's mutual CHAP response is wrong")]
    BadTargetResponse,
    #[error("malformed {key}: {reason}")]
    Malformed { key: &'static str, reason: String },
    #[error("missing {0}")]
    MissingKey(&'static str),
    #[error("unexpected {0} at this step of CHAP")]
    UnexpectedKey(&'static str),
    #[error("{0} given twice")]
    DuplicateKey(&'static str),
    #[error("CHAP is already over")]
    Finished,
}

impl AuthError {
    /// The Login Response status that ends the login.
    pub fn login_status(&self) -> LoginStatus {
        match self {
            AuthError::MissingKey(_) => LoginStatus::MISSING_PARAMETER,
            AuthError::UnexpectedKey(_) | AuthError::DuplicateKey(_) | AuthError::Finished => {
                LoginStatus::INITIATOR_ERROR
            }
            _ => LoginStatus::AUTHENTICATION_FAILURE,
        }
    }

    /// Keys to send in the failing Login Response: `CHAP_A=Reject` when no algorithm matched.
    pub fn reply_keys(&self) -> Vec<(String, String)> {
        match self {
            AuthError::NoCommonAlgorithm { .. } => vec![(KEY_A.into(), REJECT.into())],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug)]
enum ServerState {
    AwaitAlgorithm,
    AwaitResponse {
        alg: ChapAlgorithm,
        id: u8,
        challenge: Vec<u8>,
    },
    Done,
    Failed,
}

/// Target side of one CHAP exchange (one login). See the module docs for the exchange.
#[derive(Debug)]
pub struct ChapServer {
    cfg: ChapConfig,
    algorithms: Vec<ChapAlgorithm>,
    state: ServerState,
    negotiated: Option<ChapAlgorithm>,
}

impl ChapServer {
    /// A server offering every algorithm in [`ChapAlgorithm::ALL`].
    pub fn new(cfg: ChapConfig) -> ChapServer {
        ChapServer::with_algorithms(cfg, &ChapAlgorithm::ALL)
    }

    /// A server accepting only `algorithms` (for example without MD5 on a FIPS host). The
    /// strongest offered one is still picked, whatever the order given here.
    pub fn with_algorithms(cfg: ChapConfig, algorithms: &[ChapAlgorithm]) -> ChapServer {
        let algorithms = ChapAlgorithm::ALL
            .into_iter()
            .filter(|a| algorithms.contains(a))
            .collect();
        ChapServer {
            cfg,
            algorithms,
            state: ServerState::AwaitAlgorithm,
            negotiated: None,
        }
    }

    /// The algorithm agreed on, once `CHAP_A` has been answered.
    pub fn algorithm(&self) -> Option<ChapAlgorithm> {
        self.negotiated
    }

    /// True once the initiator has been authenticated.
    pub fn is_done(&self) -> bool {
        matches!(self.state, ServerState::Done)
    }

    /// Feed the key/value pairs of one (complete) Login Request. Keys other than `CHAP_*`
    /// are ignored. After an error, or after `Done`, every further call is an error.
    pub fn step(&mut self, pairs: &[(String, String)]) -> Result<ChapStep, AuthError> {
        let state = std::mem::replace(&mut self.state, ServerState::Failed);
        let result = match state {
            ServerState::AwaitAlgorithm => self.on_algorithm(pairs),
            ServerState::AwaitResponse { alg, id, challenge } => {
                self.on_response(pairs, alg, id, &challenge)
            }
            ServerState::Done | ServerState::Failed => Err(AuthError::Finished),
        };
        if let Ok(ChapStep::Done(_)) = &result {
            self.state = ServerState::Done;
        }
        result
    }

    fn on_algorithm(&mut self, pairs: &[(String, String)]) -> Result<ChapStep, AuthError> {
        for key in [KEY_N, KEY_R, KEY_I, KEY_C] {
            if get(pairs, key)?.is_some() {
                return Err(AuthError::UnexpectedKey(key));
            }
        }
        let Some(offered) = get(pairs, KEY_A)? else {
            // `AuthMethod=CHAP` may come alone; `CHAP_A` then follows in the next request.
            self.state = ServerState::AwaitAlgorithm;
            return Ok(ChapStep::Continue(Vec::new()));
        };
        let offered_codes: Vec<ChapAlgorithm> = offered
            .split(',')
            .filter_map(|v| parse_number(v.trim()))
            .filter_map(ChapAlgorithm::from_code)
            .collect();
        let Some(alg) = self
            .algorithms
            .iter()
            .copied()
            .find(|a| offered_codes.contains(a))
        else {
            return Err(AuthError::NoCommonAlgorithm {
                offered: truncate(offered, 64),
            });
        };
        let id = (OsRng.next_u32() & 0xff) as u8;
        let mut challenge = vec![0u8; alg.challenge_len()];
        OsRng.fill_bytes(&mut challenge);
        let keys = vec![
            (KEY_A.to_string(), alg.code().to_string()),
            (KEY_I.to_string(), id.to_string()),
            (KEY_C.to_string(), encode_hex(&challenge)),
        ];
        self.negotiated = Some(alg);
        self.state = ServerState::AwaitResponse { alg, id, challenge };
        Ok(ChapStep::Continue(keys))
    }

    fn on_response(
        &mut self,
        pairs: &[(String, String)],
        alg: ChapAlgorithm,
        id: u8,
        challenge: &[u8],
    ) -> Result<ChapStep, AuthError> {
        if get(pairs, KEY_A)?.is_some() {
            return Err(AuthError::UnexpectedKey(KEY_A));
        }
        let name = get(pairs, KEY_N)?.ok_or(AuthError::MissingKey(KEY_N))?;
        let response = get(pairs, KEY_R)?.ok_or(AuthError::MissingKey(KEY_R))?;
        let response = decode_binary(KEY_R, response)?;
        let mutual = match (get(pairs, KEY_I)?, get(pairs, KEY_C)?) {
            (None, None) => None,
            (Some(_), None) => return Err(AuthError::MissingKey(KEY_C)),
            (None, Some(_)) => return Err(AuthError::MissingKey(KEY_I)),
            (Some(i), Some(c)) => {
                let their_id = parse_identifier(i)?;
                let their_challenge = decode_binary(KEY_C, c)?;
                Some((their_id, their_challenge))
            }
        };

        // Check name and response together so the timing does not tell which was wrong.
        let expected = chap_response(alg, id, self.cfg.secret.expose(), challenge);
        let name_ok = name.as_bytes().ct_eq(self.cfg.username.as_bytes());
        let response_ok = expected.ct_eq(&response);
        if !bool::from(name_ok) {
            return Err(AuthError::UnknownName {
                name: truncate(name, 64),
            });
        }
        if !bool::from(response_ok) {
            return Err(AuthError::BadResponse {
                name: truncate(name, 64),
            });
        }

        let Some((their_id, their_challenge)) = mutual else {
            return Ok(ChapStep::Done(Vec::new()));
        };
        let Some((target_user, target_secret)) = &self.cfg.mutual else {
            return Err(AuthError::MutualNotConfigured);
        };
        if their_challenge.is_empty() {
            return Err(AuthError::Malformed {
                key: KEY_C,
                reason: "empty challenge".into(),
            });
        }
        if bool::from(their_challenge.ct_eq(challenge)) {
            return Err(AuthError::Reflection);
        }
        let answer = chap_response(alg, their_id, target_secret.expose(), &their_challenge);
        Ok(ChapStep::Done(vec![
            (KEY_N.to_string(), target_user.clone()),
            (KEY_R.to_string(), encode_hex(&answer)),
        ]))
    }
}

/// Initiator side of CHAP, for tests and tools: answers a target's challenge and checks the
/// target's mutual response.
#[derive(Debug, Clone)]
pub struct ChapInitiator {
    username: String,
    secret: Secret,
    /// The target's expected name and secret, when the initiator authenticates the target.
    mutual: Option<(String, Secret)>,
    /// Our own challenge to the target, kept to check its answer.
    sent: Option<(ChapAlgorithm, u8, Vec<u8>)>,
}

impl ChapInitiator {
    pub fn new(username: impl Into<String>, secret: Secret) -> ChapInitiator {
        ChapInitiator {
            username: username.into(),
            secret,
            mutual: None,
            sent: None,
        }
    }

    /// Ask the target to prove it knows `target_secret` under the name `target_user`.
    pub fn with_mutual(mut self, target_user: impl Into<String>, target_secret: Secret) -> Self {
        self.mutual = Some((target_user.into(), target_secret));
        self
    }

    /// The `CHAP_A` proposal for `algorithms`, in the order given.
    pub fn offer(algorithms: &[ChapAlgorithm]) -> Vec<(String, String)> {
        let list: Vec<String> = algorithms.iter().map(|a| a.code().to_string()).collect();
        vec![(KEY_A.to_string(), list.join(","))]
    }

    /// Answer the target's `CHAP_A`/`CHAP_I`/`CHAP_C` with `CHAP_N`/`CHAP_R` (and, for
    /// mutual CHAP, our own `CHAP_I`/`CHAP_C`).
    pub fn respond(
        &mut self,
        target_keys: &[(String, String)],
    ) -> Result<Vec<(String, String)>, AuthError> {
        let a = get(target_keys, KEY_A)?.ok_or(AuthError::MissingKey(KEY_A))?;
        if a == REJECT {
            return Err(AuthError::NoCommonAlgorithm { offered: a.into() });
        }
        let alg = parse_number(a)
            .and_then(ChapAlgorithm::from_code)
            .ok_or_else(|| AuthError::Malformed {
                key: KEY_A,
                reason: "not a supported algorithm".into(),
            })?;
        let id = parse_identifier(get(target_keys, KEY_I)?.ok_or(AuthError::MissingKey(KEY_I))?)?;
        let challenge = decode_binary(
            KEY_C,
            get(target_keys, KEY_C)?.ok_or(AuthError::MissingKey(KEY_C))?,
        )?;
        let r = chap_response(alg, id, self.secret.expose(), &challenge);
        let mut keys = vec![
            (KEY_N.to_string(), self.username.clone()),
            (KEY_R.to_string(), encode_hex(&r)),
        ];
        if self.mutual.is_some() {
            let my_id = (OsRng.next_u32() & 0xff) as u8;
            let mut mine = vec![0u8; alg.challenge_len()];
            OsRng.fill_bytes(&mut mine);
            keys.push((KEY_I.to_string(), my_id.to_string()));
            keys.push((KEY_C.to_string(), encode_hex(&mine)));
            self.sent = Some((alg, my_id, mine));
        }
        Ok(keys)
    }

    /// Check the target's mutual-CHAP answer (`CHAP_N`/`CHAP_R`).
    pub fn verify_target(&self, target_keys: &[(String, String)]) -> Result<(), AuthError> {
        let (Some((user, secret)), Some((alg, id, challenge))) = (&self.mutual, &self.sent) else {
            return Err(AuthError::MutualNotConfigured);
        };
        let name = get(target_keys, KEY_N)?.ok_or(AuthError::MissingKey(KEY_N))?;
        let r = decode_binary(
            KEY_R,
            get(target_keys, KEY_R)?.ok_or(AuthError::MissingKey(KEY_R))?,
        )?;
        let expected = chap_response(*alg, *id, secret.expose(), challenge);
        if name != user || !bool::from(expected.ct_eq(&r)) {
            return Err(AuthError::BadTargetResponse);
        }
        Ok(())
    }
}

/// The value of `key`, if present once; a key given twice is an error.
fn get<'a>(pairs: &'a [(String, String)], key: &'static str) -> Result<Option<&'a str>, AuthError> {
    let mut found = None;
    for (k, v) in pairs {
        if k == key {
            if found.is_some() {
                return Err(AuthError::DuplicateKey(key));
            }
            found = Some(v.as_str());
        }
    }
    Ok(found)
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A numerical value: decimal, or hex with `0x`.
fn parse_number(v: &str) -> Option<u64> {
    if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        if hex.is_empty() || hex.len() > 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    } else if !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse().ok()
    } else {
        None
    }
}

/// `CHAP_I`: a number 0..=255.
fn parse_identifier(v: &str) -> Result<u8, AuthError> {
    parse_number(v)
        .and_then(|n| u8::try_from(n).ok())
        .ok_or_else(|| AuthError::Malformed {
            key: KEY_I,
            reason: "not a number between 0 and 255".into(),
        })
}

/// Hex encoding with the `0x` prefix, as rewind sends binary values.
pub fn encode_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Decode a binary value: `0x`/`0X` hex (an even number of digits) or `0b`/`0B` base64
/// (RFC 4648, padding optional), at most [`MAX_BINARY_LEN`] bytes.
pub fn decode_binary(key: &'static str, v: &str) -> Result<Vec<u8>, AuthError> {
    let malformed = |reason: &str| AuthError::Malformed {
        key,
        reason: reason.into(),
    };
    // Hex is the longest encoding: refuse anything longer before decoding.
    if v.len() > 2 + 2 * MAX_BINARY_LEN {
        return Err(malformed("longer than 1024 bytes"));
    }
    let bytes = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        if h.is_empty() {
            return Err(malformed("no hex digits"));
        }
        hex::decode(h).map_err(|e| match e {
            hex::FromHexError::OddLength => malformed("odd number of hex digits"),
            _ => malformed("not hex"),
        })?
    } else if let Some(b) = v.strip_prefix("0b").or_else(|| v.strip_prefix("0B")) {
        decode_base64(b).ok_or_else(|| malformed("not base64"))?
    } else {
        return Err(malformed(
            "binary values start with 0x (hex) or 0b (base64)",
        ));
    };
    if bytes.len() > MAX_BINARY_LEN {
        return Err(malformed("longer than 1024 bytes"));
    }
    Ok(bytes)
}

/// Standard-alphabet base64 (RFC 4648 section 4). Padding is optional but, when present,
/// must complete the last quantum; bits left over at the end must be zero.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    let pad = s.len() - body.len();
    if body.is_empty() || pad > 2 || (pad > 0 && s.len() % 4 != 0) || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in body.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if acc != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "alice-secret-123";
    const MUTUAL_SECRET: &str = "target-secret-456";

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn value<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
        &pairs.iter().find(|(k, _)| k == key).expect(key).1
    }

    fn config(mutual: bool) -> ChapConfig {
        ChapConfig {
            username: "alice".into(),
            secret: Secret::from(SECRET),
            mutual: mutual.then(|| ("rewind-target".to_string(), Secret::from(MUTUAL_SECRET))),
        }
    }

    /// Known answers computed from the RFC 1994 definition H(id || secret || challenge) with
    /// an independent implementation, for id 0x2a, secret "alice-secret-123" and the
    /// challenge 00 01 .. 0f.
    #[test]
    fn known_vectors() {
        let challenge: Vec<u8> = (0u8..16).collect();
        let cases = [
            (ChapAlgorithm::Md5, "77f9732ddd1418b6d332f1d5f33af1bc"),
            (
                ChapAlgorithm::Sha1,
                "27ee4fcbb1a11a24487c704e73b078b17cb6cc8e",
            ),
            (
                ChapAlgorithm::Sha256,
                "9cd0c2e0730336edaca0abf91ebea958f5bbc088de74e64a19d6e73217975f11",
            ),
            (
                ChapAlgorithm::Sha3_256,
                "e9530d88c52a4132dbeb2528f5d448caaaa9e7af7a5626dc273aa9eb9d70cd1a",
            ),
        ];
        for (alg, want) in cases {
            let r = chap_response(alg, 0x2a, SECRET.as_bytes(), &challenge);
            assert_eq!(hex::encode(&r), want, "{}", alg.name());
            assert_eq!(r.len(), alg.digest_len());
        }
        // A second MD5 vector with another id and secret.
        let c = hex::decode("000102030405060708090a0b0c0d0e0f").unwrap();
        assert_eq!(
            hex::encode(chap_response(ChapAlgorithm::Md5, 1, b"abc", &c)),
            "7bb8ba97c7af4f2cb728063bbe66e0c1"
        );
    }

    #[test]
    fn algorithm_numbers() {
        let codes: Vec<u8> = ChapAlgorithm::ALL.iter().map(|a| a.code()).collect();
        assert_eq!(codes, [8, 7, 6, 5]);
        for a in ChapAlgorithm::ALL {
            assert_eq!(ChapAlgorithm::from_code(a.code().into()), Some(a));
        }
        assert_eq!(ChapAlgorithm::from_code(4), None);
        assert_eq!(ChapAlgorithm::Md5.challenge_len(), 16);
        assert_eq!(ChapAlgorithm::Sha1.challenge_len(), 20);
        assert_eq!(ChapAlgorithm::Sha3_256.challenge_len(), 32);
    }

    /// Run a full exchange against `server` with `client` offering `offer`.
    fn exchange(
        server: &mut ChapServer,
        client: &mut ChapInitiator,
        offer: &[ChapAlgorithm],
    ) -> Result<ChapStep, AuthError> {
        let step = server.step(&ChapInitiator::offer(offer))?;
        let ChapStep::Continue(challenge) = step else {
            panic!("expected a challenge, got {step:?}")
        };
        let answer = client.respond(&challenge)?;
        server.step(&answer)
    }

    #[test]
    fn one_way_each_algorithm() {
        for alg in ChapAlgorithm::ALL {
            let mut server = ChapServer::new(config(false));
            let mut client = ChapInitiator::new("alice", Secret::from(SECRET));
            let step = server.step(&ChapInitiator::offer(&[alg])).unwrap();
            let ChapStep::Continue(keys) = step else {
                panic!()
            };
            assert_eq!(value(&keys, KEY_A), alg.code().to_string());
            let c = decode_binary(KEY_C, value(&keys, KEY_C)).unwrap();
            assert_eq!(c.len(), alg.challenge_len());
            assert_eq!(server.algorithm(), Some(alg));
            let answer = client.respond(&keys).unwrap();
            assert_eq!(server.step(&answer).unwrap(), ChapStep::Done(Vec::new()));
            assert!(server.is_done());
            assert_eq!(server.step(&answer), Err(AuthError::Finished));
        }
    }

    #[test]
    fn picks_the_strongest_offered() {
        for (offer, want) in [
            ("5,6,7,8", 8),
            ("5,7", 7),
            ("5, 6", 6),
            ("5", 5),
            ("99,5,banana", 5),
            ("0x5", 5),
        ] {
            let mut server = ChapServer::new(config(false));
            let ChapStep::Continue(keys) = server.step(&kv(&[(KEY_A, offer)])).unwrap() else {
                panic!()
            };
            assert_eq!(value(&keys, KEY_A), want.to_string(), "{offer}");
        }
        let mut server = ChapServer::with_algorithms(config(false), &[ChapAlgorithm::Sha1]);
        let ChapStep::Continue(keys) = server.step(&kv(&[(KEY_A, "8,6,5")])).unwrap() else {
            panic!()
        };
        assert_eq!(value(&keys, KEY_A), "6");
    }

    #[test]
    fn no_common_algorithm_rejects() {
        let mut server = ChapServer::new(config(false));
        let e = server.step(&kv(&[(KEY_A, "4,99,x")])).unwrap_err();
        assert!(matches!(e, AuthError::NoCommonAlgorithm { .. }));
        assert_eq!(e.login_status(), LoginStatus::AUTHENTICATION_FAILURE);
        assert_eq!(e.reply_keys(), kv(&[(KEY_A, REJECT)]));
        assert_eq!(server.step(&kv(&[(KEY_A, "5")])), Err(AuthError::Finished));

        let mut server = ChapServer::with_algorithms(config(false), &[ChapAlgorithm::Sha256]);
        assert!(server.step(&kv(&[(KEY_A, "5")])).is_err());
    }

    #[test]
    fn waits_for_chap_a() {
        let mut server = ChapServer::new(config(false));
        let step = server
            .step(&kv(&[
                ("AuthMethod", "CHAP,None"),
                ("InitiatorName", "iqn.x"),
            ]))
            .unwrap();
        assert_eq!(step, ChapStep::Continue(Vec::new()));
        let mut client = ChapInitiator::new("alice", Secret::from(SECRET));
        let r = exchange(&mut server, &mut client, &[ChapAlgorithm::Md5]).unwrap();
        assert_eq!(r, ChapStep::Done(Vec::new()));
    }

    #[test]
    fn challenges_differ() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            let mut server = ChapServer::new(config(false));
            let ChapStep::Continue(keys) = server.step(&kv(&[(KEY_A, "5")])).unwrap() else {
                panic!()
            };
            assert!(seen.insert(value(&keys, KEY_C).to_string()));
        }
    }

    #[test]
    fn wrong_secret_or_name_fails() {
        let mut server = ChapServer::new(config(false));
        let mut client = ChapInitiator::new("alice", Secret::from("wrong-secret-000"));
        let e = exchange(&mut server, &mut client, &[ChapAlgorithm::Sha256]).unwrap_err();
        assert!(matches!(e, AuthError::BadResponse { .. }), "{e:?}");
        assert_eq!(e.login_status(), LoginStatus::AUTHENTICATION_FAILURE);
        assert!(!e.to_string().contains(SECRET));

        let mut server = ChapServer::new(config(false));
        let mut client = ChapInitiator::new("mallory", Secret::from(SECRET));
        let e = exchange(&mut server, &mut client, &[ChapAlgorithm::Md5]).unwrap_err();
        assert!(matches!(e, AuthError::UnknownName { .. }), "{e:?}");
        assert_eq!(e.login_status(), LoginStatus::AUTHENTICATION_FAILURE);

        // Name compare is exact.
        let mut server = ChapServer::new(config(false));
        let mut client = ChapInitiator::new("Alice", Secret::from(SECRET));
        assert!(exchange(&mut server, &mut client, &[ChapAlgorithm::Md5]).is_err());
    }

    /// Drive the server by hand: answer the challenge with `make(alg, id, challenge)`.
    fn answer_with(
        mutual: bool,
        make: impl FnOnce(ChapAlgorithm, u8, Vec<u8>) -> Vec<(String, String)>,
    ) -> Result<ChapStep, AuthError> {
        let mut server = ChapServer::new(config(mutual));
        let ChapStep::Continue(keys) = server.step(&kv(&[(KEY_A, "5")])).unwrap() else {
            panic!()
        };
        let id: u8 = value(&keys, KEY_I).parse().unwrap();
        let challenge = decode_binary(KEY_C, value(&keys, KEY_C)).unwrap();
        server.step(&make(ChapAlgorithm::Md5, id, challenge))
    }

    #[test]
    fn accepts_hex_and_base64_responses() {
        for encode in [
            |r: &[u8]| format!("0x{}", hex::encode(r)),
            |r: &[u8]| format!("0X{}", hex::encode_upper(r)),
            |r: &[u8]| format!("0b{}", base64_for_test(r, true)),
            |r: &[u8]| format!("0B{}", base64_for_test(r, false)),
        ] {
            let step = answer_with(false, |alg, id, c| {
                let r = chap_response(alg, id, SECRET.as_bytes(), &c);
                kv(&[(KEY_N, "alice"), (KEY_R, &encode(&r))])
            });
            assert_eq!(step, Ok(ChapStep::Done(Vec::new())));
        }
    }

    /// Simple base64 encoder for the tests (the module only decodes).
    fn base64_for_test(data: &[u8], pad: bool) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk.len();
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=n {
                out.push(A[((v >> (18 - 6 * i)) & 63) as usize] as char);
            }
            if pad {
                for _ in n..3 {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn base64_decoding() {
        // The MD5 known vector above, base64-encoded by an independent implementation.
        assert_eq!(
            decode_base64("d/lzLd0UGLbTMvHV8zrxvA==").map(hex::encode),
            Some("77f9732ddd1418b6d332f1d5f33af1bc".into())
        );
        assert_eq!(
            decode_base64("d/lzLd0UGLbTMvHV8zrxvA").map(|v| v.len()),
            Some(16)
        );
        assert_eq!(decode_base64("TWFu"), Some(b"Man".to_vec()));
        assert_eq!(decode_base64("TWE="), Some(b"Ma".to_vec()));
        assert_eq!(decode_base64("TQ=="), Some(b"M".to_vec()));
        for bad in [
            "", "=", "T", "TQ=", "TQ===", "TR==", "TW-u", "T=Fu", "TWFu\n",
        ] {
            assert_eq!(decode_base64(bad), None, "{bad:?}");
        }
        for data in [&b""[..], b"a", b"ab", b"abc", b"abcd", &[0xff; 33]] {
            if !data.is_empty() {
                assert_eq!(
                    decode_base64(&base64_for_test(data, true)).as_deref(),
                    Some(data)
                );
            }
        }
    }

    #[test]
    fn malformed_values_are_errors() {
        let bad_responses = [
            "0x123",    // odd hex
            "0x",       // empty
            "0xzz",     // not hex
            "0b!!!!",   // not base64
            "12345678", // no prefix
            "",         // empty
            "0b",       // empty base64
        ];
        for r in bad_responses {
            let e = answer_with(false, |_, _, _| kv(&[(KEY_N, "alice"), (KEY_R, r)])).unwrap_err();
            assert!(
                matches!(e, AuthError::Malformed { key: KEY_R, .. }),
                "{r:?}: {e:?}"
            );
            assert_eq!(e.login_status(), LoginStatus::AUTHENTICATION_FAILURE);
        }
        // Too long, in both encodings.
        let long_hex = format!("0x{}", "ab".repeat(MAX_BINARY_LEN + 1));
        let long_b64 = format!("0b{}", base64_for_test(&[7; MAX_BINARY_LEN + 3], true));
        for r in [long_hex, long_b64, format!("0x{}", "a".repeat(100_000))] {
            let e = answer_with(false, |_, _, _| kv(&[(KEY_N, "alice"), (KEY_R, &r)])).unwrap_err();
            assert!(matches!(e, AuthError::Malformed { .. }), "{e:?}");
        }
        // A well-formed response of the wrong length simply fails.
        let e = answer_with(false, |_, _, _| kv(&[(KEY_N, "alice"), (KEY_R, "0x00")])).unwrap_err();
        assert!(matches!(e, AuthError::BadResponse { .. }));
    }

    #[test]
    fn missing_unexpected_and_duplicate_keys() {
        let e = answer_with(false, |_, _, _| kv(&[(KEY_N, "alice")])).unwrap_err();
        assert_eq!(e, AuthError::MissingKey(KEY_R));
        assert_eq!(e.login_status(), LoginStatus::MISSING_PARAMETER);
        let e = answer_with(false, |_, _, _| kv(&[(KEY_R, "0x00")])).unwrap_err();
        assert_eq!(e, AuthError::MissingKey(KEY_N));
        let e = answer_with(false, |_, _, _| kv(&[])).unwrap_err();
        assert_eq!(e, AuthError::MissingKey(KEY_N));
        let e = answer_with(false, |_, _, _| {
            kv(&[(KEY_N, "alice"), (KEY_N, "alice"), (KEY_R, "0x00")])
        })
        .unwrap_err();
        assert_eq!(e, AuthError::DuplicateKey(KEY_N));
        assert_eq!(e.login_status(), LoginStatus::INITIATOR_ERROR);
        let e = answer_with(false, |_, _, _| kv(&[(KEY_A, "5")])).unwrap_err();
        assert_eq!(e, AuthError::UnexpectedKey(KEY_A));

        let mut server = ChapServer::new(config(false));
        let e = server
            .step(&kv(&[(KEY_N, "alice"), (KEY_R, "0x00")]))
            .unwrap_err();
        assert_eq!(e, AuthError::UnexpectedKey(KEY_N));
        assert_eq!(server.step(&kv(&[(KEY_A, "5")])), Err(AuthError::Finished));

        let mut server = ChapServer::new(config(false));
        let e = server.step(&kv(&[(KEY_A, "5"), (KEY_A, "7")])).unwrap_err();
        assert_eq!(e, AuthError::DuplicateKey(KEY_A));

        // Mutual half-given.
        let e = answer_with(true, |alg, id, c| {
            let r = chap_response(alg, id, SECRET.as_bytes(), &c);
            kv(&[(KEY_N, "alice"), (KEY_R, &encode_hex(&r)), (KEY_I, "1")])
        })
        .unwrap_err();
        assert_eq!(e, AuthError::MissingKey(KEY_C));
    }

    #[test]
    fn mutual_chap() {
        for alg in ChapAlgorithm::ALL {
            let mut server = ChapServer::new(config(true));
            let mut client = ChapInitiator::new("alice", Secret::from(SECRET))
                .with_mutual("rewind-target", Secret::from(MUTUAL_SECRET));
            let ChapStep::Done(keys) = exchange(&mut server, &mut client, &[alg]).unwrap() else {
                panic!()
            };
            assert_eq!(value(&keys, KEY_N), "rewind-target");
            assert_eq!(
                decode_binary(KEY_R, value(&keys, KEY_R)).unwrap().len(),
                alg.digest_len()
            );
            client.verify_target(&keys).unwrap();

            // An initiator expecting another target secret refuses the answer.
            let mut server = ChapServer::new(config(true));
            let mut client = ChapInitiator::new("alice", Secret::from(SECRET))
                .with_mutual("rewind-target", Secret::from("some-other-secret"));
            let ChapStep::Done(keys) = exchange(&mut server, &mut client, &[alg]).unwrap() else {
                panic!()
            };
            assert_eq!(
                client.verify_target(&keys),
                Err(AuthError::BadTargetResponse)
            );
        }
    }

    #[test]
    fn mutual_known_answer() {
        let step = answer_with(true, |alg, id, c| {
            let r = chap_response(alg, id, SECRET.as_bytes(), &c);
            kv(&[
                (KEY_N, "alice"),
                (KEY_R, &encode_hex(&r)),
                (KEY_I, "0x2a"),
                (KEY_C, "0b"),
            ])
        });
        // "0b" alone is malformed.
        assert!(matches!(step, Err(AuthError::Malformed { key: KEY_C, .. })));

        // The challenge 00 01 .. 0f in base64 gets the same answer as in hex below.
        let from_base64 = answer_with(true, |alg, id, c| {
            let r = chap_response(alg, id, SECRET.as_bytes(), &c);
            kv(&[
                (KEY_N, "alice"),
                (KEY_R, &encode_hex(&r)),
                (KEY_I, "42"),
                (KEY_C, "0bAAECAwQFBgcICQoLDA0ODw=="),
            ])
        })
        .unwrap();

        let step = answer_with(true, |alg, id, c| {
            let r = chap_response(alg, id, SECRET.as_bytes(), &c);
            kv(&[
                (KEY_N, "alice"),
                (KEY_R, &encode_hex(&r)),
                (KEY_I, "0x2a"),
                (KEY_C, "0x000102030405060708090a0b0c0d0e0f"),
            ])
        })
        .unwrap();
        let want = chap_response(
            ChapAlgorithm::Md5,
            0x2a,
            MUTUAL_SECRET.as_bytes(),
            &(0u8..16).collect::<Vec<_>>(),
        );
        assert_eq!(
            step,
            ChapStep::Done(kv(&[(KEY_N, "rewind-target"), (KEY_R, &encode_hex(&want))]))
        );
        assert_eq!(from_base64, step);
    }

    #[test]
    fn mutual_rejections() {
        // Reflection: the initiator sends our own challenge back.
        let e = answer_with(true, |alg, id, c| {
            let r = chap_response(alg, id, SECRET.as_bytes(), &c);
            kv(&[
                (KEY_N, "alice"),
                (KEY_R, &encode_hex(&r)),
                (KEY_I, &id.to_string()),
                (KEY_C, &encode_hex(&c)),
            ])
        })
        .unwrap_err();
        assert_eq!(e, AuthError::Reflection);
        assert_eq!(e.login_status(), LoginStatus::AUTHENTICATION_FAILURE);

        // Mutual asked but not configured.
        let e = answer_with(false, |alg, id, c| {
            let r = chap_response(alg, id, SECRET.as_bytes(), &c);
            kv(&[
                (KEY_N, "alice"),
                (KEY_R, &encode_hex(&r)),
                (KEY_I, "7"),
                (KEY_C, "0x0011223344556677"),
            ])
        })
        .unwrap_err();
        assert_eq!(e, AuthError::MutualNotConfigured);

        // Bad identifier and oversized challenge.
        for (i, c) in [
            ("256", "0x00112233".to_string()),
            ("-1", "0x00112233".to_string()),
            ("x", "0x00112233".to_string()),
            ("1", format!("0x{}", "00".repeat(MAX_BINARY_LEN + 1))),
        ] {
            let e = answer_with(true, |alg, id, ch| {
                let r = chap_response(alg, id, SECRET.as_bytes(), &ch);
                kv(&[
                    (KEY_N, "alice"),
                    (KEY_R, &encode_hex(&r)),
                    (KEY_I, i),
                    (KEY_C, &c),
                ])
            })
            .unwrap_err();
            assert!(matches!(e, AuthError::Malformed { .. }), "{i} {e:?}");
        }

        // A wrong initiator response fails before any mutual answer is computed.
        let e = answer_with(true, |_, _, _| {
            kv(&[
                (KEY_N, "alice"),
                (KEY_R, &encode_hex(&[0; 16])),
                (KEY_I, "7"),
                (KEY_C, "0x0011223344556677"),
            ])
        })
        .unwrap_err();
        assert!(matches!(e, AuthError::BadResponse { .. }));
    }

    #[test]
    fn initiator_helper_errors() {
        let mut client = ChapInitiator::new("alice", Secret::from(SECRET));
        assert!(matches!(
            client.respond(&kv(&[(KEY_A, REJECT)])),
            Err(AuthError::NoCommonAlgorithm { .. })
        ));
        assert_eq!(
            client.respond(&kv(&[(KEY_A, "5"), (KEY_I, "1")])),
            Err(AuthError::MissingKey(KEY_C))
        );
        assert!(client
            .respond(&kv(&[(KEY_A, "3"), (KEY_I, "1"), (KEY_C, "0x00")]))
            .is_err());
        assert_eq!(
            client.verify_target(&kv(&[])),
            Err(AuthError::MutualNotConfigured)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(
            keys in proptest::collection::vec(
                (proptest::sample::select(vec!["CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R", "X"]),
                 ".{0,80}"),
                0..6),
            keys2 in proptest::collection::vec(
                (proptest::sample::select(vec!["CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"]),
                 "(0x|0b|0X)?[0-9a-zA-Z+/=]{0,70}"),
                0..6),
        ) {
            let mut server = ChapServer::new(config(true));
            let first: Vec<(String, String)> =
                keys.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            let second: Vec<(String, String)> =
                keys2.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            let _ = server.step(&first);
            let _ = server.step(&second);
            let _ = server.step(&second);
            let _ = decode_binary(KEY_C, &first.first().map(|p| p.1.clone()).unwrap_or_default());
        }
    }
}
