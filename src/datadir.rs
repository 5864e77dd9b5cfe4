//! The data directory: what lives where.
//!
//! ```text
//! DIR/
//!   volumes/NAME/volume.toml   metadata: size, block size, id, read-only, backing path
//!   volumes/NAME/data.img      the volume's blocks (sparse file), unless `path` points elsewhere
//!   rewind.sock                admin socket of the running daemon
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::check_volume_name;

#[derive(Debug, Error)]
pub enum DataDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: bad volume metadata: {message}")]
    Meta { path: PathBuf, message: String },
    #[error("volume {0:?} already exists")]
    Exists(String),
    #[error("no volume named {0:?} (see `rewind volume list`)")]
    NoSuchVolume(String),
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `volume.toml` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMeta {
    pub name: String,
    pub size: u64,
    pub block_size: u32,
    /// Stable 64-bit identity: the low bits of the NAA designator and the serial number.
    /// Written as hex text (TOML integers are signed 64-bit).
    #[serde(with = "hex_id")]
    pub id: u64,
    #[serde(default)]
    pub read_only: bool,
    /// Backing file or device outside the data directory, if any.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Continuous data protection on (the default) or off for this volume.
    #[serde(default = "yes")]
    pub journal: bool,
}

fn yes() -> bool {
    true
}

mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{id:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        u64::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

impl VolumeMeta {
    pub fn serial(&self) -> String {
        format!("{:016x}", self.id)
    }
}

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Open (creating if needed) a data directory.
    pub fn open(root: &Path) -> Result<DataDir, DataDirError> {
        let volumes = root.join("volumes");
        std::fs::create_dir_all(&volumes).map_err(io_err(&volumes))?;
        Ok(DataDir {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn socket_path(&self) -> PathBuf {
        self.root.join("rewind.sock")
    }

    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    /// Where a volume's blocks are.
    pub fn data_path(&self, meta: &VolumeMeta) -> PathBuf {
        meta.path
            .clone()
            .unwrap_or_else(|| self.volume_dir(&meta.name).join("data.img"))
    }

    pub fn volume_names(&self) -> Result<Vec<String>, DataDirError> {
        let dir = self.root.join("volumes");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            if entry.path().join("volume.toml").is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn load(&self, name: &str) -> Result<VolumeMeta, DataDirError> {
        let path = self.volume_dir(name).join("volume.toml");
        if !path.is_file() {
            return Err(DataDirError::NoSuchVolume(name.to_string()));
        }
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        toml::from_str(&text).map_err(|e| DataDirError::Meta {
            path,
            message: e.to_string(),
        })
    }

    pub fn list(&self) -> Result<Vec<VolumeMeta>, DataDirError> {
        self.volume_names()?.iter().map(|n| self.load(n)).collect()
    }

    /// Record a new volume and create its sparse backing file (or check the given path).
    pub fn create(
        &self,
        name: &str,
        size: u64,
        block_size: u32,
        path: Option<PathBuf>,
        read_only: bool,
    ) -> Result<VolumeMeta, DataDirError> {
        check_volume_name(name).map_err(|e| DataDirError::Invalid(e.to_string()))?;
        if block_size != 512 && block_size != 4096 {
            return Err(DataDirError::Invalid(format!(
                "block size {block_size}: use 512 or 4096"
            )));
        }
        if size == 0 || size % u64::from(block_size) != 0 {
            return Err(DataDirError::Invalid(format!(
                "size {size} must be a positive multiple of the block size {block_size}"
            )));
        }
        let dir = self.volume_dir(name);
        if dir.join("volume.toml").exists() {
            return Err(DataDirError::Exists(name.to_string()));
        }
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let meta = VolumeMeta {
            name: name.to_string(),
            size,
            block_size,
            id: rand::random::<u64>(),
            read_only,
            path,
            journal: true,
        };
        let data = self.data_path(&meta);
        if meta.path.is_none() {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&data)
                .map_err(io_err(&data))?;
            file.set_len(size).map_err(io_err(&data))?;
            file.sync_all().map_err(io_err(&data))?;
        } else if !data.exists() {
            return Err(DataDirError::Invalid(format!(
                "backing path {} does not exist",
                data.display()
            )));
        }
        self.write_meta(&meta)?;
        Ok(meta)
    }

    /// Record a volume's new size (after its backing store grew).
    pub fn set_size(&self, name: &str, size: u64) -> Result<VolumeMeta, DataDirError> {
        let mut meta = self.load(name)?;
        meta.size = size;
        self.write_meta(&meta)?;
        Ok(meta)
    }

    /// Switch continuous data protection on or off for a volume (takes effect at the next start).
    pub fn set_journal(&self, name: &str, on: bool) -> Result<VolumeMeta, DataDirError> {
        let mut meta = self.load(name)?;
        meta.journal = on;
        self.write_meta(&meta)?;
        Ok(meta)
    }

    fn write_meta(&self, meta: &VolumeMeta) -> Result<(), DataDirError> {
        let dir = self.volume_dir(&meta.name);
        let tmp = dir.join("volume.toml.tmp");
        let path = dir.join("volume.toml");
        let text =
            toml::to_string_pretty(meta).map_err(|e| DataDirError::Invalid(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        std::fs::File::open(&dir)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_load() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dd = DataDir::open(tmp.path()).expect("open");
        let m = dd
            .create("vol0", 1 << 20, 512, None, false)
            .expect("create");
        assert_eq!(dd.list().expect("list"), vec![m.clone()]);
        assert_eq!(
            std::fs::metadata(dd.data_path(&m)).expect("stat").len(),
            1 << 20
        );
        assert!(matches!(
            dd.create("vol0", 1 << 20, 512, None, false),
            Err(DataDirError::Exists(_))
        ));
        assert!(matches!(
            dd.load("nope"),
            Err(DataDirError::NoSuchVolume(_))
        ));
        assert!(dd.create("bad/name", 1 << 20, 512, None, false).is_err());
        assert!(dd.create("odd", 1000, 512, None, false).is_err());
    }
}
