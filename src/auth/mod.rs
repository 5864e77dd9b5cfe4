//! Authentication and access control for iSCSI logins: pure building blocks, no I/O on the
//! connection. The login stage machine (`target::login`) calls them.
//!
//! - [`chap`]: CHAP (RFC 7143 section 12.1.3, RFC 1994), one-way and mutual, with MD5 (5),
//!   SHA1 (6), SHA-256 (7) and SHA3-256 (8); [`chap::ChapServer`] is the target side.
//! - [`acl`]: which initiators may log in to which target, and which targets SendTargets
//!   shows them.
//! - [`secrets`]: the [`secrets::Secret`] type (never printed) and loading secrets from
//!   files, with a warning for files others can read.
//!
//! # Contract with the login layer
//!
//! **Before authentication, on the first Login Request** (`InitiatorName`, `TargetName` and
//! `SessionType` known):
//!
//! - Normal session: if the target does not exist, 0x0203 Not found (as today). If
//!   `AccessPolicy::allows(target, initiator)` is false, end the login with
//!   `LoginStatus::AUTHORIZATION_FAILURE` (0x0202).
//! - Discovery session: no ACL check at login; SendTargets lists only
//!   `AccessPolicy::visible_targets(initiator, all_targets)`, and `SendTargets=<name>` for a
//!   target that is not visible answers as if the target did not exist (nothing).
//!
//! **Security stage**, when the target (or, for discovery sessions, `[discovery_auth]`)
//! has CHAP credentials, i.e. a [`chap::ChapConfig`]:
//!
//! 1. `AuthMethod`: answer `AuthMethod=CHAP` if the initiator's list contains `CHAP`; if it
//!    does not, end the login with 0x0201 Authentication failure (never fall back to `None`).
//!    Create one [`chap::ChapServer::new(cfg)`](chap::ChapServer::new) per login.
//! 2. For every complete Login Request in the security stage (after `C`-bit continuations
//!    are joined), pass all its key/value pairs to `chap.step(&pairs)`. Keys other than
//!    `CHAP_*` are ignored by it, so the same pairs also go through the usual negotiation;
//!    the negotiation must leave `CHAP_*` keys to this module (not answer them
//!    NotUnderstood).
//!    - `Ok(ChapStep::Continue(keys))`: append `keys` to the response and stay in the
//!      security stage: T bit clear, even if the initiator set T.
//!    - `Ok(ChapStep::Done(keys))`: the initiator is authenticated. Append `keys` (the
//!      mutual-CHAP `CHAP_N`/`CHAP_R`, or none); the stage may now transit as the initiator
//!      asked.
//!    - `Err(e)`: end the login with `e.login_status()` (0x0201 for every failed or
//!      malformed authentication, 0x0207 for a missing `CHAP_N`/`CHAP_R`/`CHAP_I`/`CHAP_C`,
//!      0x0200 for keys out of order or repeated) and the keys `e.reply_keys()`
//!      (`CHAP_A=Reject` when no algorithm matched). Log `e` (its text never contains a
//!      secret) with the initiator name and address.
//! 3. A request that tries to leave the security stage (T=1, NSG past security) before
//!    `chap.is_done()` ends the login with 0x0201.
//!
//! When a target has no CHAP credentials, `AuthMethod=None` stays the answer, as today.
//! A target with credentials must refuse an initiator that offers only `None`.
//!
//! **Configuration** (`crate::config`): per target `[target.auth]` and
//! `allowed_initiators`, globally `[discovery_auth]`. At startup (and on reload) the daemon
//! calls `ChapAuthConfig::load` to read secret files (failing if one is missing) and logs
//! the warnings it returns; `Config::access_policy()` builds the [`acl::AccessPolicy`].

pub mod acl;
pub mod chap;
pub mod secrets;

pub use acl::{AccessPolicy, InitiatorAcl};
pub use chap::{AuthError, ChapAlgorithm, ChapConfig, ChapServer, ChapStep};
pub use secrets::{Secret, SecretError, SecretWarning};

use std::collections::HashMap;

/// Everything the login layer needs, loaded once from the config (secret files read):
/// built by `Config::load_auth`.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// CHAP credentials by lower-cased target name; a target not here needs no CHAP.
    pub targets: HashMap<String, ChapConfig>,
    /// CHAP credentials for discovery sessions, if they need CHAP.
    pub discovery: Option<ChapConfig>,
    /// Initiator lists.
    pub policy: AccessPolicy,
    /// Things to log at startup (for example secrets files others can read).
    pub warnings: Vec<SecretWarning>,
}

impl AuthSettings {
    /// The CHAP credentials a normal session to `target` must prove, if any.
    pub fn chap_for_target(&self, target: &str) -> Option<&ChapConfig> {
        self.targets.get(&target.to_lowercase())
    }
}
