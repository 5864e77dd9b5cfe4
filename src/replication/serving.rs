//! How a secondary's volume is served: read-only while it takes updates, writable once
//! promoted. Its default target is replaced by one whose logical unit refuses writes (DATA
//! PROTECT / WRITE PROTECTED); promotion puts the volume's own logical unit back. Sessions
//! logged in to the replaced target are closed so that initiators log in again and see the
//! change.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::default_target_name;
use crate::scsi::LogicalUnit;
use crate::target::Target;
use crate::volume::{Registry, Volume};

fn replace(reg: &Registry, v: &Volume, lu: Arc<LogicalUnit>) {
    let name = default_target_name(&v.meta.name);
    let old = reg.ctx.target(&name);
    let mut luns = BTreeMap::new();
    luns.insert(0, lu);
    reg.ctx.add_target(Target {
        name,
        alias: Some(v.meta.name.clone()),
        luns,
    });
    if let Some(old) = old {
        for s in reg.ctx.sessions.all() {
            if s.target.as_ref().is_some_and(|t| Arc::ptr_eq(t, &old)) {
                s.close();
            }
        }
    }
}

/// Serve `v` read-only (it is a replication secondary).
pub fn read_only(reg: &Registry, v: &Volume) {
    let mut cfg = v.lu.config().clone();
    cfg.read_only = true;
    replace(reg, v, Arc::new(LogicalUnit::new(cfg, v.store.clone())));
}

/// Serve `v` writable again (promoted).
pub fn writable(reg: &Registry, v: &Volume) {
    replace(reg, v, v.lu.clone());
}
