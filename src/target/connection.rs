//! The full feature phase of one connection: read PDUs, route them, answer the simple ones,
//! spawn a task per SCSI command, ping an idle initiator and drop a dead one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use rewind_protocol::frame::DecodeErrorKind;
use rewind_protocol::opcode::RejectReason;
use rewind_protocol::{
    AsyncMessage, DataOut, FrameConfig, LogoutRequest, LogoutResponse, NopIn, NopOut, Pdu, Reject,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::cmd_window::Admission;
use super::login::LoggedIn;
use super::negotiation::{ConnParams, SessionType};
use super::pdu_io::{Outgoing, PduReader, ReadError};
use super::session::{lock, ConnHandle, Session};
use super::text::TextState;
use super::TargetContext;

pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// What the tasks of this connection share with it.
pub struct ConnShared {
    pub ctx: Arc<TargetContext>,
    pub session: Arc<Session>,
    pub cid: u16,
    pub params: ConnParams,
    /// The address the initiator connected to (SendTargets answers with it).
    pub local_addr: Option<std::net::SocketAddr>,
    pub tx: mpsc::Sender<Outgoing>,
    /// Shared with the writer task (commands running, for batching their answers).
    pub writer: Arc<super::pdu_io::WriterShared>,
    /// Data-Out routes: ITT -> the task gathering that command's data.
    pub data_routes: Mutex<HashMap<u32, mpsc::UnboundedSender<DataOut>>>,
    next_ttt: AtomicU32,
    pub cancel: CancellationToken,
    /// Text exchange state (continued requests, paged responses).
    text: tokio::sync::Mutex<TextState>,
}

impl ConnShared {
    pub async fn send(&self, pdu: Pdu) -> bool {
        self.tx.send(Outgoing::Pdu(pdu)).await.is_ok()
    }

    /// A fresh Target Transfer Tag (never the reserved 0xffffffff).
    pub fn next_ttt(&self) -> u32 {
        loop {
            let t = self.next_ttt.fetch_add(1, Ordering::Relaxed);
            if t != RESERVED_TAG {
                return t;
            }
        }
    }

    pub fn reject(&self, reason: u8, header: Bytes) -> Pdu {
        crate::metrics::global().pdu_rejected();
        Pdu::Reject(Reject {
            reason,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data_sn_r2t_sn: 0,
            header,
        })
    }
}

/// The 48-byte header of a PDU we reject, re-encoded for the Reject's data segment.
pub fn header_of(pdu: &Pdu) -> Bytes {
    let mut out = bytes::BytesMut::new();
    rewind_protocol::encode(pdu, &FrameConfig::default(), &mut out);
    out.truncate(48);
    out.freeze()
}

/// Run the full feature phase until the connection ends.
pub async fn run(
    ctx: Arc<TargetContext>,
    mut reader: PduReader,
    wr: tokio::net::tcp::OwnedWriteHalf,
    login: LoggedIn,
    local_addr: Option<std::net::SocketAddr>,
) {
    let LoggedIn {
        session,
        cid,
        conn: params,
        stat_sn,
        cancel,
    } = login;
    reader.cfg = FrameConfig {
        header_digest: params.header_digest,
        data_digest: params.data_digest,
        max_recv_data_segment: params.target_max_recv,
    };
    let (tx, rx) = mpsc::channel(1024);
    let writer_cfg = FrameConfig {
        header_digest: params.header_digest,
        data_digest: params.data_digest,
        max_recv_data_segment: params.initiator_max_recv,
    };
    let writer_shared = Arc::new(super::pdu_io::WriterShared::default());
    let writer = tokio::spawn(super::pdu_io::run_writer(
        wr,
        rx,
        super::pdu_io::SnSource {
            window: session.window.clone(),
        },
        stat_sn,
        writer_cfg,
        writer_shared.clone(),
    ));
    // Connection reinstatement: a new login with the CID of a live connection replaces it.
    if let Some(old) = lock(&session.connections).insert(
        cid,
        ConnHandle {
            cancel: cancel.clone(),
            tx: tx.clone(),
        },
    ) {
        old.cancel.cancel();
    }
    let conn = Arc::new(ConnShared {
        ctx: ctx.clone(),
        session: session.clone(),
        cid,
        params,
        local_addr,
        tx,
        writer: writer_shared,
        data_routes: Mutex::new(HashMap::new()),
        next_ttt: AtomicU32::new(1),
        cancel: cancel.clone(),
        text: tokio::sync::Mutex::new(TextState::default()),
    });
    let interval = ctx.iscsi.nop_in_interval;
    let timeout = ctx.iscsi.nop_in_timeout;
    let mut last_heard = Instant::now();
    let mut last_ping = Instant::now();
    let mut tick = tokio::time::interval(if interval.is_zero() {
        std::time::Duration::from_secs(3600)
    } else {
        interval
            .min(timeout)
            .max(std::time::Duration::from_millis(100))
            / 2
    });
    let mut logout_requested = false;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = session.cancel.cancelled() => break,
            _ = ctx.shutdown.cancelled(), if !logout_requested => {
                // Ask the initiator to log out; drop the connection if it does not within Time2Wait+grace.
                logout_requested = true;
                let _ = conn.send(Pdu::AsyncMessage(AsyncMessage {
                    lun: 0, stat_sn: 0, exp_cmd_sn: 0, max_cmd_sn: 0, event: 1, vcode: 0,
                    param1: 0, param2: 0, param3: 2, data: Bytes::new(),
                })).await;
                let c = cancel.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                    c.cancel();
                });
            }
            _ = tick.tick(), if !interval.is_zero() => {
                let idle = last_heard.elapsed();
                if idle >= timeout {
                    warn!(tsih = session.tsih, cid, "initiator did not answer pings; dropping the connection");
                    break;
                }
                if idle >= interval && last_ping.elapsed() >= interval {
                    last_ping = Instant::now();
                    let ttt = conn.next_ttt();
                    let _ = conn.send(Pdu::NopIn(NopIn {
                        lun: 0, itt: RESERVED_TAG, ttt, stat_sn: 0, exp_cmd_sn: 0, max_cmd_sn: 0, data: Bytes::new(),
                    })).await;
                }
            }
            next = reader.next() => {
                match next {
                    Ok(Some(pdu)) => {
                        last_heard = Instant::now();
                        match dispatch(&conn, pdu).await {
                            Flow::Continue => {}
                            Flow::Close => break,
                        }
                    }
                    Ok(None) => {
                        debug!(tsih = session.tsih, cid, "initiator closed the connection");
                        break;
                    }
                    Err(ReadError::Decode(e)) if e.consumed => {
                        last_heard = Instant::now();
                        let reason = match e.kind {
                            DecodeErrorKind::DataDigest => RejectReason::DATA_DIGEST_ERROR,
                            DecodeErrorKind::UnknownOpcode(_) => RejectReason::COMMAND_NOT_SUPPORTED,
                            _ => RejectReason::PROTOCOL_ERROR,
                        };
                        warn!(tsih = session.tsih, cid, error = %e.kind, "rejecting PDU");
                        let header = e.header.map(|h| Bytes::copy_from_slice(&h)).unwrap_or_default();
                        let _ = conn.send(conn.reject(reason, header)).await;
                    }
                    Err(e) => {
                        warn!(tsih = session.tsih, cid, error = %e, "closing connection");
                        break;
                    }
                }
            }
        }
    }
    // Tear down: this connection's tasks go with it (ErrorRecoveryLevel 0).
    let routes: Vec<u32> = lock(&conn.data_routes).keys().copied().collect();
    for itt in routes {
        if let Some(t) = lock(&session.tasks).get(&itt) {
            t.try_abort();
        }
    }
    lock(&conn.data_routes).clear();
    let last = {
        let mut conns = lock(&session.connections);
        // Remove our own entry only, not that of a connection that reinstated this CID.
        if conns.get(&cid).is_some_and(|h| h.tx.same_channel(&conn.tx)) {
            conns.remove(&cid);
        }
        conns.is_empty()
    };
    let _ = conn.tx.send(Outgoing::Close).await;
    drop(conn);
    let _ = writer.await;
    if last {
        info!(tsih = session.tsih, initiator = %session.initiator_name, "session closed");
        ctx.sessions.remove(&session);
        session.close();
    }
}

pub enum Flow {
    Continue,
    Close,
}

/// Gate a non-immediate request on the session's command window. SCSI commands (`holds_slot`)
/// keep a slot of it until they finish.
fn admit(session: &Session, immediate: bool, cmd_sn: u32, holds_slot: bool) -> Admission {
    if immediate {
        Admission::Now
    } else {
        lock(&session.window).admit(cmd_sn, holds_slot)
    }
}

async fn dispatch(conn: &Arc<ConnShared>, pdu: Pdu) -> Flow {
    let session = &conn.session;
    let discovery = session.kind == SessionType::Discovery;
    match pdu {
        Pdu::ScsiCommand(cmd) if !discovery => {
            let admission = admit(session, cmd.immediate, cmd.cmd_sn, true);
            if matches!(admission, Admission::Ignore) {
                debug!(
                    cmd_sn = cmd.cmd_sn,
                    "command outside the CmdSN window ignored"
                );
                return Flow::Continue;
            }
            super::scsi_task::start(conn.clone(), cmd, admission);
            Flow::Continue
        }
        Pdu::DataOut(d) => {
            let route = lock(&conn.data_routes).get(&d.itt).cloned();
            match route {
                Some(tx) => {
                    if tx.send(d).is_err() {
                        lock(&conn.data_routes).retain(|_, t| !t.is_closed());
                    }
                }
                None => debug!(itt = d.itt, "Data-Out for no task ignored"),
            }
            Flow::Continue
        }
        Pdu::NopOut(nop) => {
            if nop.itt == RESERVED_TAG {
                // The answer to one of our pings (or a bare ping that wants no answer).
                return Flow::Continue;
            }
            let admission = admit(session, nop.immediate, nop.cmd_sn, false);
            run_admitted(conn, admission, move |conn| async move {
                nop_out(&conn, nop).await
            })
            .await
        }
        Pdu::TaskMgmtRequest(req) if !discovery => {
            let admission = admit(session, req.immediate, req.cmd_sn, false);
            if matches!(admission, Admission::Ignore) {
                return Flow::Continue;
            }
            super::tmf::start(conn.clone(), req, admission);
            Flow::Continue
        }
        Pdu::TextRequest(req) => {
            let admission = admit(session, req.immediate, req.cmd_sn, false);
            run_admitted(conn, admission, move |conn| async move {
                let mut text = conn.text.lock().await;
                super::text::handle(&conn, &mut text, req).await
            })
            .await
        }
        Pdu::LogoutRequest(req) => {
            let admission = admit(session, req.immediate, req.cmd_sn, false);
            run_admitted(conn, admission, move |conn| async move {
                logout(&conn, req).await
            })
            .await
        }
        Pdu::Snack(_) => {
            let header = header_of(&pdu);
            let _ = conn
                .send(conn.reject(RejectReason::SNACK_REJECT, header))
                .await;
            Flow::Continue
        }
        other => {
            // Login in full feature phase, target-only opcodes, SCSI in a discovery session.
            let header = header_of(&other);
            let reason = if matches!(other, Pdu::LoginRequest(_)) || discovery {
                RejectReason::PROTOCOL_ERROR
            } else {
                RejectReason::COMMAND_NOT_SUPPORTED
            };
            warn!(
                tsih = session.tsih,
                opcode = other.opcode().0,
                "rejecting PDU not allowed here"
            );
            let _ = conn.send(conn.reject(reason, header)).await;
            Flow::Continue
        }
    }
}

/// Run a request now, or, if it must wait for its CmdSN turn, on a task of its own: the read
/// loop never waits for a gap to fill (a lost or bogus CmdSN would otherwise stall it and the
/// connection could never notice its peer leaving).
async fn run_admitted<F, Fut>(conn: &Arc<ConnShared>, admission: Admission, handle: F) -> Flow
where
    F: FnOnce(Arc<ConnShared>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Flow> + Send + 'static,
{
    match admission {
        Admission::Ignore => Flow::Continue,
        Admission::Now => handle(conn.clone()).await,
        Admission::Later(turn) => {
            let conn = conn.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = conn.cancel.cancelled() => return,
                    _ = conn.session.cancel.cancelled() => return,
                    t = turn => if t.is_err() { return },
                }
                if let Flow::Close = handle(conn.clone()).await {
                    conn.cancel.cancel();
                }
            });
            Flow::Continue
        }
    }
}

async fn nop_out(conn: &Arc<ConnShared>, nop: NopOut) -> Flow {
    let reply = Pdu::NopIn(NopIn {
        lun: nop.lun,
        itt: nop.itt,
        ttt: RESERVED_TAG,
        stat_sn: 0,
        exp_cmd_sn: 0,
        max_cmd_sn: 0,
        data: nop.data,
    });
    if conn.send(reply).await {
        Flow::Continue
    } else {
        Flow::Close
    }
}

async fn logout(conn: &Arc<ConnShared>, req: LogoutRequest) -> Flow {
    let session = &conn.session;
    let (response, close_self) = match req.reason {
        0 => (0, true),
        1 if req.cid == conn.cid => (0, true),
        1 => match lock(&session.connections).get(&req.cid) {
            Some(other) => {
                other.cancel.cancel();
                (0, false)
            }
            None => (1, false),
        },
        2 => (2, false),
        _ => {
            let _ = conn
                .send(conn.reject(
                    RejectReason::INVALID_PDU_FIELD,
                    header_of(&Pdu::LogoutRequest(req)),
                ))
                .await;
            return Flow::Continue;
        }
    };
    let reply = Pdu::LogoutResponse(LogoutResponse {
        response,
        itt: req.itt,
        stat_sn: 0,
        exp_cmd_sn: 0,
        max_cmd_sn: 0,
        time2wait: 0,
        time2retain: 0,
    });
    if req.reason == 0 && response == 0 {
        // Session close: abort outstanding tasks first, then answer, then close every connection.
        session.abort_tasks(|_, _| true, None).await;
        let _ = conn.send(reply).await;
        info!(tsih = session.tsih, "logout: session closed");
        let others: Vec<ConnHandle> = lock(&session.connections)
            .iter()
            .filter(|(c, _)| **c != conn.cid)
            .map(|(_, h)| h.clone())
            .collect();
        for h in others {
            h.cancel.cancel();
        }
        return Flow::Close;
    }
    let _ = conn.send(reply).await;
    if close_self {
        Flow::Close
    } else {
        Flow::Continue
    }
}
