//! Text requests in the full feature phase: SendTargets discovery (RFC 7143 Appendix C) and
//! long responses split across PDUs (C bit, continued with the Target Transfer Tag).

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use rewind_protocol::opcode::RejectReason;
use rewind_protocol::text::{encode_pairs, parse_pairs};
use rewind_protocol::{Pdu, TextRequest, TextResponse};

use super::connection::{header_of, ConnShared, Flow, RESERVED_TAG};
use super::negotiation::{IRRELEVANT, NOT_UNDERSTOOD};
use super::TargetContext;

/// Text state of one connection: a request being continued, a response being paged out.
#[derive(Default)]
pub struct TextState {
    request: BytesMut,
    pending: Option<(u32, Bytes)>,
}

const MAX_TEXT: usize = 64 * 1024;

/// The SendTargets answer: each visible target with its portals.
pub fn send_targets(
    ctx: &TargetContext,
    initiator: &str,
    which: &str,
    session_target: Option<&str>,
    local: Option<SocketAddr>,
) -> Vec<(String, String)> {
    let auth = ctx.auth();
    let mut out = Vec::new();
    let portals = ctx.portals.read().map(|p| p.clone()).unwrap_or_default();
    for t in ctx.targets() {
        let wanted = match which {
            "All" => true,
            "" => session_target.is_some_and(|s| s.eq_ignore_ascii_case(&t.name)),
            name => name.eq_ignore_ascii_case(&t.name),
        };
        // Targets this initiator may not log in to are not shown at all.
        if !wanted || !auth.policy.allows(&t.name, initiator) {
            continue;
        }
        out.push(("TargetName".to_string(), t.name.clone()));
        for p in &portals {
            let addr = match (p.ip().is_unspecified(), local) {
                (true, Some(l)) => SocketAddr::new(l.ip(), p.port()),
                _ => *p,
            };
            let host = match addr {
                SocketAddr::V4(a) => a.to_string(),
                SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
            };
            out.push((
                "TargetAddress".to_string(),
                format!("{host},{}", ctx.portal_group_tag),
            ));
        }
    }
    out
}

pub async fn handle(conn: &ConnShared, state: &mut TextState, req: TextRequest) -> Flow {
    let limit = conn.params.initiator_max_recv.max(512) as usize;
    if req.ttt != RESERVED_TAG {
        // The initiator asks for the next part of a long response.
        match state.pending.take() {
            Some((ttt, rest)) if ttt == req.ttt => {
                return page(conn, state, &req, rest, limit).await
            }
            _ => {
                let _ = conn
                    .send(conn.reject(
                        RejectReason::INVALID_PDU_FIELD,
                        header_of(&Pdu::TextRequest(req)),
                    ))
                    .await;
                return Flow::Continue;
            }
        }
    }
    state.pending = None;
    if state.request.len() + req.data.len() > MAX_TEXT {
        state.request.clear();
        let _ = conn
            .send(conn.reject(
                RejectReason::PROTOCOL_ERROR,
                header_of(&Pdu::TextRequest(req)),
            ))
            .await;
        return Flow::Continue;
    }
    state.request.extend_from_slice(&req.data);
    if req.cont {
        let ttt = conn.next_ttt();
        let _ = conn
            .send(text_response(&req, ttt, false, false, Bytes::new()))
            .await;
        return Flow::Continue;
    }
    let text = std::mem::take(&mut state.request);
    let Ok(pairs) = parse_pairs(&text) else {
        let _ = conn
            .send(conn.reject(
                RejectReason::PROTOCOL_ERROR,
                header_of(&Pdu::TextRequest(req)),
            ))
            .await;
        return Flow::Continue;
    };
    let mut answers = Vec::new();
    for (key, value) in &pairs {
        match key.as_str() {
            "SendTargets" => {
                let local = conn.local_addr;
                answers.extend(send_targets(
                    &conn.ctx,
                    &conn.session.initiator_name,
                    value,
                    conn.session.target_name(),
                    local,
                ));
            }
            // Renegotiation in the full feature phase is not offered: keep the login's values.
            "MaxRecvDataSegmentLength" => {
                answers.push((key.clone(), conn.params.target_max_recv.to_string()))
            }
            k if k.starts_with("X-") || k.starts_with("X#") => {
                answers.push((key.clone(), NOT_UNDERSTOOD.into()))
            }
            "HeaderDigest"
            | "DataDigest"
            | "MaxConnections"
            | "InitialR2T"
            | "ImmediateData"
            | "MaxBurstLength"
            | "FirstBurstLength"
            | "DefaultTime2Wait"
            | "DefaultTime2Retain"
            | "MaxOutstandingR2T"
            | "DataPDUInOrder"
            | "DataSequenceInOrder"
            | "ErrorRecoveryLevel"
            | "SessionType"
            | "InitiatorName"
            | "TargetName" => answers.push((key.clone(), IRRELEVANT.into())),
            _ => answers.push((key.clone(), NOT_UNDERSTOOD.into())),
        }
    }
    let body = Bytes::from(encode_pairs(&answers));
    page(conn, state, &req, body, limit).await
}

async fn page(
    conn: &ConnShared,
    state: &mut TextState,
    req: &TextRequest,
    body: Bytes,
    limit: usize,
) -> Flow {
    if body.len() <= limit {
        let _ = conn
            .send(text_response(req, RESERVED_TAG, true, false, body))
            .await;
        return Flow::Continue;
    }
    let ttt = conn.next_ttt();
    let rest = body.slice(limit..);
    state.pending = Some((ttt, rest));
    let _ = conn
        .send(text_response(req, ttt, false, true, body.slice(..limit)))
        .await;
    Flow::Continue
}

fn text_response(req: &TextRequest, ttt: u32, final_: bool, cont: bool, data: Bytes) -> Pdu {
    Pdu::TextResponse(TextResponse {
        final_,
        cont,
        lun: req.lun,
        itt: req.itt,
        ttt,
        stat_sn: 0,
        exp_cmd_sn: 0,
        max_cmd_sn: 0,
        data,
    })
}
