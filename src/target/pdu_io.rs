//! PDU I/O for one connection: a reader that frames PDUs out of a `BytesMut`, and a writer
//! task that stamps sequence numbers and batches PDUs into few socket writes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use rewind_protocol::{decode, encode, DecodeError, FrameConfig, Pdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::cmd_window::CmdWindow;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed in the middle of a PDU")]
    Truncated,
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Reads whole PDUs off a socket. "Need more bytes" is not an error; EOF inside a PDU is.
pub struct PduReader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    pub cfg: FrameConfig,
}

impl PduReader {
    pub fn new(rd: OwnedReadHalf) -> PduReader {
        PduReader {
            rd,
            buf: BytesMut::with_capacity(64 * 1024),
            cfg: FrameConfig::default(),
        }
    }

    /// The next PDU, or `None` on a clean EOF between PDUs.
    pub async fn next(&mut self) -> Result<Option<Pdu>, ReadError> {
        loop {
            if let Some(pdu) = decode(&mut self.buf, &self.cfg)? {
                return Ok(Some(pdu));
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            let n = self.rd.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }
}

/// Sequence numbers the writer needs: the connection's StatSN and the session's window.
pub struct SnSource {
    pub window: Arc<std::sync::Mutex<CmdWindow>>,
}

impl SnSource {
    fn window(&self) -> (u32, u32) {
        match self.window.lock() {
            Ok(w) => (w.exp_cmd_sn(), w.max_cmd_sn()),
            Err(p) => {
                let w = p.into_inner();
                (w.exp_cmd_sn(), w.max_cmd_sn())
            }
        }
    }
}

/// A message for the writer task.
#[derive(Debug)]
pub enum Outgoing {
    Pdu(Pdu),
    /// Flush everything queued before this, then close the connection.
    Close,
}

/// Stamp StatSN / ExpCmdSN / MaxCmdSN. PDUs that carry status take a new StatSN; the others
/// carry the current one without advancing it (RFC 7143 section 4.2.2.2).
pub fn stamp(pdu: &mut Pdu, stat_sn: &mut u32, exp: u32, max: u32) {
    let mut take = |advance: bool| {
        let sn = *stat_sn;
        if advance {
            *stat_sn = stat_sn.wrapping_add(1);
        }
        sn
    };
    match pdu {
        Pdu::ScsiResponse(p) => {
            p.stat_sn = take(true);
            p.exp_cmd_sn = exp;
            p.max_cmd_sn = max;
        }
        Pdu::DataIn(p) => {
            p.stat_sn = if p.status.is_some() { take(true) } else { 0 };
            p.exp_cmd_sn = exp;
            p.max_cmd_sn = max;
        }
        Pdu::NopIn(p) => {
            // A ping of our own (ITT 0xffffffff) does not advance StatSN.
            p.stat_sn = take(p.itt != 0xffff_ffff);
            p.exp_cmd_sn = exp;
            p.max_cmd_sn = max;
        }
        Pdu::R2t(p) => {
            p.stat_sn = take(false);
            p.exp_cmd_sn = exp;
            p.max_cmd_sn = max;
        }
        Pdu::TaskMgmtResponse(p) => {
            p.stat_sn = take(true);
            p.exp_cmd_sn = exp;
            p.max_cmd_sn = max;
        }
        Pdu::TextResponse(p) => {
            p.stat_sn = take(true);
            p.exp_cmd_sn = exp;
            p.max_cmd_sn = max;
        }
        Pdu::LogoutResponse(p) => {
            p.stat_sn = take(true);
            p.exp_cmd_sn = exp;
            p.max_cmd_sn = max;
        }
        Pdu::AsyncMessage(p) => {
            p.stat_sn = take(true);
            p.exp_cmd_sn = exp;
            p.max_cmd_sn = max;
        }
        Pdu::Reject(p) => {
            p.stat_sn = take(true);
            p.exp_cmd_sn = exp;
            p.max_cmd_sn = max;
        }
        Pdu::LoginResponse(p) => {
            p.stat_sn = take(true);
            p.exp_cmd_sn = exp;
            p.max_cmd_sn = max;
        }
        _ => {}
    }
}

/// Counters shared with the connection for status reporting.
#[derive(Default)]
pub struct WriterStats {
    pub stat_sn: AtomicU32,
}

/// The writer task: drains `rx`, encodes, writes in batches. Ends on `Close`, on a socket
/// error, or when every sender is gone.
pub async fn run_writer(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outgoing>,
    sn: SnSource,
    mut stat_sn: u32,
    cfg: FrameConfig,
    stats: Arc<WriterStats>,
) -> std::io::Result<()> {
    const BATCH: usize = 512 * 1024;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut closing = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Outgoing::Pdu(mut pdu) => {
                    let (exp, max) = sn.window();
                    stamp(&mut pdu, &mut stat_sn, exp, max);
                    encode(&pdu, &cfg, &mut out);
                }
                Outgoing::Close => {
                    closing = true;
                    break;
                }
            }
            if out.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        stats.stat_sn.store(stat_sn, Ordering::Relaxed);
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
        }
        if closing {
            break;
        }
    }
    let _ = wr.shutdown().await;
    Ok(())
}
