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
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![DEFAULT_LISTEN.to_string()],
            portal_group_tag: 1,
            volumes: Vec::new(),
            targets: Vec::new(),
            iscsi: IscsiConfig::default(),
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
        }
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
        if i.max_outstanding_r2t == 0 || i.max_connections == 0 || i.queue_depth == 0 {
            return Err(ConfigError::Invalid(
                "iscsi: max_outstanding_r2t, max_connections and queue_depth must be at least 1"
                    .into(),
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
        });
        assert!(c
            .validate()
            .expect_err("unaligned")
            .to_string()
            .contains("multiple of the block size"));

        let mut c = Config::default();
        c.listen = vec!["localhost".into()];
        assert!(c
            .validate()
            .expect_err("bad addr")
            .to_string()
            .contains("ADDR:PORT"));
        assert!(check_volume_name("../etc").is_err());
    }
}
