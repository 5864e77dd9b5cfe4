//! The iSCSI target: listener, connections, login, sessions, full feature phase.
