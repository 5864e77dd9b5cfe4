//! One SCSI command from arrival to status (RFC 7143 sections 4.2.2.3 - 4.2.2.5):
//!
//! 1. gather Data-Out: immediate data, unsolicited Data-Out up to FirstBurstLength, then R2Ts
//!    of at most MaxBurstLength, at most MaxOutstandingR2T at a time;
//! 2. wait for the command's turn in CmdSN order;
//! 3. execute on the command threads (`executor::CommandPool`, `scsi::LogicalUnit::execute`);
//! 4. send Data-In in PDUs of the initiator's MaxRecvDataSegmentLength, with the status in the
//!    last one when there is no sense data, else a SCSI Response; residuals from EDTL.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rewind_protocol::opcode::RejectReason;
use rewind_protocol::{DataIn, DataOut, Pdu, R2t, ScsiCommand, ScsiResponse};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::cmd_window::Admission;
use super::connection::{header_of, ConnShared, RESERVED_TAG};
use super::decode_lun;
use super::pdu_io::CommandRunning;
use super::session::{lock, TaskHandle};
use crate::scsi::{self, ScsiOutcome, ScsiRequest};

/// The most Data-Out one command may carry: bounds what a lying EDTL can make us buffer.
pub const MAX_COMMAND_DATA: u32 = 64 * 1024 * 1024;

/// Solicited Data-Out is budgeted target-wide in units of this many bytes.
pub const DATA_BUDGET_UNIT: u32 = 4096;

const STATUS_GOOD: u8 = 0x00;
const STATUS_CHECK_CONDITION: u8 = 0x02;
const STATUS_CONDITION_MET: u8 = 0x04;
const STATUS_TASK_SET_FULL: u8 = 0x28;

/// Register the task and run it on its own tokio task.
pub fn start(conn: Arc<ConnShared>, cmd: ScsiCommand, admission: Admission) {
    let running = CommandRunning::start(&conn.writer);
    let session = &conn.session;
    // The CmdSN window bounds ordinary commands; immediate ones could still pile up.
    let limit = conn.ctx.iscsi.queue_depth as usize + 16;
    if lock(&session.tasks).len() >= limit {
        debug!(tsih = session.tsih, limit, "task set full");
        release_slot(&conn, &cmd);
        tokio::spawn(async move {
            let _running = running;
            let full = ScsiOutcome {
                status: STATUS_TASK_SET_FULL,
                ..ScsiOutcome::default()
            };
            respond(&conn, &cmd, full).await;
        });
        return;
    }
    let handle = TaskHandle::new(decode_lun(cmd.lun).unwrap_or(u64::MAX), cmd.cmd_sn);
    let needs_data = cmd.write && cmd.expected_data_len as usize > cmd.data.len();
    let data_rx = if needs_data {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&conn.data_routes).insert(cmd.itt, tx);
        Some(rx)
    } else {
        None
    };
    if let Some(old) = lock(&session.tasks).insert(cmd.itt, handle.clone()) {
        // An ITT still in use: the old task is gone from the initiator's view.
        old.try_abort();
    }
    tokio::spawn(async move {
        let _running = running;
        let itt = cmd.itt;
        let slot = (!cmd.immediate).then_some(cmd.cmd_sn);
        run(&conn, cmd, admission, data_rx, &handle).await;
        if let Some(cmd_sn) = slot {
            // Ended without a status (aborted, rejected): the slot frees here.
            lock(&conn.session.window).finish(cmd_sn);
        }
        {
            let mut tasks = lock(&conn.session.tasks);
            if tasks.get(&itt).is_some_and(|t| t.serial == handle.serial) {
                tasks.remove(&itt);
            }
        }
        if let Ok(mut routes) = conn.data_routes.lock() {
            if routes.get(&itt).is_some_and(|t| t.is_closed()) {
                routes.remove(&itt);
            }
        }
        handle.done.cancel();
    });
}

enum Gathered {
    Data(Bytes),
    /// Protocol violation: the offending PDU is rejected (reason, its header) and the task ends.
    Reject(u8, Bytes),
    Aborted,
}

async fn gather(
    conn: &ConnShared,
    cmd: &ScsiCommand,
    rx: &mut Option<mpsc::UnboundedReceiver<DataOut>>,
    abort: &CancellationToken,
) -> Gathered {
    let edtl = cmd.expected_data_len;
    if !cmd.write || edtl == 0 {
        return Gathered::Data(Bytes::new());
    }
    if cmd.data.len() >= edtl as usize {
        return Gathered::Data(cmd.data.slice(..edtl as usize));
    }
    let Some(rx) = rx.as_mut() else {
        return Gathered::Data(cmd.data.clone());
    };
    if edtl > MAX_COMMAND_DATA {
        return Gathered::Reject(
            RejectReason::INVALID_PDU_FIELD,
            header_of(&Pdu::ScsiCommand(cmd.clone())),
        );
    }
    let params = &conn.session.params;
    // Grows as data arrives: a large Expected Data Transfer Length alone allocates nothing.
    let mut buf = BytesMut::with_capacity((edtl as usize).min(1 << 20));
    buf.extend_from_slice(&cmd.data);
    // Bytes solicited by R2Ts count against the target-wide budget until the command ends.
    let mut budget = Vec::new();
    let mut received = cmd.data.len() as u32;
    let mut got_unsolicited_final = cmd.final_;
    // Unsolicited Data-Out (InitialR2T=No) continues up to FirstBurstLength.
    let unsolicited_end = if cmd.final_ {
        received
    } else {
        params.first_burst_length.min(edtl)
    };
    let mut next_offset = unsolicited_end.max(received);
    let mut r2t_sn: u32 = 0;
    // Outstanding R2Ts: (ttt, next expected offset, end offset, next expected DataSN).
    let mut outstanding: Vec<(u32, u32, u32, u32)> = Vec::new();
    // The unsolicited sequence: next expected offset and DataSN.
    let mut unsolicited = (received, 0u32);
    loop {
        // Solicit the rest once the unsolicited burst is in.
        if got_unsolicited_final {
            while outstanding.len() < params.max_outstanding_r2t as usize && next_offset < edtl {
                let len = (edtl - next_offset).min(params.max_burst_length);
                let permits = len.div_ceil(DATA_BUDGET_UNIT);
                let permit = tokio::select! {
                    _ = abort.cancelled() => return Gathered::Aborted,
                    p = conn.ctx.data_budget.clone().acquire_many_owned(permits) => match p {
                        Ok(p) => p,
                        Err(_) => return Gathered::Aborted,
                    },
                };
                budget.push(permit);
                let ttt = conn.next_ttt();
                let r2t = Pdu::R2t(R2t {
                    lun: cmd.lun,
                    itt: cmd.itt,
                    ttt,
                    stat_sn: 0,
                    exp_cmd_sn: 0,
                    max_cmd_sn: 0,
                    r2t_sn,
                    buffer_offset: next_offset,
                    desired_len: len,
                });
                r2t_sn = r2t_sn.wrapping_add(1);
                outstanding.push((ttt, next_offset, next_offset + len, 0));
                next_offset += len;
                if !conn.send(r2t).await {
                    return Gathered::Aborted;
                }
            }
        }
        if received >= edtl && outstanding.is_empty() && got_unsolicited_final {
            break;
        }
        let d = tokio::select! {
            _ = abort.cancelled() => return Gathered::Aborted,
            d = rx.recv() => match d { Some(d) => d, None => return Gathered::Aborted },
        };
        let len = d.data.len() as u32;
        let violation = |d: &DataOut| {
            Gathered::Reject(
                RejectReason::PROTOCOL_ERROR,
                header_of(&Pdu::DataOut(d.clone())),
            )
        };
        let Some(end) = d.buffer_offset.checked_add(len).filter(|e| *e <= edtl) else {
            warn!(
                itt = cmd.itt,
                offset = d.buffer_offset,
                len,
                edtl,
                "Data-Out beyond the expected length"
            );
            return violation(&d);
        };
        // DataPDUInOrder=Yes: each sequence arrives in order, DataSN counting from 0.
        let seq_end = if d.ttt == RESERVED_TAG {
            let (next, sn) = unsolicited;
            if got_unsolicited_final
                || d.buffer_offset != next
                || d.data_sn != sn
                || end > unsolicited_end
            {
                warn!(
                    itt = cmd.itt,
                    data_sn = d.data_sn,
                    offset = d.buffer_offset,
                    "unsolicited Data-Out out of sequence"
                );
                return violation(&d);
            }
            unsolicited = (end, sn.wrapping_add(1));
            unsolicited_end
        } else {
            let Some(seq) = outstanding.iter_mut().find(|s| s.0 == d.ttt) else {
                warn!(
                    itt = cmd.itt,
                    ttt = d.ttt,
                    "Data-Out for no outstanding R2T"
                );
                return violation(&d);
            };
            if d.buffer_offset != seq.1 || d.data_sn != seq.3 || end > seq.2 {
                warn!(
                    itt = cmd.itt,
                    data_sn = d.data_sn,
                    offset = d.buffer_offset,
                    "solicited Data-Out out of sequence"
                );
                return violation(&d);
            }
            seq.1 = end;
            seq.3 = seq.3.wrapping_add(1);
            seq.2
        };
        let (Ok(start), Ok(stop)) = (usize::try_from(d.buffer_offset), usize::try_from(end)) else {
            return violation(&d);
        };
        // DataSequenceInOrder and DataPDUInOrder are Yes: data arrives in offset order.
        if start != buf.len() || stop < start {
            warn!(
                itt = cmd.itt,
                offset = d.buffer_offset,
                expected = buf.len(),
                "Data-Out out of order"
            );
            return violation(&d);
        }
        buf.extend_from_slice(&d.data);
        received = received.saturating_add(len);
        if d.final_ {
            if end != seq_end {
                warn!(itt = cmd.itt, "Data-Out sequence ended early");
                return violation(&d);
            }
            if d.ttt == RESERVED_TAG {
                got_unsolicited_final = true;
            } else {
                outstanding.retain(|s| s.0 != d.ttt);
            }
        }
    }
    drop(budget);
    Gathered::Data(buf.freeze())
}

async fn run(
    conn: &Arc<ConnShared>,
    cmd: ScsiCommand,
    admission: Admission,
    mut data_rx: Option<mpsc::UnboundedReceiver<DataOut>>,
    handle: &TaskHandle,
) {
    let started = std::time::Instant::now();
    let data_out = match gather(conn, &cmd, &mut data_rx, &handle.abort).await {
        Gathered::Data(d) => d,
        Gathered::Aborted => return,
        Gathered::Reject(reason, header) => {
            let _ = conn.send(conn.reject(reason, header)).await;
            return;
        }
    };
    drop(data_rx);
    lock(&conn.data_routes).remove(&cmd.itt);
    if let Admission::Later(rx) = admission {
        tokio::select! {
            _ = handle.abort.cancelled() => return,
            r = rx => if r.is_err() { return },
        }
    }
    let session = &conn.session;
    let req = ScsiRequest {
        nexus: session.nexus.clone(),
        cdb: cmd.cdb.clone(),
        data_out,
        expected_in_len: if cmd.read { cmd.expected_data_len } else { 0 },
        expected_out_len: if cmd.write { cmd.expected_data_len } else { 0 },
        task_attr: cmd.attr.0,
    };
    let target = session.target.clone();
    let lun = decode_lun(cmd.lun);
    let outcome = match (&target, lun) {
        (Some(t), _) if cmd.cdb.first() == Some(&0xa0) => scsi::report_luns(&t.lun_list(), &req),
        (Some(t), Some(lun)) if t.luns.contains_key(&lun) => {
            let lu = t.luns[&lun].clone();
            match conn.ctx.commands.run(move || lu.execute(&req)).await {
                Ok(o) => o,
                Err(e) => {
                    warn!(error = %e, "command execution failed");
                    return;
                }
            }
        }
        _ => scsi::no_such_lun(&req),
    };
    if !handle.begin_response() {
        debug!(itt = cmd.itt, "task aborted; no status sent");
        return;
    }
    crate::metrics::global().scsi_outcome(&cmd.cdb, cmd.expected_data_len, &outcome, started);
    respond(conn, &cmd, outcome).await;
}

/// Residual for one direction: (overflow, underflow, count).
fn residual(wanted: u32, expected: u32) -> (bool, bool, u32) {
    match wanted.cmp(&expected) {
        std::cmp::Ordering::Greater => (true, false, wanted - expected),
        std::cmp::Ordering::Less => (false, true, expected - wanted),
        std::cmp::Ordering::Equal => (false, false, 0),
    }
}

/// Free the command's slot of the CmdSN window just before its status goes out, so that the
/// status PDU already carries the larger MaxCmdSN (an initiator with a full window waits for it).
fn release_slot(conn: &ConnShared, cmd: &ScsiCommand) {
    if !cmd.immediate {
        lock(&conn.session.window).finish(cmd.cmd_sn);
    }
}

async fn respond(conn: &ConnShared, cmd: &ScsiCommand, outcome: ScsiOutcome) {
    let edtl = cmd.expected_data_len;
    let produced = u32::try_from(outcome.data_in.len()).unwrap_or(u32::MAX);
    let (overflow, underflow, count) = if cmd.read && !cmd.write {
        residual(produced, edtl)
    } else if cmd.write {
        residual(outcome.data_out_wanted, edtl)
    } else if produced > 0 {
        residual(produced, 0)
    } else {
        residual(outcome.data_out_wanted, 0)
    };
    let send_len = if cmd.read { produced.min(edtl) } else { 0 } as usize;
    let data = outcome.data_in.slice(..send_len.min(outcome.data_in.len()));
    let status_in_data = outcome.sense.is_none()
        && (outcome.status == STATUS_GOOD || outcome.status == STATUS_CONDITION_MET)
        && !data.is_empty();
    let mrdsl = conn.params.initiator_max_recv.max(512) as usize;
    let burst = conn.session.params.max_burst_length.max(512) as usize;
    let mut offset = 0usize;
    let mut data_sn: u32 = 0;
    let mut in_burst = 0usize;
    while offset < data.len() {
        let len = (data.len() - offset).min(mrdsl).min(burst - in_burst);
        let last = offset + len == data.len();
        in_burst += len;
        let end_of_burst = in_burst == burst;
        if end_of_burst {
            in_burst = 0;
        }
        let with_status = last && status_in_data;
        if with_status {
            release_slot(conn, cmd);
        }
        let pdu = Pdu::DataIn(DataIn {
            final_: last || end_of_burst,
            ack: false,
            overflow: with_status && overflow,
            underflow: with_status && underflow,
            status: with_status.then_some(outcome.status),
            lun: cmd.lun,
            itt: cmd.itt,
            ttt: RESERVED_TAG,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data_sn,
            buffer_offset: offset as u32,
            residual: if with_status { count } else { 0 },
            data: data.slice(offset..offset + len),
        });
        if !conn.send(pdu).await {
            return;
        }
        data_sn = data_sn.wrapping_add(1);
        offset += len;
    }
    if status_in_data {
        return;
    }
    let sense_data = match &outcome.sense {
        Some(sense) if outcome.status == STATUS_CHECK_CONDITION || !sense.is_empty() => {
            let mut d = BytesMut::with_capacity(sense.len() + 2);
            d.extend_from_slice(&(sense.len().min(0xffff) as u16).to_be_bytes());
            d.extend_from_slice(sense);
            d.freeze()
        }
        _ => Bytes::new(),
    };
    release_slot(conn, cmd);
    let _ = conn
        .send(Pdu::ScsiResponse(ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: false,
            overflow,
            underflow,
            response: 0,
            status: outcome.status,
            itt: cmd.itt,
            snack_tag: 0,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            exp_data_sn: data_sn,
            bidi_residual: 0,
            residual: count,
            data: sense_data,
        }))
        .await;
}

#[cfg(test)]
mod tests {
    use super::residual;

    #[test]
    fn residuals() {
        assert_eq!(residual(4096, 4096), (false, false, 0));
        assert_eq!(residual(512, 4096), (false, true, 3584));
        assert_eq!(residual(8192, 4096), (true, false, 4096));
    }
}
