//! The login phase of one connection (RFC 7143 section 6): security negotiation, operational
//! negotiation, then the full feature phase. The stage rules live in [`check_stage`] (pure);
//! [`run`] drives them over the socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use rewind_protocol::opcode::LoginStatus;
use rewind_protocol::text::{encode_pairs, parse_pairs};
use rewind_protocol::{encode, FrameConfig, LoginRequest, LoginResponse, Pdu};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::cmd_window::CmdWindow;
use super::negotiation::{ConnParams, NegotiationError, Negotiator, SessionType};
use super::pdu_io::{PduReader, ReadError};
use super::session::{isid_hex, lock, Session};
use super::TargetContext;
use crate::auth::{ChapServer, ChapStep};
use crate::scsi::Nexus;

/// Login stages (CSG/NSG values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Security = 0,
    Operational = 1,
    FullFeature = 3,
}

impl Stage {
    fn from_wire(v: u8) -> Option<Stage> {
        match v {
            0 => Some(Stage::Security),
            1 => Some(Stage::Operational),
            3 => Some(Stage::FullFeature),
            _ => None,
        }
    }
}

/// Where the login stands after one request: the stage the response reports and the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageStep {
    pub current: Stage,
    /// `Some(next)` when the response sets the T bit.
    pub transit_to: Option<Stage>,
}

/// The stage machine: `(stage we are in, request CSG/T/NSG) -> step`, or the login status to fail with.
pub fn check_stage(
    current: Option<Stage>,
    csg: u8,
    transit: bool,
    nsg: u8,
) -> Result<StageStep, LoginStatus> {
    let csg = Stage::from_wire(csg).ok_or(LoginStatus::INITIATOR_ERROR)?;
    if csg == Stage::FullFeature {
        return Err(LoginStatus::INITIATOR_ERROR);
    }
    match current {
        // The first request may start in either stage.
        None => {}
        Some(cur) if cur == csg => {}
        // Moving on without having been granted the transit.
        Some(_) => return Err(LoginStatus::INITIATOR_ERROR),
    }
    if !transit {
        return Ok(StageStep {
            current: csg,
            transit_to: None,
        });
    }
    let next = Stage::from_wire(nsg).ok_or(LoginStatus::INITIATOR_ERROR)?;
    if (next as u8) <= (csg as u8) {
        return Err(LoginStatus::INITIATOR_ERROR);
    }
    Ok(StageStep {
        current: csg,
        transit_to: Some(next),
    })
}

/// A connection that reached the full feature phase.
pub struct LoggedIn {
    pub session: Arc<Session>,
    pub cid: u16,
    pub conn: ConnParams,
    /// The next StatSN for this connection.
    pub stat_sn: u32,
    pub cancel: CancellationToken,
}

pub enum LoginEnd {
    FullFeature(LoggedIn),
    /// The login failed; the failure response was sent.
    Failed(LoginStatus),
    /// The initiator went away.
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("socket: {0}")]
    Write(#[from] std::io::Error),
    #[error("expected a Login Request, got opcode {0:#04x}")]
    NotLogin(u8),
}

/// Text gathered across Login Requests with the C bit; bounded.
const MAX_LOGIN_TEXT: usize = 64 * 1024;

struct Login<'a> {
    ctx: &'a Arc<TargetContext>,
    neg: Negotiator,
    stage: Option<Stage>,
    isid: [u8; 6],
    tsih: u16,
    cid: u16,
    first_cmd_sn: u32,
    stat_sn: u32,
    text: BytesMut,
    sent_tpgt: bool,
    existing: Option<Arc<Session>>,
    /// CHAP in progress, when the target (or discovery) requires it.
    chap: Option<ChapServer>,
}

type LoginFailure = (LoginStatus, Vec<(String, String)>);

impl Login<'_> {
    /// Answer one complete request: negotiation, first-request checks, authentication.
    /// Returns the keys to send and the stage step (a transit may be held back until CHAP is done).
    fn answer(
        &mut self,
        req: &LoginRequest,
        text: &[u8],
        mut step: StageStep,
        first: bool,
    ) -> Result<(Vec<(String, String)>, StageStep), LoginFailure> {
        let plain = |status: LoginStatus| (status, Vec::new());
        let pairs = parse_pairs(text).map_err(|_| plain(LoginStatus::INITIATOR_ERROR))?;
        let mut answers = self
            .neg
            .process(&pairs, first)
            .map_err(|e| plain(negotiation_status(&e)))?;
        if first {
            self.check_first(req).map_err(plain)?;
            self.chap = self.required_chap().map_err(plain)?;
        }
        if let Some(chap) = self.chap.as_mut() {
            if let Some(offer) = pairs
                .iter()
                .find(|(k, _)| k == "AuthMethod")
                .map(|(_, v)| v)
            {
                if !offer.split(',').any(|m| m.trim() == "CHAP") {
                    info!(initiator = ?self.neg.declared.initiator_name, "CHAP required but not offered");
                    return Err(plain(LoginStatus::AUTHENTICATION_FAILURE));
                }
                for (k, v) in answers.iter_mut() {
                    if k == "AuthMethod" {
                        *v = "CHAP".into();
                    }
                }
            }
            if step.current == Stage::Security {
                match chap.step(&pairs) {
                    Ok(ChapStep::Continue(keys)) => {
                        answers.extend(keys);
                        step.transit_to = None;
                    }
                    Ok(ChapStep::Done(keys)) => answers.extend(keys),
                    Err(e) => {
                        info!(initiator = ?self.neg.declared.initiator_name, error = %e, "CHAP authentication failed");
                        return Err((e.login_status(), e.reply_keys()));
                    }
                }
            }
            let leaving = step.current != Stage::Security || step.transit_to.is_some();
            if leaving && !chap.is_done() {
                info!(initiator = ?self.neg.declared.initiator_name, "left the security stage without authenticating");
                return Err(plain(LoginStatus::AUTHENTICATION_FAILURE));
            }
        }
        if step.current == Stage::Operational {
            self.neg.declare_mrdsl(&mut answers);
        }
        if !self.sent_tpgt && self.neg.session_type() == SessionType::Normal {
            self.sent_tpgt = true;
            answers.push((
                "TargetPortalGroupTag".into(),
                self.ctx.portal_group_tag.to_string(),
            ));
        }
        Ok((answers, step))
    }

    /// The CHAP credentials this login must prove, after the ACL check.
    fn required_chap(&self) -> Result<Option<ChapServer>, LoginStatus> {
        let auth = self.ctx.auth();
        let initiator = self
            .neg
            .declared
            .initiator_name
            .as_deref()
            .unwrap_or_default();
        let cfg = match self.neg.session_type() {
            SessionType::Discovery => auth.discovery.clone(),
            SessionType::Normal => {
                let target = self.neg.declared.target_name.as_deref().unwrap_or_default();
                if !auth.policy.allows(target, initiator) {
                    info!(
                        initiator,
                        target, "initiator not in the target's allowed list"
                    );
                    return Err(LoginStatus::AUTHORIZATION_FAILURE);
                }
                auth.chap_for_target(target).cloned()
            }
        };
        Ok(cfg.map(ChapServer::new))
    }

    fn response(
        &mut self,
        req: &LoginRequest,
        status: LoginStatus,
        step: Option<StageStep>,
        data: Bytes,
    ) -> Pdu {
        let (csg, transit, nsg) = match step {
            Some(s) => (
                s.current as u8,
                s.transit_to.is_some(),
                s.transit_to.map_or(0, |n| n as u8),
            ),
            None => (req.csg, false, 0),
        };
        let stat_sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        let exp = self
            .existing
            .as_ref()
            .map_or(self.first_cmd_sn, |s| lock(&s.window).exp_cmd_sn());
        let depth = self.ctx.iscsi.queue_depth.max(1);
        Pdu::LoginResponse(LoginResponse {
            transit,
            cont: false,
            csg,
            nsg,
            version_max: 0,
            version_active: 0,
            isid: self.isid,
            tsih: if transit && nsg == Stage::FullFeature as u8 {
                self.tsih
            } else {
                self.existing.as_ref().map_or(0, |s| s.tsih)
            },
            itt: req.itt,
            stat_sn,
            exp_cmd_sn: exp,
            max_cmd_sn: exp.wrapping_add(depth - 1),
            status_class: status.class(),
            status_detail: status.detail(),
            data,
        })
    }

    /// Checks of the first request: who is logging in, and to what.
    fn check_first(&mut self, req: &LoginRequest) -> Result<(), LoginStatus> {
        if req.version_min > 0 {
            return Err(LoginStatus::UNSUPPORTED_VERSION);
        }
        let d = &self.neg.declared;
        if d.initiator_name.as_deref().is_none_or(str::is_empty) {
            return Err(LoginStatus::MISSING_PARAMETER);
        }
        if self.neg.session_type() == SessionType::Normal {
            let name = d
                .target_name
                .as_deref()
                .ok_or(LoginStatus::MISSING_PARAMETER)?;
            if self.ctx.target(name).is_none() {
                return Err(LoginStatus::NOT_FOUND);
            }
        }
        if req.tsih != 0 {
            let s = self
                .ctx
                .sessions
                .get(req.tsih)
                .ok_or(LoginStatus::SESSION_DOES_NOT_EXIST)?;
            let same_initiator = d
                .initiator_name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&s.initiator_name));
            if s.isid != req.isid || !same_initiator || s.kind != self.neg.session_type() {
                return Err(LoginStatus::SESSION_DOES_NOT_EXIST);
            }
            if s.target_name().map(str::to_ascii_lowercase)
                != d.target_name.as_deref().map(str::to_ascii_lowercase)
            {
                return Err(LoginStatus::SESSION_DOES_NOT_EXIST);
            }
            let conns = lock(&s.connections);
            if !conns.contains_key(&req.cid) && conns.len() >= s.params.max_connections as usize {
                return Err(LoginStatus::TOO_MANY_CONNECTIONS);
            }
            drop(conns);
            self.tsih = s.tsih;
            self.existing = Some(s);
        }
        Ok(())
    }

    /// Build the session (or join the existing one) at the transit to the full feature phase.
    fn enter_full_feature(&mut self, local: SocketAddr) -> Result<LoggedIn, LoginStatus> {
        self.neg.finish();
        let cancel = CancellationToken::new();
        let session = match self.existing.clone() {
            Some(s) => s,
            None => {
                if self.ctx.sessions.len() >= self.ctx.iscsi.max_sessions as usize {
                    info!(
                        max = self.ctx.iscsi.max_sessions,
                        "session limit reached; login refused"
                    );
                    return Err(LoginStatus::OUT_OF_RESOURCES);
                }
                let tsih = self
                    .ctx
                    .sessions
                    .allocate_tsih()
                    .ok_or(LoginStatus::OUT_OF_RESOURCES)?;
                self.tsih = tsih;
                let initiator_name = self.neg.declared.initiator_name.clone().unwrap_or_default();
                let kind = self.neg.session_type();
                let target = match kind {
                    SessionType::Normal => {
                        let name = self.neg.declared.target_name.as_deref().unwrap_or_default();
                        Some(self.ctx.target(name).ok_or(LoginStatus::TARGET_REMOVED)?)
                    }
                    SessionType::Discovery => None,
                };
                let target_name = target.as_ref().map_or_else(String::new, |t| t.name.clone());
                let initiator_port = format!("{},i,0x{}", initiator_name, isid_hex(&self.isid));
                let target_port = format!("{},t,0x{:04x}", target_name, self.ctx.portal_group_tag);
                let nexus = Arc::new(Nexus {
                    id: self.ctx.nexus_id(&initiator_port, &target_port),
                    initiator_port,
                    target_port,
                    relative_port: self.ctx.portal_group_tag,
                });
                let session = Arc::new(Session {
                    tsih,
                    isid: self.isid,
                    initiator_name,
                    kind,
                    target,
                    params: self.neg.session.clone(),
                    nexus,
                    window: Arc::new(Mutex::new(CmdWindow::new(
                        self.first_cmd_sn,
                        self.ctx.iscsi.queue_depth,
                    ))),
                    tasks: Mutex::new(HashMap::new()),
                    connections: Mutex::new(HashMap::new()),
                    cancel: CancellationToken::new(),
                });
                if let Some(old) = self.ctx.sessions.insert(session.clone()) {
                    info!(
                        old_tsih = old.tsih,
                        new_tsih = session.tsih,
                        "session reinstated"
                    );
                }
                session
            }
        };
        debug!(%local, tsih = session.tsih, cid = self.cid, "login complete");
        Ok(LoggedIn {
            session,
            cid: self.cid,
            conn: self.neg.conn.clone(),
            stat_sn: self.stat_sn,
            cancel,
        })
    }
}

fn negotiation_status(e: &NegotiationError) -> LoginStatus {
    match e {
        NegotiationError::DeclaredTooLate(_) | NegotiationError::InvalidValue { .. } => {
            LoginStatus::INITIATOR_ERROR
        }
    }
}

async fn send(wr: &mut OwnedWriteHalf, pdu: &Pdu) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(512);
    // Digests start only after the login completes.
    encode(pdu, &FrameConfig::default(), &mut out);
    wr.write_all(&out).await
}

/// Run the login of a new connection to its end.
pub async fn run(
    ctx: &Arc<TargetContext>,
    reader: &mut PduReader,
    wr: &mut OwnedWriteHalf,
    local: SocketAddr,
) -> Result<LoginEnd, LoginError> {
    let mut login = Login {
        ctx,
        neg: Negotiator::new(ctx.iscsi.clone()),
        stage: None,
        isid: [0; 6],
        tsih: 0,
        cid: 0,
        first_cmd_sn: 0,
        stat_sn: 0,
        text: BytesMut::new(),
        sent_tpgt: false,
        existing: None,
        chap: None,
    };
    let mut first = true;
    loop {
        let req = match reader.next().await? {
            None => return Ok(LoginEnd::Closed),
            Some(Pdu::LoginRequest(r)) => r,
            Some(other) => return Err(LoginError::NotLogin(other.opcode().0)),
        };
        if first {
            login.isid = req.isid;
            login.cid = req.cid;
            login.first_cmd_sn = req.cmd_sn;
            login.stat_sn = req.exp_stat_sn;
        }
        // Every failure ends the login here, with its status and any keys to explain it.
        match login.request(&req, &mut first, local) {
            Ok(Next::Respond(pdu)) => send(wr, &pdu).await?,
            Ok(Next::FullFeature(pdu, logged_in)) => {
                send(wr, &pdu).await?;
                return Ok(LoginEnd::FullFeature(LoggedIn {
                    stat_sn: login.stat_sn,
                    ..logged_in
                }));
            }
            Err((status, keys)) => {
                let pdu = login.response(&req, status, None, Bytes::from(encode_pairs(&keys)));
                send(wr, &pdu).await?;
                return Ok(LoginEnd::Failed(status));
            }
        }
    }
}

/// Refuse a connection the target has no room for: if its first PDU (within `wait`) is a
/// Login Request, answer it with Target Error / Out of Resources (0x0302), so the initiator
/// logs why and retries later; then close.
pub async fn refuse_for_resources(stream: tokio::net::TcpStream, wait: std::time::Duration) {
    let (rd, mut wr) = stream.into_split();
    let mut reader = PduReader::new(rd);
    let Ok(Ok(Some(Pdu::LoginRequest(req)))) = tokio::time::timeout(wait, reader.next()).await
    else {
        return;
    };
    let status = LoginStatus::OUT_OF_RESOURCES;
    let pdu = Pdu::LoginResponse(LoginResponse {
        transit: false,
        cont: false,
        csg: req.csg,
        nsg: 0,
        version_max: 0,
        version_active: 0,
        isid: req.isid,
        tsih: 0,
        itt: req.itt,
        stat_sn: req.exp_stat_sn,
        exp_cmd_sn: req.cmd_sn,
        max_cmd_sn: req.cmd_sn,
        status_class: status.class(),
        status_detail: status.detail(),
        data: Bytes::new(),
    });
    let _ = send(&mut wr, &pdu).await;
}

/// What to do after one Login Request.
enum Next {
    /// Send this response and read the next request.
    Respond(Pdu),
    /// Send this (final) response; the connection is in the full feature phase.
    FullFeature(Pdu, LoggedIn),
}

impl Login<'_> {
    /// One Login Request through the stage machine, continuation, negotiation and authentication.
    fn request(
        &mut self,
        req: &LoginRequest,
        first: &mut bool,
        local: SocketAddr,
    ) -> Result<Next, LoginFailure> {
        let plain = |status: LoginStatus| (status, Vec::new());
        if !*first && (req.isid != self.isid || req.cid != self.cid) {
            return Err(plain(LoginStatus::INITIATOR_ERROR));
        }
        let step =
            check_stage(self.stage, req.csg, req.transit && !req.cont, req.nsg).map_err(plain)?;
        if self.text.len() + req.data.len() > MAX_LOGIN_TEXT {
            return Err(plain(LoginStatus::OUT_OF_RESOURCES));
        }
        self.text.extend_from_slice(&req.data);
        if req.cont {
            // More text follows: acknowledge with an empty response in the same stage.
            self.stage = Some(step.current);
            let stay = StageStep {
                current: step.current,
                transit_to: None,
            };
            return Ok(Next::Respond(self.response(
                req,
                LoginStatus::SUCCESS,
                Some(stay),
                Bytes::new(),
            )));
        }
        let text = std::mem::take(&mut self.text);
        let (answers, step) = self.answer(req, &text, step, *first)?;
        *first = false;
        self.stage = Some(step.transit_to.unwrap_or(step.current));
        let data = Bytes::from(encode_pairs(&answers));
        if step.transit_to == Some(Stage::FullFeature) {
            let logged_in = self.enter_full_feature(local).map_err(plain)?;
            let pdu = self.response(req, LoginStatus::SUCCESS, Some(step), data);
            return Ok(Next::FullFeature(pdu, logged_in));
        }
        Ok(Next::Respond(self.response(
            req,
            LoginStatus::SUCCESS,
            Some(step),
            data,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_machine_rules() {
        let step = check_stage(None, 0, true, 1).expect("security -> operational");
        assert_eq!(step.transit_to, Some(Stage::Operational));
        assert!(
            check_stage(None, 1, true, 3).is_ok(),
            "may start in operational stage"
        );
        assert!(
            check_stage(None, 0, true, 3).is_ok(),
            "may skip the operational stage"
        );
        assert_eq!(
            check_stage(None, 1, true, 0),
            Err(LoginStatus::INITIATOR_ERROR),
            "no going back"
        );
        assert_eq!(
            check_stage(None, 0, true, 2),
            Err(LoginStatus::INITIATOR_ERROR),
            "2 is reserved"
        );
        assert_eq!(
            check_stage(None, 3, false, 0),
            Err(LoginStatus::INITIATOR_ERROR)
        );
        assert_eq!(
            check_stage(Some(Stage::Security), 1, false, 0),
            Err(LoginStatus::INITIATOR_ERROR),
            "transit not granted"
        );
        let stay = check_stage(Some(Stage::Operational), 1, false, 3).expect("stay");
        assert_eq!(stay.transit_to, None);
    }
}
