//! Daemon configuration: a serde struct with defaults and a `validate()` that rejects
//! contradictions with a message an operator can act on.
//!
//! ```toml
//! listen = ["0.0.0.0:3260"]
//!
//! [[volume]]
//! name = "db"
//! size = "20GiB"
//! block_size = 4096
//!
//! [[target]]
//! name = "iqn.2026-11.dev.rewind:db"
//! luns = ["db"]
//! allowed_initiators = ["iqn.1994-05.com.redhat:host-a"]   # absent: every initiator
//!
//! [target.auth]                                # CHAP for this target (docs/security.md)
//! user = "host-a"
//! secret_file = "/etc/rewind/db.secret"        # or: secret = "..." (12-255 bytes)
//! mutual_user = "rewind"                       # mutual CHAP: the target proves itself too
//! mutual_secret_file = "/etc/rewind/db-mutual.secret"
//!
//! [discovery_auth]                             # CHAP for SendTargets discovery sessions
//! user = "discover"
//! secret = "another-long-secret"
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::auth::secrets::{check_secret_len, Secret, SecretWarning};
use crate::auth::{AccessPolicy, AuthSettings, ChapConfig, InitiatorAcl};

/// Prefix of the target names rewind makes up for volumes that no `[[target]]` names.
pub const DEFAULT_IQN_PREFIX: &str = "iqn.2026-11.dev.rewind";
/// The listen address when nothing else is said.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3260";
/// Name and size of the volume `rewind serve` creates in an empty data directory.
pub const DEFAULT_VOLUME: &str = "vol0";
pub const DEFAULT_VOLUME_SIZE: u64 = 1 << 30;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Portals to listen on (`ADDR:PORT`).
    pub listen: Vec<String>,
    /// Target portal group tag reported for every portal.
    pub portal_group_tag: u16,
    #[serde(rename = "volume")]
    pub volumes: Vec<VolumeConfig>,
    #[serde(rename = "target")]
    pub targets: Vec<TargetConfig>,
    pub iscsi: IscsiConfig,
    /// Continuous data protection settings for every journaled volume.
    pub journal: crate::journal::JournalConfig,
    /// CHAP for discovery sessions; absent: discovery needs no authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_auth: Option<ChapAuthConfig>,
    /// Replication to or from a second site (`[replication]`); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationConfig>,
}

/// `[replication]`: the shared secret both sites prove with HMAC-SHA256, and, on a secondary,
/// the address to accept replication on and the volumes it accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Secondary: accept replication on ADDR:PORT (e.g. "0.0.0.0:3262").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Secondary: the volumes a primary may replicate into (served read-only until promoted).
    pub volumes: Vec<String>,
    /// The shared secret, inline, or better in `secret_file` (first line, trimmed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Both sites: send a keepalive on the link when it has been quiet this long (humantime).
    #[serde(with = "humantime_serde_compat")]
    pub keepalive: std::time::Duration,
    /// Both sites: drop the link (and reconnect, on the primary) when the peer has sent nothing
    /// for this long, or a send has not gone out in this time. At least twice `keepalive`.
    #[serde(with = "humantime_serde_compat")]
    pub link_timeout: std::time::Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            listen: None,
            volumes: Vec::new(),
            secret: None,
            secret_file: None,
            keepalive: std::time::Duration::from_secs(5),
            link_timeout: std::time::Duration::from_secs(30),
        }
    }
}

impl ReplicationConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| ConfigError::Invalid(format!("replication: {m}"));
        if self.keepalive < std::time::Duration::from_millis(100) {
            return Err(bad("keepalive must be at least 100ms".into()));
        }
        if self.link_timeout < self.keepalive * 2 {
            return Err(bad(format!(
                "link_timeout ({}) must be at least twice keepalive ({})",
                humantime::format_duration(self.link_timeout),
                humantime::format_duration(self.keepalive)
            )));
        }
        match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => {
                return Err(bad("give secret or secret_file, not both".into()));
            }
            (None, None) => return Err(bad("a shared secret is needed (secret_file)".into())),
            (Some(s), None) => check_secret_len(s).map_err(|e| bad(e.to_string()))?,
            (None, Some(_)) => {}
        }
        if let Some(l) = &self.listen {
            l.parse::<SocketAddr>().map_err(|_| {
                bad(format!(
                    "listen {l:?}: write it as ADDR:PORT, e.g. 0.0.0.0:3262"
                ))
            })?;
        }
        if self.listen.is_none() && !self.volumes.is_empty() {
            return Err(bad(
                "volumes are accepted from a primary only with a listen address".into(),
            ));
        }
        for v in &self.volumes {
            check_volume_name(v)?;
        }
        Ok(())
    }

    /// The shared secret (read from `secret_file` if given), with warnings to log.
    pub fn load_secret(&self) -> Result<(Secret, Vec<SecretWarning>), ConfigError> {
        match (&self.secret, &self.secret_file) {
            (Some(s), _) => Ok((s.clone(), Vec::new())),
            (None, Some(path)) => {
                let (s, w) = Secret::from_file(path)
                    .map_err(|e| ConfigError::Invalid(format!("replication: {e}")))?;
                check_secret_len(&s)
                    .map_err(|e| ConfigError::Invalid(format!("replication: {e}")))?;
                Ok((s, w))
            }
            (None, None) => Err(ConfigError::Invalid(
                "replication: a shared secret is needed".into(),
            )),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![DEFAULT_LISTEN.to_string()],
            portal_group_tag: 1,
            volumes: Vec::new(),
            targets: Vec::new(),
            iscsi: IscsiConfig::default(),
            journal: crate::journal::JournalConfig::default(),
            discovery_auth: None,
            replication: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    pub name: String,
    /// Backing file or block device; default: inside the data directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Size such as "10GiB" (needed to create the volume; an existing one keeps its size).
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default = "default_block_size")]
    pub block_size: u32,
    #[serde(default)]
    pub read_only: bool,
    /// Continuous data protection for this volume (default: on).
    #[serde(default)]
    pub journal: Option<bool>,
}

fn default_block_size() -> u32 {
    512
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// iSCSI qualified name, e.g. `iqn.2026-11.dev.rewind:db`.
    pub name: String,
    #[serde(default)]
    pub alias: Option<String>,
    /// Volume names; LUN numbers follow the order, from 0.
    pub luns: Vec<String>,
    /// Initiator names allowed to log in (`"*"` = all); absent: every initiator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_initiators: Option<Vec<String>>,
    /// CHAP credentials initiators must prove (`[target.auth]`); absent: no CHAP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ChapAuthConfig>,
}

/// CHAP credentials: `[target.auth]` or `[discovery_auth]`. The secrets are given inline or,
/// better, in a file readable only by rewind (first line, trimmed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChapAuthConfig {
    /// The CHAP name the initiator sends (`CHAP_N`).
    pub user: Option<String>,
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    /// Mutual CHAP: the name the target answers with.
    pub mutual_user: Option<String>,
    pub mutual_secret: Option<Secret>,
    pub mutual_secret_file: Option<PathBuf>,
}

impl ChapAuthConfig {
    /// Check what can be checked without reading files; `what` names the section in
    /// messages (`target "iqn...": auth`).
    pub fn validate(&self, what: &str) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("{what}: {m}")));
        let has_mutual = self.mutual_user.is_some()
            || self.mutual_secret.is_some()
            || self.mutual_secret_file.is_some();
        let Some(user) = &self.user else {
            if has_mutual {
                return invalid(
                    "mutual CHAP needs one-way CHAP too: set user and secret (or secret_file)"
                        .into(),
                );
            }
            return invalid("set user and secret (or secret_file) for CHAP".into());
        };
        check_chap_name(user).or_else(|m| invalid(format!("user: {m}")))?;
        check_secret_source(&self.secret, &self.secret_file, "secret").or_else(invalid)?;
        if has_mutual {
            let Some(mutual_user) = &self.mutual_user else {
                return invalid(
                    "mutual CHAP needs mutual_user (the name the target answers with)".into(),
                );
            };
            check_chap_name(mutual_user).or_else(|m| invalid(format!("mutual_user: {m}")))?;
            check_secret_source(
                &self.mutual_secret,
                &self.mutual_secret_file,
                "mutual_secret",
            )
            .or_else(invalid)?;
            if let (Some(a), Some(b)) = (&self.secret, &self.mutual_secret) {
                if a == b {
                    return invalid(
                        "mutual_secret must differ from secret (RFC 7143: a secret authenticates one direction only)"
                            .into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// Validate, read secret files, and return the credentials with warnings to log.
    pub fn load(&self, what: &str) -> Result<(ChapConfig, Vec<SecretWarning>), ConfigError> {
        self.validate(what)?;
        let mut warnings = Vec::new();
        let mut read = |inline: &Option<Secret>, file: &Option<PathBuf>, key: &str| {
            let secret = match (inline, file) {
                (Some(s), _) => s.clone(),
                (None, Some(path)) => {
                    let (s, w) = Secret::from_file(path)
                        .map_err(|e| ConfigError::Invalid(format!("{what}: {key}_file: {e}")))?;
                    warnings.extend(w);
                    s
                }
                (None, None) => {
                    return Err(ConfigError::Invalid(format!(
                        "{what}: give {key} or {key}_file"
                    )))
                }
            };
            check_secret_len(&secret)
                .map_err(|e| ConfigError::Invalid(format!("{what}: {key}: {e}")))?;
            Ok::<Secret, ConfigError>(secret)
        };
        let secret = read(&self.secret, &self.secret_file, "secret")?;
        let mutual = match &self.mutual_user {
            Some(u) => Some((
                u.clone(),
                read(
                    &self.mutual_secret,
                    &self.mutual_secret_file,
                    "mutual_secret",
                )?,
            )),
            None => None,
        };
        if let Some((_, m)) = &mutual {
            if *m == secret {
                return Err(ConfigError::Invalid(format!(
                    "{what}: mutual_secret must differ from secret (RFC 7143: a secret authenticates one direction only)"
                )));
            }
        }
        let user = self.user.clone().unwrap_or_default();
        Ok((
            ChapConfig {
                username: user,
                secret,
                mutual,
            },
            warnings,
        ))
    }
}

/// A CHAP name is sent as a text value: 1-255 bytes, no control characters.
fn check_chap_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
        Err(format!(
            "{name:?} is not a usable CHAP name (1-255 bytes, no control characters)"
        ))
    } else {
        Ok(())
    }
}

/// Exactly one of `KEY` and `KEY_file`; an inline secret of an acceptable length.
fn check_secret_source(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    key: &str,
) -> Result<(), String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("give {key} or {key}_file, not both")),
        (None, None) => Err(format!("give {key} or {key}_file")),
        (Some(s), None) => check_secret_len(s).map_err(|e| format!("{key}: {e}")),
        (None, Some(p)) if p.as_os_str().is_empty() => Err(format!("{key}_file is empty")),
        (None, Some(_)) => Ok(()),
    }
}

/// An initiator name in an ACL: an iSCSI name (iqn., eui., naa.) or `*`.
fn check_initiator_name(name: &str) -> Result<(), ConfigError> {
    let lower = name.to_ascii_lowercase();
    let well_formed =
        (lower.starts_with("iqn.") || lower.starts_with("eui.") || lower.starts_with("naa."))
            && name.len() <= 223
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if name == "*" || well_formed {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "allowed_initiators: {name:?} is not an iSCSI name (iqn.YYYY-MM.reversed.domain:name) or \"*\""
        )))
    }
}

/// What the target offers in login negotiation, and its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IscsiConfig {
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub max_outstanding_r2t: u32,
    pub max_connections: u32,
    /// Commands the initiator may have outstanding per session (the CmdSN window).
    pub queue_depth: u32,
    /// Ping an idle initiator after this long (humantime, "0s" = never).
    #[serde(with = "humantime_serde_compat")]
    pub nop_in_interval: std::time::Duration,
    /// Drop a connection whose initiator answered no ping for this long.
    #[serde(with = "humantime_serde_compat")]
    pub nop_in_timeout: std::time::Duration,
    /// A connection that has not completed login in this time is dropped.
    #[serde(with = "humantime_serde_compat")]
    pub login_timeout: std::time::Duration,
    /// Most sessions at once (discovery included); more logins get "out of resources".
    pub max_sessions: u32,
    /// Most TCP connections at once; more wait in the accept queue.
    pub max_tcp_connections: u32,
    /// Most solicited write data in flight across all sessions, in bytes.
    pub max_write_data_in_flight: u64,
    /// Threads that execute SCSI commands against the volumes, shared by all sessions
    /// (0 = twice the CPUs, at least 4). More help when the volumes are on disks that want
    /// many requests in flight and the data is not in the page cache.
    pub command_threads: u32,
}

impl Default for IscsiConfig {
    fn default() -> Self {
        IscsiConfig {
            max_recv_data_segment_length: 262_144,
            max_burst_length: 16_776_192,
            first_burst_length: 16_776_192,
            max_outstanding_r2t: 16,
            max_connections: 8,
            queue_depth: 128,
            nop_in_interval: std::time::Duration::from_secs(10),
            nop_in_timeout: std::time::Duration::from_secs(30),
            login_timeout: std::time::Duration::from_secs(15),
            max_sessions: 256,
            max_tcp_connections: 1024,
            max_write_data_in_flight: 512 << 20,
            command_threads: 0,
        }
    }
}

/// serde glue for humantime durations ("5s", "1m 30s").
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Parse "10GiB", "512MiB", "1073741824".
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text.trim())
        .map_err(|e| {
            ConfigError::Invalid(format!(
                "size {text:?}: {e} (write it like 10GiB or 512MiB)"
            ))
        })
}

/// Volume and target names: what is safe as a file name and inside an IQN.
pub fn check_volume_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "volume name {name:?}: use 1-64 characters of a-z, 0-9, '-', '_', '.' (not starting with '.')"
        )))
    }
}

/// The IQN rewind gives a volume that no `[[target]]` names.
pub fn default_target_name(volume: &str) -> String {
    format!("{DEFAULT_IQN_PREFIX}:{volume}")
}

fn check_iqn(name: &str) -> Result<(), ConfigError> {
    let lower = name.to_ascii_lowercase();
    let well_formed =
        (lower.starts_with("iqn.") || lower.starts_with("eui.") || lower.starts_with("naa."))
            && name.len() <= 223
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if well_formed {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "target name {name:?} is not an iSCSI name: use iqn.YYYY-MM.reversed.domain:name (letters, digits, '.', '-', ':')"
        )))
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.listen
            .iter()
            .map(|a| {
                a.parse().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "listen address {a:?}: write it as ADDR:PORT, e.g. 0.0.0.0:3260"
                    ))
                })
            })
            .collect()
    }

    /// The initiator lists of the configured targets.
    pub fn access_policy(&self) -> AccessPolicy {
        let mut policy = AccessPolicy::new();
        for t in &self.targets {
            if let Some(list) = &t.allowed_initiators {
                policy.set(&t.name, InitiatorAcl::new(list));
            }
        }
        policy
    }

    /// Read the CHAP secrets (files included) and build what the login layer needs. Call at
    /// startup and on reload; log the returned warnings.
    pub fn load_auth(&self) -> Result<AuthSettings, ConfigError> {
        let mut settings = AuthSettings {
            policy: self.access_policy(),
            ..AuthSettings::default()
        };
        for t in &self.targets {
            if let Some(auth) = &t.auth {
                let (chap, warnings) = auth.load(&format!("target {:?}: auth", t.name))?;
                settings.warnings.extend(warnings);
                settings.targets.insert(t.name.to_lowercase(), chap);
            }
        }
        if let Some(auth) = &self.discovery_auth {
            let (chap, warnings) = auth.load("discovery_auth")?;
            settings.warnings.extend(warnings);
            settings.discovery = Some(chap);
        }
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::Invalid(
                "listen: give at least one ADDR:PORT".into(),
            ));
        }
        self.listen_addrs()?;
        let mut names = HashSet::new();
        for v in &self.volumes {
            check_volume_name(&v.name)?;
            if !names.insert(v.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "volume {:?} is defined twice",
                    v.name
                )));
            }
            if v.block_size != 512 && v.block_size != 4096 {
                return Err(ConfigError::Invalid(format!(
                    "volume {:?}: block_size {} is not supported (use 512 or 4096)",
                    v.name, v.block_size
                )));
            }
            if let Some(size) = &v.size {
                let bytes = parse_size(size)?;
                if bytes == 0 || bytes % u64::from(v.block_size) != 0 {
                    return Err(ConfigError::Invalid(format!(
                        "volume {:?}: size {size} must be a positive multiple of the block size {}",
                        v.name, v.block_size
                    )));
                }
            }
        }
        let mut target_names = HashSet::new();
        for t in &self.targets {
            check_iqn(&t.name)?;
            if !target_names.insert(t.name.to_ascii_lowercase()) {
                return Err(ConfigError::Invalid(format!(
                    "target {:?} is defined twice",
                    t.name
                )));
            }
            if t.luns.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "target {:?} has no luns",
                    t.name
                )));
            }
            for lun in &t.luns {
                if !names.contains(lun.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "target {:?} uses volume {lun:?}, which no [[volume]] defines",
                        t.name
                    )));
                }
            }
            if let Some(list) = &t.allowed_initiators {
                if list.is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "target {:?}: allowed_initiators is empty, so no initiator could log in; list names, use [\"*\"], or remove the key",
                        t.name
                    )));
                }
                for name in list {
                    check_initiator_name(name).map_err(|e| match e {
                        ConfigError::Invalid(m) => {
                            ConfigError::Invalid(format!("target {:?}: {m}", t.name))
                        }
                        other => other,
                    })?;
                }
            }
            if let Some(auth) = &t.auth {
                auth.validate(&format!("target {:?}: auth", t.name))?;
            }
        }
        if let Some(auth) = &self.discovery_auth {
            auth.validate("discovery_auth")?;
        }
        if let Some(r) = &self.replication {
            r.validate()?;
        }
        self.journal
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("journal: {e}")))?;
        let i = &self.iscsi;
        let in_range = |v: u32| (512..=16_777_215).contains(&v);
        if !in_range(i.max_recv_data_segment_length)
            || !in_range(i.max_burst_length)
            || !in_range(i.first_burst_length)
        {
            return Err(ConfigError::Invalid(
                "iscsi: data segment and burst lengths must be between 512 and 16777215".into(),
            ));
        }
        if i.first_burst_length > i.max_burst_length {
            return Err(ConfigError::Invalid(
                "iscsi: first_burst_length must not exceed max_burst_length".into(),
            ));
        }
        if i.max_write_data_in_flight < u64::from(i.max_burst_length) {
            return Err(ConfigError::Invalid(
                "iscsi: max_write_data_in_flight must be at least max_burst_length".into(),
            ));
        }
        if i.max_sessions == 0 || i.max_tcp_connections == 0 {
            return Err(ConfigError::Invalid(
                "iscsi: max_sessions and max_tcp_connections must be at least 1".into(),
            ));
        }
        if i.max_outstanding_r2t == 0 || i.max_connections == 0 || i.queue_depth == 0 {
            return Err(ConfigError::Invalid(
                "iscsi: max_outstanding_r2t, max_connections and queue_depth must be at least 1"
                    .into(),
            ));
        }
        if i.command_threads > 1024 {
            return Err(ConfigError::Invalid(
                "iscsi: command_threads must be at most 1024 (0 = twice the CPUs)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default()
            .validate()
            .expect("default config validates");
    }

    #[test]
    fn parses_and_validates_toml() {
        let text = r#"
            listen = ["0.0.0.0:3260"]
            [[volume]]
            name = "db"
            size = "20GiB"
            block_size = 4096
            [[target]]
            name = "iqn.2026-11.dev.rewind:db"
            luns = ["db"]
            [iscsi]
            nop_in_interval = "5s"
        "#;
        let c: Config = toml::from_str(text).expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.volumes[0].block_size, 4096);
        assert_eq!(c.iscsi.nop_in_interval, std::time::Duration::from_secs(5));
        assert_eq!(parse_size("20GiB").ok(), Some(20 << 30));
    }

    #[test]
    fn rejects_contradictions_with_clear_messages() {
        let mut c = Config::default();
        c.targets.push(TargetConfig {
            name: "iqn.2026-11.x:y".into(),
            alias: None,
            luns: vec!["nope".into()],
            allowed_initiators: None,
            auth: None,
        });
        let e = c.validate().expect_err("unknown volume").to_string();
        assert!(e.contains("which no [[volume]] defines"), "{e}");

        let mut c = Config::default();
        c.volumes.push(VolumeConfig {
            name: "a".into(),
            path: None,
            size: Some("1000".into()),
            block_size: 512,
            read_only: false,
            journal: None,
        });
        assert!(c
            .validate()
            .expect_err("unaligned")
            .to_string()
            .contains("multiple of the block size"));

        let c = Config {
            listen: vec!["localhost".into()],
            ..Config::default()
        };
        assert!(c
            .validate()
            .expect_err("bad addr")
            .to_string()
            .contains("ADDR:PORT"));
        assert!(check_volume_name("../etc").is_err());
    }

    fn with_target(extra: &str) -> Result<Config, String> {
        let text = format!(
            r#"
            [[volume]]
            name = "db"
            size = "1MiB"
            [[target]]
            name = "iqn.2026-11.dev.rewind:db"
            luns = ["db"]
            {extra}
            "#
        );
        let c: Config = toml::from_str(&text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn configs_without_auth_stay_valid() {
        let c = with_target("").expect("valid");
        assert_eq!(c.targets[0].auth, None);
        assert_eq!(c.targets[0].allowed_initiators, None);
        assert_eq!(c.discovery_auth, None);
        let auth = c.load_auth().expect("loads");
        assert!(auth.targets.is_empty() && auth.discovery.is_none());
        assert!(auth
            .policy
            .allows("iqn.2026-11.dev.rewind:db", "iqn.2000-01.x:any"));
    }

    #[test]
    fn auth_and_acl_sections_parse_and_load() {
        let c = with_target(
            r#"
            allowed_initiators = ["iqn.1994-05.com.redhat:host-a"]
            [target.auth]
            user = "host-a"
            secret = "initiator-secret"
            mutual_user = "rewind"
            mutual_secret = "target-secret-1"
            [discovery_auth]
            user = "discover"
            secret = "discovery-secret"
            "#,
        )
        .expect("valid");
        let auth = c.load_auth().expect("loads");
        let chap = auth
            .chap_for_target("IQN.2026-11.dev.rewind:DB")
            .expect("target has CHAP");
        assert_eq!(chap.username, "host-a");
        assert_eq!(chap.secret.expose(), b"initiator-secret");
        assert_eq!(chap.mutual.as_ref().map(|m| m.0.as_str()), Some("rewind"));
        assert_eq!(
            auth.discovery.as_ref().map(|d| d.username.as_str()),
            Some("discover")
        );
        assert!(auth.warnings.is_empty());
        assert!(auth
            .policy
            .allows("iqn.2026-11.dev.rewind:db", "iqn.1994-05.com.redhat:HOST-A"));
        assert!(!auth
            .policy
            .allows("iqn.2026-11.dev.rewind:db", "iqn.1994-05.com.redhat:host-b"));
        // Secrets never show in Debug output or in a serialized config.
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("initiator-secret") && debug.contains("***"),
            "{debug}"
        );
        let text = toml::to_string(&c).expect("serializes");
        assert!(!text.contains("initiator-secret"), "{text}");
    }

    #[test]
    fn auth_validation_messages() {
        let cases = [
            ("[target.auth]\nsecret = \"long-enough-secret\"", "set user and secret"),
            (
                "[target.auth]\nmutual_user = \"t\"\nmutual_secret = \"long-enough-secret\"",
                "mutual CHAP needs one-way CHAP too",
            ),
            ("[target.auth]\nuser = \"u\"", "give secret or secret_file"),
            (
                "[target.auth]\nuser = \"u\"\nsecret = \"long-enough-secret\"\nsecret_file = \"/x\"",
                "not both",
            ),
            ("[target.auth]\nuser = \"u\"\nsecret = \"short\"", "at least 12"),
            (
                "[target.auth]\nuser = \"u\"\nsecret = \"long-enough-secret\"\nmutual_secret = \"other-long-secret\"",
                "needs mutual_user",
            ),
            (
                "[target.auth]\nuser = \"u\"\nsecret = \"long-enough-secret\"\nmutual_user = \"t\"",
                "give mutual_secret or mutual_secret_file",
            ),
            (
                "[target.auth]\nuser = \"u\"\nsecret = \"long-enough-secret\"\nmutual_user = \"t\"\nmutual_secret = \"long-enough-secret\"",
                "must differ",
            ),
            ("[target.auth]\nuser = \"\"\nsecret = \"long-enough-secret\"", "not a usable CHAP name"),
            ("[target.auth]\nuser = \"u\"\npassword = \"x\"", "unknown field"),
            ("allowed_initiators = []", "allowed_initiators is empty"),
            ("allowed_initiators = [\"host-a\"]", "not an iSCSI name"),
        ];
        for (extra, want) in cases {
            let e = with_target(extra).expect_err(extra);
            assert!(e.contains(want), "{extra}: {e}");
            assert!(!e.contains("long-enough-secret"), "{e}");
        }
        let e = toml::from_str::<Config>("[discovery_auth]\nuser = \"d\"")
            .expect("parses")
            .validate()
            .expect_err("no secret")
            .to_string();
        assert!(e.contains("discovery_auth: give secret"), "{e}");
        assert!(with_target("allowed_initiators = [\"*\"]").is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_load_with_warnings_and_length_checks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, body: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            p
        };
        let good = write("good", "initiator-secret\n", 0o600);
        let open = write("open", "mutual-secret-xyz\n", 0o644);
        let short = write("short", "tiny\n", 0o600);
        let same = write("same", "initiator-secret\n", 0o600);
        let auth = |secret: &Path, mutual: Option<&Path>| ChapAuthConfig {
            user: Some("u".into()),
            secret_file: Some(secret.to_path_buf()),
            mutual_user: mutual.map(|_| "t".into()),
            mutual_secret_file: mutual.map(Path::to_path_buf),
            ..ChapAuthConfig::default()
        };

        let (chap, warnings) = auth(&good, Some(&open)).load("t").expect("loads");
        assert_eq!(chap.secret.expose(), b"initiator-secret");
        assert_eq!(
            chap.mutual.as_ref().map(|m| m.1.expose()),
            Some(&b"mutual-secret-xyz"[..])
        );
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0]
            .to_string()
            .contains("world-readable secrets file"));

        let e = auth(&short, None).load("t").expect_err("short").to_string();
        assert!(e.contains("at least 12"), "{e}");
        let e = auth(&good, Some(&same))
            .load("t")
            .expect_err("same")
            .to_string();
        assert!(e.contains("must differ"), "{e}");
        let e = auth(&dir.path().join("missing"), None)
            .load("t")
            .expect_err("missing")
            .to_string();
        assert!(e.contains("cannot read secrets file"), "{e}");
    }
}
