//! Unit attention conditions, queued per I_T nexus.

use std::collections::{HashMap, VecDeque};

use super::Nexus;

/// The most UAs kept per nexus; older ones are dropped first.
const MAX_QUEUED: usize = 16;

#[derive(Default)]
pub(crate) struct UnitAttentions {
    nexuses: HashMap<u64, Entry>,
}

struct Entry {
    initiator_port: String,
    target_port: String,
    queue: VecDeque<(u8, u8)>,
}

impl UnitAttentions {
    /// Note a nexus that talks to this LU (it will receive later UAs).
    pub fn touch(&mut self, nexus: &Nexus) {
        self.nexuses.entry(nexus.id).or_insert_with(|| Entry {
            initiator_port: nexus.initiator_port.clone(),
            target_port: nexus.target_port.clone(),
            queue: VecDeque::new(),
        });
    }

    pub fn forget(&mut self, id: u64) {
        self.nexuses.remove(&id);
    }

    /// Take the oldest pending UA of a nexus.
    pub fn pop(&mut self, id: u64) -> Option<(u8, u8)> {
        self.nexuses.get_mut(&id)?.queue.pop_front()
    }

    fn push(e: &mut Entry, asc: u8, ascq: u8) {
        if e.queue.contains(&(asc, ascq)) {
            return;
        }
        if asc == 0x29 {
            // A reset supersedes whatever was pending.
            e.queue.clear();
        }
        if e.queue.len() >= MAX_QUEUED {
            e.queue.pop_front();
        }
        e.queue.push_back((asc, ascq));
    }

    /// Queue a UA for every known nexus except `except`.
    pub fn broadcast(&mut self, except: Option<u64>, asc: u8, ascq: u8) {
        for (id, e) in self.nexuses.iter_mut() {
            if Some(*id) != except {
                Self::push(e, asc, ascq);
            }
        }
    }

    /// Queue a UA for every nexus of the given I_T nexus names.
    pub fn send_to_ports(&mut self, initiator_port: &str, target_port: &str, asc: u8, ascq: u8) {
        for e in self.nexuses.values_mut() {
            if e.initiator_port.eq_ignore_ascii_case(initiator_port)
                && e.target_port.eq_ignore_ascii_case(target_port)
            {
                Self::push(e, asc, ascq);
            }
        }
    }
}
