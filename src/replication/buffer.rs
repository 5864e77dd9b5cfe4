//! The secondary's update buffer: a whole update is written to a file and verified against the
//! primary's SHA-256 before any of it touches the volume.
//!
//! File format: for each extent, `extent u64 BE | data`. The SHA-256 is over exactly these
//! bytes, the same as the primary's `UpdateEnd` digest. Extent lengths come from the layout.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::digest::Layout;

/// An update being received.
pub struct UpdateBuffer {
    path: PathBuf,
    out: BufWriter<File>,
    hash: Sha256,
    pub extents: u64,
    pub bytes: u64,
}

impl UpdateBuffer {
    pub fn create(path: &Path) -> std::io::Result<UpdateBuffer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(UpdateBuffer {
            path: path.to_path_buf(),
            out: BufWriter::new(File::create(path)?),
            hash: Sha256::new(),
            extents: 0,
            bytes: 0,
        })
    }

    pub fn append(&mut self, extent: u64, data: &[u8]) -> std::io::Result<()> {
        self.out.write_all(&extent.to_be_bytes())?;
        self.out.write_all(data)?;
        self.hash.update(extent.to_be_bytes());
        self.hash.update(data);
        self.extents += 1;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Make the file durable; returns its path and the SHA-256 of what was appended (hex).
    pub fn finish(self) -> std::io::Result<(PathBuf, String)> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((self.path, hex::encode(self.hash.finalize())))
    }
}

/// Hash of the data as it reads back from the file.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut r = BufReader::new(File::open(path)?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Read the file back and verify it against `sha256` (hex): true if it matches.
pub fn verify(path: &Path, sha256: &str) -> std::io::Result<bool> {
    Ok(hash_file(path)?.eq_ignore_ascii_case(sha256))
}

/// What [`for_each`] calls for each extent.
pub type ExtentFn<'a> = dyn FnMut(u64, &[u8]) -> Result<(), String> + 'a;

/// Each `(extent, data)` of a buffered update, in order. Call only after [`verify`].
pub fn for_each(path: &Path, layout: &Layout, f: &mut ExtentFn<'_>) -> Result<(), String> {
    let mut r = BufReader::new(File::open(path).map_err(|e| e.to_string())?);
    loop {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        let e = u64::from_be_bytes(head);
        if e >= layout.extents() {
            return Err(format!("update names extent {e}, beyond the volume"));
        }
        let mut data = vec![0u8; layout.extent_len(e)];
        r.read_exact(&mut data).map_err(|e| e.to_string())?;
        f(e, &data)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_bit_in_the_buffer_fails_verification() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("u");
        let mut b = UpdateBuffer::create(&path).expect("create");
        b.append(3, &[7u8; 4096]).expect("append");
        b.append(5, &[9u8; 4096]).expect("append");
        let (path, sha) = b.finish().expect("finish");
        assert!(verify(&path, &sha).expect("read"));
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[100] ^= 0x10;
        std::fs::write(&path, bytes).expect("write");
        assert!(!verify(&path, &sha).expect("read"));
    }
}
