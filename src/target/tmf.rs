//! Task management functions (RFC 7143 section 11.5, SAM-5 section 7): aborts wait for the
//! aborted tasks to end (no status is sent for them), then answer.

use std::sync::Arc;

use rewind_protocol::opcode::{TmfFunction, TmfResponse};
use rewind_protocol::{Pdu, TaskMgmtRequest, TaskMgmtResponse};
use tracing::info;

use super::cmd_window::{sn_le, sn_lt, Admission};
use super::connection::ConnShared;
use super::decode_lun;
use super::session::{lock, TaskHandle};
use crate::scsi::ResetKind;

pub fn start(conn: Arc<ConnShared>, req: TaskMgmtRequest, admission: Admission) {
    tokio::spawn(async move {
        if let Admission::Later(turn) = admission {
            tokio::select! {
                _ = conn.cancel.cancelled() => return,
                _ = conn.session.cancel.cancelled() => return,
                t = turn => if t.is_err() { return },
            }
        }
        let response = execute(&conn, &req).await;
        let _ = conn
            .send(Pdu::TaskMgmtResponse(TaskMgmtResponse {
                response,
                itt: req.itt,
                stat_sn: 0,
                exp_cmd_sn: 0,
                max_cmd_sn: 0,
            }))
            .await;
        if req.function == TmfFunction::TARGET_COLD_RESET && response == TmfResponse::COMPLETE {
            // A cold reset also drops every session of the target (SAM-5 hard reset).
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if let Some(target) = &conn.session.target {
                for s in conn.ctx.sessions.all() {
                    if s.target.as_ref().is_some_and(|t| Arc::ptr_eq(t, target)) {
                        s.close();
                    }
                }
            }
        }
    });
}

async fn execute(conn: &ConnShared, req: &TaskMgmtRequest) -> u8 {
    let session = &conn.session;
    let Some(target) = session.target.clone() else {
        return TmfResponse::REJECTED;
    };
    let lun = decode_lun(req.lun);
    let lun_exists = lun.is_some_and(|l| target.luns.contains_key(&l));
    let same_target = |s: &Arc<super::session::Session>| {
        s.target.as_ref().is_some_and(|t| Arc::ptr_eq(t, &target))
    };
    match req.function {
        TmfFunction::ABORT_TASK => {
            let found = lock(&session.tasks).get(&req.referenced_task_tag).cloned();
            match found {
                Some(t) => {
                    let aborted = t.try_abort();
                    t.done.cancelled().await;
                    if aborted {
                        TmfResponse::COMPLETE
                    } else {
                        // Its status was already on the way: too late to abort.
                        TmfResponse::TASK_DOES_NOT_EXIST
                    }
                }
                None => {
                    // Never received, but its CmdSN is still in the window before this request:
                    // consider it received and aborted (RFC 7143 section 11.5.1).
                    let (exp, max) = {
                        let w = lock(&session.window);
                        (w.exp_cmd_sn(), w.max_cmd_sn())
                    };
                    if sn_le(exp, req.ref_cmd_sn)
                        && sn_le(req.ref_cmd_sn, max)
                        && sn_lt(req.ref_cmd_sn, req.cmd_sn)
                    {
                        TmfResponse::COMPLETE
                    } else {
                        TmfResponse::TASK_DOES_NOT_EXIST
                    }
                }
            }
        }
        TmfFunction::ABORT_TASK_SET | TmfFunction::CLEAR_TASK_SET => {
            if !lun_exists {
                return TmfResponse::LUN_DOES_NOT_EXIST;
            }
            let lun = lun.unwrap_or_default();
            let on_lun = |_: u32, t: &TaskHandle| t.lun == lun;
            session.abort_tasks(on_lun, Some(req.itt)).await;
            if req.function == TmfFunction::CLEAR_TASK_SET {
                for s in conn.ctx.sessions.all() {
                    if !Arc::ptr_eq(&s, session) && same_target(&s) {
                        s.abort_tasks(on_lun, None).await;
                    }
                }
            }
            TmfResponse::COMPLETE
        }
        TmfFunction::LOGICAL_UNIT_RESET => {
            if !lun_exists {
                return TmfResponse::LUN_DOES_NOT_EXIST;
            }
            let lun = lun.unwrap_or_default();
            for s in conn.ctx.sessions.all() {
                if same_target(&s) {
                    s.abort_tasks(|_, t| t.lun == lun, Some(req.itt)).await;
                }
            }
            if let Some(lu) = target.luns.get(&lun) {
                lu.reset(ResetKind::LogicalUnit);
            }
            info!(tsih = session.tsih, lun, "logical unit reset");
            TmfResponse::COMPLETE
        }
        TmfFunction::TARGET_WARM_RESET | TmfFunction::TARGET_COLD_RESET => {
            for s in conn.ctx.sessions.all() {
                if same_target(&s) {
                    s.abort_tasks(|_, _| true, Some(req.itt)).await;
                }
            }
            let kind = if req.function == TmfFunction::TARGET_WARM_RESET {
                ResetKind::TargetWarm
            } else {
                ResetKind::TargetCold
            };
            for lu in target.luns.values() {
                lu.reset(kind);
            }
            info!(tsih = session.tsih, ?kind, "target reset");
            TmfResponse::COMPLETE
        }
        TmfFunction::TASK_REASSIGN => TmfResponse::REASSIGNMENT_NOT_SUPPORTED,
        _ => TmfResponse::NOT_SUPPORTED,
    }
}
