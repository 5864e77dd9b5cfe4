//! The iSCSI target: listener, connections, login, sessions, full feature phase.
//!
//! ## Layout
//! - [`server`]: TCP listeners; one tokio task per connection; graceful shutdown.
//! - [`pdu_io`]: the connection's PDU reader (framing over a `BytesMut`) and writer task
//!   (fills in StatSN/ExpCmdSN/MaxCmdSN at send time).
//! - [`login`]: the login stage machine, up to the full feature phase.
//! - [`negotiation`]: text key negotiation (pure).
//! - [`session`]: sessions, TSIH assignment, reinstatement, the session table.
//! - [`cmd_window`]: CmdSN ordering across connections (pure).
//! - [`connection`]: the full feature phase dispatch loop of one connection.
//! - [`scsi_task`]: one SCSI command: Data-Out/R2T, execution, Data-In and status.
//! - [`tmf`]: task management functions.
//! - [`text`]: Text requests, SendTargets discovery.

pub mod cmd_window;
pub mod connection;
pub mod executor;
pub mod login;
pub mod negotiation;
pub mod pdu_io;
pub mod scsi_task;
pub mod server;
pub mod session;
pub mod text;
pub mod tmf;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use crate::auth::AuthSettings;
use crate::config::IscsiConfig;
use crate::scsi::LogicalUnit;

/// A target: a name and its logical units.
pub struct Target {
    pub name: String,
    pub alias: Option<String>,
    pub luns: BTreeMap<u64, Arc<LogicalUnit>>,
}

impl Target {
    pub fn lun_list(&self) -> Vec<u64> {
        self.luns.keys().copied().collect()
    }
}

/// State shared by every connection of the daemon.
pub struct TargetContext {
    pub iscsi: IscsiConfig,
    pub portal_group_tag: u16,
    /// Listening portals (for SendTargets); an unspecified address is replaced by the address
    /// the asking connection came in on.
    pub portals: RwLock<Vec<SocketAddr>>,
    targets: RwLock<BTreeMap<String, Arc<Target>>>,
    pub sessions: session::SessionTable,
    pub shutdown: CancellationToken,
    next_nexus_id: AtomicU64,
    /// I_T nexus ids by "initiator port|target port": a nexus keeps its id across sessions,
    /// so per-port state (partial journals, reservations) is bounded by the initiator ports
    /// ever seen, not by the number of logins.
    nexus_ids: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    auth: RwLock<Arc<AuthSettings>>,
    /// Solicited write data in flight across all sessions, in `scsi_task::DATA_BUDGET_UNIT`s:
    /// R2Ts wait for budget, so many large writes at once cannot exhaust memory.
    pub data_budget: Arc<tokio::sync::Semaphore>,
    /// The threads that execute SCSI commands (`[iscsi] command_threads`).
    pub commands: executor::CommandPool,
}

impl TargetContext {
    pub fn new(iscsi: IscsiConfig, portal_group_tag: u16) -> std::io::Result<Arc<TargetContext>> {
        let commands =
            executor::CommandPool::new(executor::CommandPool::threads_for(iscsi.command_threads))?;
        Ok(Arc::new(TargetContext {
            iscsi: iscsi.clone(),
            portal_group_tag,
            portals: RwLock::new(Vec::new()),
            targets: RwLock::new(BTreeMap::new()),
            sessions: session::SessionTable::default(),
            shutdown: CancellationToken::new(),
            next_nexus_id: AtomicU64::new(1),
            nexus_ids: std::sync::Mutex::new(std::collections::HashMap::new()),
            auth: RwLock::new(Arc::new(AuthSettings::default())),
            data_budget: Arc::new(tokio::sync::Semaphore::new(
                (iscsi.max_write_data_in_flight / u64::from(scsi_task::DATA_BUDGET_UNIT)) as usize,
            )),
            commands,
        }))
    }

    /// Authentication and access settings (CHAP credentials, initiator lists).
    pub fn auth(&self) -> Arc<AuthSettings> {
        self.auth.read().map(|a| a.clone()).unwrap_or_default()
    }

    pub fn set_auth(&self, auth: AuthSettings) {
        if let Ok(mut a) = self.auth.write() {
            *a = Arc::new(auth);
        }
    }

    /// iSCSI names compare case-insensitively.
    pub fn add_target(&self, target: Target) {
        let key = target.name.to_ascii_lowercase();
        if let Ok(mut t) = self.targets.write() {
            t.insert(key, Arc::new(target));
        }
    }

    pub fn remove_target(&self, name: &str) -> Option<Arc<Target>> {
        self.targets
            .write()
            .ok()?
            .remove(&name.to_ascii_lowercase())
    }

    pub fn target(&self, name: &str) -> Option<Arc<Target>> {
        self.targets
            .read()
            .ok()?
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    pub fn targets(&self) -> Vec<Arc<Target>> {
        self.targets
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The id of the I_T nexus between these ports (stable for the life of the process).
    pub fn nexus_id(&self, initiator_port: &str, target_port: &str) -> u64 {
        let key = format!(
            "{}|{}",
            initiator_port.to_ascii_lowercase(),
            target_port.to_ascii_lowercase()
        );
        let mut ids = session::lock(&self.nexus_ids);
        *ids.entry(key)
            .or_insert_with(|| self.next_nexus_id.fetch_add(1, Ordering::Relaxed))
    }
}

impl TargetContext {
    /// Report a SCSI asynchronous event (`sense`, fixed format) about `lu` to every normal
    /// session whose target serves it: an Asynchronous Message with AsyncEvent 0 (RFC 7143
    /// section 11.9.1) on one connection of the session. The unit attention the LU queued is
    /// what initiators act on; this tells them without waiting for their next command. A
    /// connection whose send queue is full is skipped. Returns how many sessions were told.
    pub fn announce_event(&self, lu: &Arc<LogicalUnit>, sense: &bytes::Bytes) -> usize {
        let mut data = Vec::with_capacity(2 + sense.len());
        data.extend_from_slice(&(sense.len() as u16).to_be_bytes());
        data.extend_from_slice(sense);
        let data = bytes::Bytes::from(data);
        let mut told = 0;
        for s in self.sessions.all() {
            let Some(target) = &s.target else { continue };
            let Some(lun) = target
                .luns
                .iter()
                .find(|(_, l)| Arc::ptr_eq(l, lu))
                .and_then(|(n, _)| u16::try_from(*n).ok())
            else {
                continue;
            };
            let conns = session::lock(&s.connections);
            let Some((_, conn)) = conns.iter().min_by_key(|(cid, _)| **cid) else {
                continue;
            };
            let msg = rewind_protocol::AsyncMessage {
                lun: rewind_protocol::lun::to_wire(lun),
                stat_sn: 0,
                exp_cmd_sn: 0,
                max_cmd_sn: 0,
                event: 0,
                vcode: 0,
                param1: 0,
                param2: 0,
                param3: 0,
                data: data.clone(),
            };
            let pdu = rewind_protocol::Pdu::AsyncMessage(msg);
            if conn.tx.try_send(pdu_io::Outgoing::Pdu(pdu)).is_ok() {
                told += 1;
            }
        }
        told
    }
}

/// The LU number addressed by an 8-byte LUN field (single level), if it is one we can address.
pub fn decode_lun(field: u64) -> Option<u64> {
    rewind_protocol::lun::from_wire(field).map(u64::from)
}
