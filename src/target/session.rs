//! Sessions: identity (initiator name, ISID, TSIH), negotiated parameters, the command window,
//! the task table and the connections; and the table of all sessions, which assigns TSIHs and
//! carries out session reinstatement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cmd_window::CmdWindow;
use super::negotiation::{SessionParams, SessionType};
use super::pdu_io::Outgoing;
use super::Target;
use crate::scsi::Nexus;

/// Lock a mutex, recovering the data if a panicking thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A task (SCSI command or task management request) in the session's task set.
#[derive(Clone)]
pub struct TaskHandle {
    /// Unique for the process lifetime (ITTs are reused by initiators).
    pub serial: u64,
    pub lun: u64,
    pub cmd_sn: u32,
    /// Cancelled to abort the task.
    pub abort: CancellationToken,
    /// Cancelled by the task itself when it has finished (response sent or suppressed).
    pub done: CancellationToken,
    /// RUNNING, then either RESPONDING (status is on its way) or ABORTED; never both.
    state: Arc<std::sync::atomic::AtomicU8>,
}

const RUNNING: u8 = 0;
const RESPONDING: u8 = 1;
const ABORTED: u8 = 2;

static TASK_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl TaskHandle {
    pub fn new(lun: u64, cmd_sn: u32) -> TaskHandle {
        TaskHandle {
            serial: TASK_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            lun,
            cmd_sn,
            abort: CancellationToken::new(),
            done: CancellationToken::new(),
            state: Arc::new(std::sync::atomic::AtomicU8::new(RUNNING)),
        }
    }

    /// The task claims the right to send its status; false if it was aborted first.
    pub fn begin_response(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.state
            .compare_exchange(RUNNING, RESPONDING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Abort the task unless its status is already on its way. Returns whether it was aborted.
    pub fn try_abort(&self) -> bool {
        use std::sync::atomic::Ordering;
        let aborted = self
            .state
            .compare_exchange(RUNNING, ABORTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            || self.state.load(Ordering::Acquire) == ABORTED;
        if aborted {
            self.abort.cancel();
        }
        aborted
    }
}

/// A connection of a session, as the session sees it.
#[derive(Clone)]
pub struct ConnHandle {
    pub cancel: CancellationToken,
    pub tx: mpsc::Sender<Outgoing>,
}

pub struct Session {
    pub tsih: u16,
    pub isid: [u8; 6],
    pub initiator_name: String,
    pub kind: SessionType,
    pub target: Option<Arc<Target>>,
    pub params: SessionParams,
    pub nexus: Arc<Nexus>,
    pub window: Arc<Mutex<CmdWindow>>,
    pub tasks: Mutex<HashMap<u32, TaskHandle>>,
    pub connections: Mutex<HashMap<u16, ConnHandle>>,
    /// Cancelled when the session ends: every connection closes.
    pub cancel: CancellationToken,
}

impl Session {
    pub fn target_name(&self) -> Option<&str> {
        self.target.as_ref().map(|t| t.name.as_str())
    }

    /// Abort the tasks for which `pick` is true (except `except`), and wait until they are done.
    pub async fn abort_tasks(
        &self,
        pick: impl Fn(u32, &TaskHandle) -> bool,
        except: Option<u32>,
    ) -> usize {
        let victims: Vec<TaskHandle> = lock(&self.tasks)
            .iter()
            .filter(|(itt, t)| Some(**itt) != except && pick(**itt, t))
            .map(|(_, t)| t.clone())
            .collect();
        let aborted = victims.iter().filter(|t| t.try_abort()).count();
        for t in &victims {
            t.done.cancelled().await;
        }
        aborted
    }

    /// End the session: close every connection, abort every task, release the LUNs' per-nexus state.
    pub fn close(&self) {
        if self.cancel.is_cancelled() {
            // Closed already (reinstatement closes first, the connections' teardown again):
            // the nexus may belong to a newer session by now.
            return;
        }
        self.cancel.cancel();
        for t in lock(&self.tasks).values() {
            t.try_abort();
        }
        if let Some(target) = &self.target {
            for lu in target.luns.values() {
                lu.nexus_gone(self.nexus.id);
            }
        }
    }
}

pub fn isid_hex(isid: &[u8; 6]) -> String {
    hex::encode(isid)
}

#[derive(Default)]
pub struct SessionTable {
    inner: Mutex<TableInner>,
}

#[derive(Default)]
struct TableInner {
    by_tsih: HashMap<u16, Arc<Session>>,
    next_tsih: u16,
}

impl SessionTable {
    /// A TSIH no live session uses (never 0).
    pub fn allocate_tsih(&self) -> Option<u16> {
        let mut t = lock(&self.inner);
        for _ in 0..=u16::MAX {
            t.next_tsih = t.next_tsih.wrapping_add(1);
            if t.next_tsih != 0 && !t.by_tsih.contains_key(&t.next_tsih) {
                return Some(t.next_tsih);
            }
        }
        None
    }

    /// Insert a new session; an older session of the same initiator port (initiator name +
    /// ISID) to the same target is reinstated: closed and returned.
    pub fn insert(&self, session: Arc<Session>) -> Option<Arc<Session>> {
        let mut t = lock(&self.inner);
        let old_tsih = t
            .by_tsih
            .values()
            .find(|s| {
                s.isid == session.isid
                    && s.initiator_name
                        .eq_ignore_ascii_case(&session.initiator_name)
                    && s.kind == session.kind
                    && s.target_name().map(str::to_ascii_lowercase)
                        == session.target_name().map(str::to_ascii_lowercase)
            })
            .map(|s| s.tsih);
        let old = old_tsih.and_then(|tsih| t.by_tsih.remove(&tsih));
        t.by_tsih.insert(session.tsih, session);
        drop(t);
        if let Some(old) = &old {
            old.close();
        }
        old
    }

    pub fn get(&self, tsih: u16) -> Option<Arc<Session>> {
        lock(&self.inner).by_tsih.get(&tsih).cloned()
    }

    /// Forget a session (its last connection closed, or it logged out).
    pub fn remove(&self, session: &Arc<Session>) {
        let mut t = lock(&self.inner);
        if t.by_tsih
            .get(&session.tsih)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            t.by_tsih.remove(&session.tsih);
        }
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        lock(&self.inner).by_tsih.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).by_tsih.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
