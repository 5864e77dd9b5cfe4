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
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::lock;

pub const MAGIC: &[u8; 4] = b"RWRP";
/// Bumped on any incompatible change of framing or messages.
pub const VERSION: u8 = 2;
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
    /// Either side, at any time: "still here" after `keepalive` without sending anything.
    /// Receivers skip it.
    Keepalive,
    /// P→S, between updates: answer with `Pong` (the primary checks an idle link).
    Ping,
    /// S→P: the answer to `Ping`.
    Pong,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the link timed out {0}: the peer or the network between is down or stalled")]
    Timeout(&'static str),
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

/// How a link notices a dead peer: a keepalive goes out whenever nothing was sent for
/// `keepalive`, and a read or a write that makes no progress for `timeout` fails the link.
/// Both come from `[replication] keepalive` and `link_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub keepalive: Duration,
    pub timeout: Duration,
}

/// What the connection's two users (the session and its keepalive thread) share.
struct Shared {
    writer: Mutex<TcpStream>,
    sent: AtomicU64,
    last_sent: Mutex<Instant>,
}

impl Shared {
    fn send(&self, msg: &Msg, data: &[u8]) -> Result<(), WireError> {
        let frame = encode(msg, data);
        let mut w = lock(&self.writer);
        w.write_all(&frame).map_err(|e| timed_out(e, "sending"))?;
        w.flush()?;
        *lock(&self.last_sent) = Instant::now();
        self.sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn timed_out(e: std::io::Error, doing: &'static str) -> WireError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => WireError::Timeout(doing),
        _ => WireError::Io(e),
    }
}

/// A TCP connection speaking frames, counting the bytes each way. A background thread sends
/// a [`Msg::Keepalive`] whenever the session has sent nothing for `keepalive`, so a peer busy
/// with a long computation (digests of a large volume, applying an update) still shows it is
/// alive; [`Conn::recv`] skips keepalives. Reads and writes time out after `timeout`.
pub struct Conn {
    reader: std::io::BufReader<TcpStream>,
    shared: Arc<Shared>,
    peer: String,
    received: u64,
    last_heard: Instant,
    /// Dropped with the connection, which ends the keepalive thread.
    _stop: mpsc::Sender<()>,
}

impl Conn {
    pub fn new(stream: TcpStream, live: Liveness) -> std::io::Result<Conn> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(live.timeout))?;
        stream.set_write_timeout(Some(live.timeout))?;
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let shared = Arc::new(Shared {
            writer: Mutex::new(stream.try_clone()?),
            sent: AtomicU64::new(0),
            last_sent: Mutex::new(Instant::now()),
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let (ka, cut) = (shared.clone(), stream.try_clone()?);
        std::thread::Builder::new()
            .name("repl-keepalive".into())
            .spawn(move || loop {
                match stopped.recv_timeout(live.keepalive) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                if lock(&ka.last_sent).elapsed() >= live.keepalive
                    && ka.send(&Msg::Keepalive, &[]).is_err()
                {
                    // The session's next read or write fails at once instead of waiting.
                    let _ = cut.shutdown(std::net::Shutdown::Both);
                    return;
                }
            })?;
        Ok(Conn {
            reader: std::io::BufReader::with_capacity(1 << 20, stream),
            shared,
            peer,
            received: 0,
            last_heard: Instant::now(),
            _stop: stop,
        })
    }

    /// A handle that can shut the connection down from another thread.
    pub fn handle(&self) -> std::io::Result<TcpStream> {
        self.reader.get_ref().try_clone()
    }

    pub fn peer(&self) -> String {
        self.peer.clone()
    }

    /// Bytes sent and received so far, frames and keepalives included.
    pub fn wire_bytes(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed) + self.received
    }

    /// How long ago the peer last sent anything (a keepalive counts).
    pub fn quiet_for(&self) -> Duration {
        self.last_heard.elapsed()
    }

    pub fn send(&mut self, msg: &Msg, data: &[u8]) -> Result<(), WireError> {
        self.shared.send(msg, data)
    }

    /// The next frame that is not a keepalive.
    pub fn recv(&mut self) -> Result<Frame, WireError> {
        loop {
            let (frame, n) = recv(&mut self.reader).map_err(|e| match e {
                WireError::Io(e) => timed_out(e, "waiting for the peer"),
                e => e,
            })?;
            self.received += n;
            self.last_heard = Instant::now();
            if frame.msg != Msg::Keepalive {
                return Ok(frame);
            }
        }
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

    fn pair(live: Liveness) -> (Conn, Conn) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        (
            Conn::new(a, live).expect("conn"),
            Conn::new(b, live).expect("conn"),
        )
    }

    const QUICK: Liveness = Liveness {
        keepalive: Duration::from_millis(50),
        timeout: Duration::from_millis(300),
    };

    #[test]
    fn a_silent_peer_times_out_and_a_quiet_but_alive_one_does_not() {
        // The peer's keepalives arrive while it does nothing else for longer than the timeout.
        let (mut a, mut b) = pair(QUICK);
        let waiter = std::thread::spawn(move || {
            let got = a.recv().map(|f| f.msg);
            (got, a.wire_bytes())
        });
        std::thread::sleep(Duration::from_millis(900));
        b.send(&Msg::Pong, &[]).expect("send");
        let (got, bytes) = waiter.join().expect("join");
        assert_eq!(got.expect("alive peer"), Msg::Pong);
        let one = encode(&Msg::Pong, &[]).len() as u64;
        assert!(bytes > 3 * one, "keepalives went both ways ({bytes} bytes)");

        // A peer whose process is stuck (its socket open, nothing sent) fails the read.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let s = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (_silent, _) = l.accept().expect("accept");
        let mut c = Conn::new(s, QUICK).expect("conn");
        let start = Instant::now();
        assert!(matches!(c.recv(), Err(WireError::Timeout(_))));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn other_versions_are_refused() {
        let mut frame = encode(&Msg::GroupDigests, &[]);
        frame[4] = 9;
        assert!(matches!(recv(&mut &frame[..]), Err(WireError::Version(9))));
    }
}
