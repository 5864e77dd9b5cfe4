//! PDU I/O for one connection: a reader that frames PDUs out of a `BytesMut`, and a writer
//! task that stamps sequence numbers and batches PDUs into few socket writes.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
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
    // (StatSN field, whether this PDU consumes a StatSN, ExpCmdSN field, MaxCmdSN field)
    let (sn, advance, e, m) = match pdu {
        Pdu::ScsiResponse(p) => (&mut p.stat_sn, true, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::DataIn(p) => {
            let has_status = p.status.is_some();
            if !has_status {
                p.stat_sn = 0;
                p.exp_cmd_sn = exp;
                p.max_cmd_sn = max;
                return;
            }
            (&mut p.stat_sn, true, &mut p.exp_cmd_sn, &mut p.max_cmd_sn)
        }
        // A ping of our own (ITT 0xffffffff) does not advance StatSN.
        Pdu::NopIn(p) => (
            &mut p.stat_sn,
            p.itt != 0xffff_ffff,
            &mut p.exp_cmd_sn,
            &mut p.max_cmd_sn,
        ),
        Pdu::R2t(p) => (&mut p.stat_sn, false, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::TaskMgmtResponse(p) => (&mut p.stat_sn, true, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::TextResponse(p) => (&mut p.stat_sn, true, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::LogoutResponse(p) => (&mut p.stat_sn, true, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::AsyncMessage(p) => (&mut p.stat_sn, true, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::Reject(p) => (&mut p.stat_sn, true, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::LoginResponse(p) => (&mut p.stat_sn, true, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        _ => return,
    };
    *sn = *stat_sn;
    if advance {
        *stat_sn = stat_sn.wrapping_add(1);
    }
    *e = exp;
    *m = max;
}

/// What the writer task shares with its connection.
#[derive(Default)]
pub struct WriterShared {
    /// The StatSN the writer has reached (for status reporting).
    pub stat_sn: AtomicU32,
    /// SCSI commands of the connection started and not yet ended ([`CommandRunning`]).
    pub commands_running: AtomicUsize,
}

/// Counts a command as running on its connection from [`CommandRunning::start`], when it is
/// accepted, until the guard drops with the end of its task, however it ends.
pub struct CommandRunning(Arc<WriterShared>);

impl CommandRunning {
    pub fn start(writer: &Arc<WriterShared>) -> Self {
        writer.commands_running.fetch_add(1, Ordering::Relaxed);
        Self(writer.clone())
    }
}

impl Drop for CommandRunning {
    fn drop(&mut self) {
        self.0.commands_running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many scheduler turns a batch of the writer waits at most for other commands of its
/// connection to queue their answers behind the ones it has.
const GATHER_TURNS: u32 = 8;

/// Whether the writer, with an answer in hand and nothing more queued, should give the other
/// commands a scheduler turn: only while other commands are still running (with one command at
/// a time, as at queue depth 1, it sends at once), and at most [`GATHER_TURNS`] times a batch.
/// `commands_running` counts the command just answered too until its task ends.
fn gather_more(commands_running: usize, turns: u32) -> bool {
    commands_running > 1 && turns < GATHER_TURNS
}

/// The writer task: drains `rx`, encodes, writes in batches. Ends on `Close`, on a socket
/// error, or when every sender is gone.
pub async fn run_writer(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outgoing>,
    sn: SnSource,
    mut stat_sn: u32,
    cfg: FrameConfig,
    shared: Arc<WriterShared>,
) -> std::io::Result<()> {
    const BATCH: usize = 512 * 1024;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut closing = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut turns = 0;
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
                // A send costs about as much for one answer as for several: with other
                // commands running, give them a turn to queue theirs for the same send; a
                // turn that brings nothing ends the batch.
                if next.is_none()
                    && gather_more(shared.commands_running.load(Ordering::Relaxed), turns)
                {
                    turns += 1;
                    tokio::task::yield_now().await;
                    next = rx.try_recv().ok();
                }
            }
        }
        shared.stat_sn.store(stat_sn, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::{gather_more, stamp, CommandRunning, WriterShared, GATHER_TURNS};
    use bytes::Bytes;
    use rewind_protocol::{NopIn, Pdu, R2t};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn only_status_pdus_consume_a_stat_sn() {
        let mut sn = 7;
        let mut ping = Pdu::NopIn(NopIn {
            lun: 0,
            itt: 0xffff_ffff,
            ttt: 1,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data: Bytes::new(),
        });
        stamp(&mut ping, &mut sn, 10, 20);
        assert_eq!(sn, 7, "a target ping does not advance StatSN");
        let mut r2t = Pdu::R2t(R2t {
            lun: 0,
            itt: 1,
            ttt: 2,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            r2t_sn: 0,
            buffer_offset: 0,
            desired_len: 512,
        });
        stamp(&mut r2t, &mut sn, 10, 20);
        assert!(
            matches!(r2t, Pdu::R2t(ref p) if p.stat_sn == 7 && p.exp_cmd_sn == 10 && p.max_cmd_sn == 20)
        );
        let mut reply = Pdu::NopIn(NopIn {
            lun: 0,
            itt: 5,
            ttt: 0xffff_ffff,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data: Bytes::new(),
        });
        stamp(&mut reply, &mut sn, 11, 21);
        assert!(matches!(reply, Pdu::NopIn(ref p) if p.stat_sn == 7));
        assert_eq!(sn, 8, "a NOP-In answering a ping carries status");
    }

    #[test]
    fn the_writer_waits_for_other_answers_only_while_other_commands_run() {
        assert!(
            !gather_more(0, 0),
            "nothing running (a NOP-In, a text answer)"
        );
        assert!(
            !gather_more(1, 0),
            "only the command just answered: queue depth 1 sends at once"
        );
        assert!(gather_more(2, 0));
        assert!(gather_more(32, GATHER_TURNS - 1));
        assert!(
            !gather_more(32, GATHER_TURNS),
            "a batch waits a bounded number of turns"
        );
    }

    #[test]
    fn a_command_counts_as_running_until_its_guard_drops() {
        let w = Arc::new(WriterShared::default());
        let a = CommandRunning::start(&w);
        let b = CommandRunning::start(&w);
        assert_eq!(w.commands_running.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(w.commands_running.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(w.commands_running.load(Ordering::Relaxed), 0);
    }
}
