//! The replication wire protocol: framed, checksummed, versioned messages over TCP.
//!
//! ```text
//! frame := magic "RWRP" | version u8 | header_len u32 | data_len u32 | crc32c u32 | header | data
//! ```
//!
//! All integers are big endian. `header` is one [`Msg`] as JSON; `data` is raw bytes that go
//! with it (block contents, packed 32-byte digests). The CRC32C covers the version, both
//! lengths, the header and the data, so a flipped bit anywhere in a frame is caught before the
//! message is acted on. A frame with another version or a checksum mismatch is an error and
//! the connection is dropped.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 4] = b"RWRP";
/// Bumped on any incompatible change of framing or messages.
pub const VERSION: u8 = 1;
pub const MAX_HEADER: u32 = 1 << 20;
pub const MAX_DATA: u32 = 16 << 20;
const PREFIX: usize = 4 + 1 + 4 + 4 + 4;

/// What an update brings the secondary to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateKind {
    /// Extents found different by digest comparison (first sync, or repair after a crash).
    Resync,
    /// The extents changed in one interval, newest data only.
    Interval,
}

/// One protocol message. P = primary, S = secondary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum Msg {
    /// P→S: which volume, and the primary's challenge nonce (hex).
    Hello { volume: String, nonce: String },
    /// S→P: the secondary's nonce and its proof that it knows the secret.
    Challenge { nonce: String, proof: String },
    /// P→S: the primary's proof.
    Proof { proof: String },
    /// P→S (after authentication): the primary volume's geometry and the extent size.
    Geometry {
        block_size: u32,
        num_blocks: u64,
        extent_bytes: u32,
        group_extents: u32,
    },
    /// S→P: geometry accepted; the primary time of the last update it applied, if any.
    Ready {
        block_size: u32,
        num_blocks: u64,
        applied: Option<u64>,
    },
    /// Either side: no (the reason is for people); the connection closes after it.
    Refused { reason: String },
    /// P→S: send the digest of every group of extents.
    GroupDigests,
    /// P→S: send the digest of every extent of these groups.
    ExtentDigests { groups: Vec<u64> },
    /// S→P: `count` 32-byte SHA-256 digests in the data, in the order asked.
    Digests { count: u64 },
    /// P→S: an update begins. Its data frames follow, then `UpdateEnd`.
    UpdateBegin {
        seq: u64,
        kind: UpdateKind,
        /// The primary time this update brings the volume to.
        to: u64,
        extents: u64,
        bytes: u64,
    },
    /// P→S: the data of these extents, concatenated in order (the last extent of the volume
    /// may be short).
    UpdateData { extents: Vec<u64> },
    /// P→S: the update is complete; SHA-256 over every extent number (u64 BE) and its data.
    UpdateEnd { seq: u64, sha256: String },
    /// S→P: the update was verified and applied; the secondary is at `to`.
    Applied { seq: u64, to: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a rewind replication peer (bad magic)")]
    Magic,
    #[error("protocol version {0} is not supported (this side speaks {VERSION})")]
    Version(u8),
    #[error("frame too large ({0} bytes)")]
    TooLarge(u32),
    #[error("frame checksum mismatch: the message was corrupted in transit")]
    Checksum,
    #[error("unreadable message: {0}")]
    Decode(String),
}

/// A received frame.
#[derive(Debug)]
pub struct Frame {
    pub msg: Msg,
    pub data: Vec<u8>,
}

/// Encode one frame.
pub fn encode(msg: &Msg, data: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(msg).expect("messages serialize");
    let mut out = Vec::with_capacity(PREFIX + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let crc = checksum(VERSION, &out[5..13], &header, data);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

fn checksum(version: u8, lens: &[u8], header: &[u8], data: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(&[version]);
    crc = crc32c::crc32c_append(crc, lens);
    crc = crc32c::crc32c_append(crc, header);
    crc32c::crc32c_append(crc, data)
}

pub fn send(w: &mut impl Write, msg: &Msg, data: &[u8]) -> Result<u64, WireError> {
    let frame = encode(msg, data);
    w.write_all(&frame)?;
    w.flush()?;
    Ok(frame.len() as u64)
}

/// Read one frame; returns it and its size on the wire.
pub fn recv(r: &mut impl Read) -> Result<(Frame, u64), WireError> {
    let mut prefix = [0u8; PREFIX];
    r.read_exact(&mut prefix)?;
    if &prefix[..4] != MAGIC {
        return Err(WireError::Magic);
    }
    if prefix[4] != VERSION {
        return Err(WireError::Version(prefix[4]));
    }
    let be = |i: usize| u32::from_be_bytes(prefix[i..i + 4].try_into().expect("4 bytes"));
    let (hlen, dlen, crc) = (be(5), be(9), be(13));
    if hlen > MAX_HEADER {
        return Err(WireError::TooLarge(hlen));
    }
    if dlen > MAX_DATA {
        return Err(WireError::TooLarge(dlen));
    }
    let mut header = vec![0u8; hlen as usize];
    r.read_exact(&mut header)?;
    let mut data = vec![0u8; dlen as usize];
    r.read_exact(&mut data)?;
    if checksum(prefix[4], &prefix[5..13], &header, &data) != crc {
        return Err(WireError::Checksum);
    }
    let msg = serde_json::from_slice(&header).map_err(|e| WireError::Decode(e.to_string()))?;
    Ok((
        Frame { msg, data },
        (PREFIX as u64) + u64::from(hlen) + u64::from(dlen),
    ))
}

/// A TCP connection speaking frames, counting the bytes each way.
pub struct Conn {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
    pub sent: u64,
    pub received: u64,
}

impl Conn {
    pub fn new(stream: std::net::TcpStream) -> std::io::Result<Conn> {
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        Ok(Conn {
            reader: std::io::BufReader::with_capacity(1 << 20, stream),
            writer,
            sent: 0,
            received: 0,
        })
    }

    /// A handle that can shut the connection down from another thread.
    pub fn handle(&self) -> std::io::Result<std::net::TcpStream> {
        self.writer.try_clone()
    }

    pub fn peer(&self) -> String {
        self.writer
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    }

    pub fn send(&mut self, msg: &Msg, data: &[u8]) -> Result<(), WireError> {
        self.sent += send(&mut self.writer, msg, data)?;
        Ok(())
    }

    pub fn recv(&mut self) -> Result<Frame, WireError> {
        let (frame, n) = recv(&mut self.reader)?;
        self.received += n;
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_every_flipped_bit_is_caught() {
        let msg = Msg::UpdateData {
            extents: vec![1, 7],
        };
        let data = vec![0xabu8; 300];
        let frame = encode(&msg, &data);
        let (got, n) = recv(&mut &frame[..]).expect("decodes");
        assert_eq!(got.msg, msg);
        assert_eq!(got.data, data);
        assert_eq!(n, frame.len() as u64);
        for bit in (0..frame.len() * 8).step_by(7) {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                recv(&mut &bad[..]).is_err(),
                "flipped bit {bit} was not caught"
            );
        }
    }

    #[test]
    fn other_versions_are_refused() {
        let mut frame = encode(&Msg::GroupDigests, &[]);
        frame[4] = 9;
        assert!(matches!(recv(&mut &frame[..]), Err(WireError::Version(9))));
    }
}
