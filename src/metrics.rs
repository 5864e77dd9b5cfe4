//! Process-wide metrics, exported in the Prometheus text format by [`crate::http`] at
//! `GET /metrics`.
//!
//! One typed call per event, so the iSCSI layer and the CDP engine never touch the registry:
//!
//! ```
//! use std::time::Duration;
//! use rewind::metrics::{self, CommandKind};
//! let m = metrics::global();
//! m.login("success");
//! m.command_done(CommandKind::Write, 4096, Duration::from_micros(250));
//! m.journal_bytes("vol0", 1 << 20);
//! ```
//!
//! Sessions and connections are gauges sampled from the session table when the metrics are
//! scraped ([`Metrics::observe_target`]), so a missed "closed" event can never make them drift;
//! so are the journal's gauges (size on disk, oldest point in time, flush and merge lag, port
//! validity: [`Metrics::observe_registry`]). A family with labels appears in the output once its
//! first value is set.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a SCSI command does with data, from its operation code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Read,
    Write,
    Other,
}

impl CommandKind {
    /// Classify a CDB by its operation code: READ(6/10/12/16) are reads; WRITE(6/10/12/16),
    /// WRITE AND VERIFY(10/12/16) and WRITE SAME(10/16) are writes; everything else is other.
    pub fn from_cdb(cdb: &[u8]) -> CommandKind {
        match cdb.first() {
            Some(0x08 | 0x28 | 0xa8 | 0x88) => CommandKind::Read,
            Some(0x0a | 0x2a | 0xaa | 0x8a | 0x2e | 0xae | 0x8e | 0x41 | 0x93) => {
                CommandKind::Write
            }
            _ => CommandKind::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CommandKind::Read => "read",
            CommandKind::Write => "write",
            CommandKind::Other => "other",
        }
    }
}

/// The registry and every metric rewind exports.
pub struct Metrics {
    registry: Registry,
    sessions: IntGauge,
    connections: IntGauge,
    logins: IntCounterVec,
    commands: IntCounterVec,
    bytes: IntCounterVec,
    latency: HistogramVec,
    pdus_rejected: IntCounter,
    journal_bytes: IntGaugeVec,
    journal_entries: IntGaugeVec,
    oldest_point: IntGaugeVec,
    flush_lag: GaugeVec,
    merge_lag: GaugeVec,
    port_valid: IntGaugeVec,
    /// Held while [`Metrics::observe_registry`] samples (and [`Metrics::scrape`] renders).
    sampling: std::sync::Mutex<()>,
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    // Names are fixed and unique, so registration cannot fail.
    r.register(Box::new(m.clone()))
        .expect("metric registered twice");
    m
}

impl Metrics {
    /// A fresh registry (tests; the daemon uses [`global`]).
    pub fn new() -> Metrics {
        let r = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new(
                "rewind_build_info",
                "Always 1; the version label says which build runs.",
            ),
            &["version"],
        )
        .unwrap();
        // The process's resident memory, CPU time, open files and start time
        // (`process_*`, read from /proc at scrape time).
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process metrics registered twice");
        register(&r, build.clone())
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Metrics {
            sessions: register(
                &r,
                IntGauge::new(
                    "rewind_sessions",
                    "iSCSI sessions in full feature phase (normal and discovery).",
                )
                .unwrap(),
            ),
            connections: register(
                &r,
                IntGauge::new(
                    "rewind_connections",
                    "TCP connections of sessions in full feature phase.",
                )
                .unwrap(),
            ),
            logins: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "rewind_logins_total",
                        "Login attempts by result: success, refused (a login status other than success was sent), error (protocol error or timeout), closed (the initiator went away).",
                    ),
                    &["result"],
                )
                .unwrap(),
            ),
            commands: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "rewind_scsi_commands_total",
                        "SCSI commands answered, by operation class.",
                    ),
                    &["kind"],
                )
                .unwrap(),
            ),
            bytes: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "rewind_bytes_total",
                        "Bytes of data read from or written to volumes by commands that completed with GOOD status.",
                    ),
                    &["direction"],
                )
                .unwrap(),
            ),
            latency: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "rewind_command_duration_seconds",
                        "SCSI command latency, from the command PDU to its status, by operation class.",
                    )
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ]),
                    &["kind"],
                )
                .unwrap(),
            ),
            pdus_rejected: register(
                &r,
                IntCounter::new(
                    "rewind_pdus_rejected_total",
                    "PDUs answered with a Reject PDU.",
                )
                .unwrap(),
            ),
            journal_bytes: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rewind_journal_bytes",
                        "Bytes the CDP journal of a volume holds on disk.",
                    ),
                    &["volume"],
                )
                .unwrap(),
            ),
            journal_entries: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rewind_journal_entries",
                        "Chunk versions (old data of one chunk from one write) indexed in a volume's primary CDP journal.",
                    ),
                    &["volume"],
                )
                .unwrap(),
            ),
            oldest_point: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rewind_journal_oldest_point_timestamp_seconds",
                        "Oldest point in time a volume can be rewound to, as a Unix timestamp.",
                    ),
                    &["volume"],
                )
                .unwrap(),
            ),
            flush_lag: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "rewind_journal_flush_lag_seconds",
                        "Age of the oldest acknowledged write not yet durable in the journal.",
                    ),
                    &["volume"],
                )
                .unwrap(),
            ),
            merge_lag: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "rewind_journal_merge_lag_seconds",
                        "How long a merge has been due: time since the retention policy first wanted history the journal still keeps dropped (0 while merges keep up).",
                    ),
                    &["volume"],
                )
                .unwrap(),
            ),
            port_valid: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rewind_port_valid",
                        "1 while a journal port is valid (its journal complete), 0 otherwise.",
                    ),
                    &["volume", "port"],
                )
                .unwrap(),
            ),
            registry: r,
            sampling: std::sync::Mutex::new(()),
        }
    }

    /// The underlying registry, to add metrics of a subsystem.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything, in the Prometheus text exposition format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    // ---- iSCSI -------------------------------------------------------------------------------

    /// Set the session and connection gauges.
    pub fn set_sessions(&self, sessions: usize, connections: usize) {
        self.sessions.set(sessions as i64);
        self.connections.set(connections as i64);
    }

    /// Sample the session and connection gauges from a target's session table.
    pub fn observe_target(&self, ctx: &crate::target::TargetContext) {
        let all = ctx.sessions.all();
        let conns = all
            .iter()
            .map(|s| crate::target::session::lock(&s.connections).len())
            .sum();
        self.set_sessions(all.len(), conns);
    }

    /// One login attempt ended: `success`, `refused`, `error`, `closed`, or `over_capacity`
    /// (a connection over `max_tcp_connections`, refused before its login was read).
    pub fn login(&self, result: &str) {
        self.logins.with_label_values(&[result]).inc();
    }

    /// Count the end of a login from the connection's login outcome (`Err` = timed out).
    pub fn login_outcome<E1, E2>(
        &self,
        outcome: &Result<Result<crate::target::login::LoginEnd, E1>, E2>,
    ) {
        use crate::target::login::LoginEnd;
        self.login(match outcome {
            Ok(Ok(LoginEnd::FullFeature(_))) => "success",
            Ok(Ok(LoginEnd::Failed(_))) => "refused",
            Ok(Ok(LoginEnd::Closed)) => "closed",
            Ok(Err(_)) | Err(_) => "error",
        });
    }

    /// A SCSI command was answered; `bytes` moved to or from the volume (0 unless GOOD).
    pub fn command_done(&self, kind: CommandKind, bytes: u64, latency: Duration) {
        let label = kind.label();
        self.commands.with_label_values(&[label]).inc();
        self.latency
            .with_label_values(&[label])
            .observe(latency.as_secs_f64());
        match kind {
            CommandKind::Read => self.bytes.with_label_values(&["read"]).inc_by(bytes),
            CommandKind::Write => self.bytes.with_label_values(&["written"]).inc_by(bytes),
            CommandKind::Other => {}
        }
    }

    /// [`Metrics::command_done`] from a command's CDB, expected data transfer length, outcome and
    /// start time: the target calls this once, just before it sends the status.
    pub fn scsi_outcome(
        &self,
        cdb: &[u8],
        expected_len: u32,
        outcome: &crate::scsi::ScsiOutcome,
        started: std::time::Instant,
    ) {
        let kind = CommandKind::from_cdb(cdb);
        let bytes = match (outcome.status, kind) {
            (0, CommandKind::Read) => outcome.data_in.len().min(expected_len as usize) as u64,
            (0, CommandKind::Write) => outcome.data_out_wanted.min(expected_len) as u64,
            _ => 0,
        };
        self.command_done(kind, bytes, started.elapsed());
    }

    /// Sample what the volume registry knows: sessions, connections, and the size on disk of
    /// each volume's journal directory. Blocking (walks directories): call it off the runtime.
    ///
    /// Also the journal's gauges: oldest point, flush and merge lag, and the validity of each
    /// port that journaled writes (a resynchronised port reads 1 again).
    pub fn observe_registry(&self, reg: &crate::volume::Registry) {
        let _g = self.sampling.lock().unwrap_or_else(|p| p.into_inner());
        self.observe_registry_locked(reg);
    }

    /// [`Metrics::observe_registry`], then [`Metrics::render`], with no other sampling in
    /// between (a concurrent scrape must not see the port gauges half rebuilt). Blocking.
    pub fn scrape(&self, reg: &crate::volume::Registry) -> String {
        let _g = self.sampling.lock().unwrap_or_else(|p| p.into_inner());
        self.observe_registry_locked(reg);
        self.render()
    }

    fn observe_registry_locked(&self, reg: &crate::volume::Registry) {
        self.observe_target(&reg.ctx);
        let now = crate::volume::now_micros();
        self.port_valid.reset();
        for v in reg.volumes() {
            if let Some(j) = &v.journal {
                let name = &v.meta.name;
                let dir = reg.dd.volume_dir(name).join("journal");
                self.journal_bytes(name, disk_usage(&dir));
                self.journal_entries(name, j.primary_entries() as u64);
                let oldest = std::time::UNIX_EPOCH + Duration::from_micros(j.oldest_point());
                self.oldest_point(name, oldest);
                self.flush_lag(name, j.flush_lag(now));
                self.merge_lag(name, j.merge_lag(now));
                match j.port_validity() {
                    Ok(ports) => {
                        for (port, valid) in ports {
                            self.port_valid(name, &port.to_string(), valid);
                        }
                    }
                    Err(e) => tracing::warn!(volume = %name, "cannot read port validity: {e}"),
                }
            }
        }
    }

    /// Commands and bytes counted since the daemon started (for `rewind status`).
    pub fn io_totals(&self) -> crate::admin::IoTotals {
        let c = |k: &str| self.commands.with_label_values(&[k]).get();
        let b = |d: &str| self.bytes.with_label_values(&[d]).get();
        crate::admin::IoTotals {
            commands_read: c("read"),
            commands_write: c("write"),
            commands_other: c("other"),
            bytes_read: b("read"),
            bytes_written: b("written"),
        }
    }

    /// A PDU was answered with a Reject.
    pub fn pdu_rejected(&self) {
        self.pdus_rejected.inc();
    }

    // ---- CDP (sampled from the journals) --------------------------------------------------------

    pub fn journal_bytes(&self, volume: &str, bytes: u64) {
        self.journal_bytes
            .with_label_values(&[volume])
            .set(bytes.min(i64::MAX as u64) as i64);
    }

    pub fn journal_entries(&self, volume: &str, entries: u64) {
        self.journal_entries
            .with_label_values(&[volume])
            .set(entries.min(i64::MAX as u64) as i64);
    }

    /// The oldest point in time `volume` can be rewound to.
    pub fn oldest_point(&self, volume: &str, at: SystemTime) {
        let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.oldest_point
            .with_label_values(&[volume])
            .set(secs.min(i64::MAX as u64) as i64);
    }

    pub fn flush_lag(&self, volume: &str, lag: Duration) {
        self.flush_lag
            .with_label_values(&[volume])
            .set(lag.as_secs_f64());
    }

    pub fn merge_lag(&self, volume: &str, lag: Duration) {
        self.merge_lag
            .with_label_values(&[volume])
            .set(lag.as_secs_f64());
    }

    pub fn port_valid(&self, volume: &str, port: &str, valid: bool) {
        self.port_valid
            .with_label_values(&[volume, port])
            .set(i64::from(valid));
    }

    /// Forget a volume's CDP series (the volume was deleted).
    pub fn forget_volume(&self, volume: &str) {
        let _ = self.journal_bytes.remove_label_values(&[volume]);
        let _ = self.journal_entries.remove_label_values(&[volume]);
        let _ = self.oldest_point.remove_label_values(&[volume]);
        let _ = self.flush_lag.remove_label_values(&[volume]);
        let _ = self.merge_lag.remove_label_values(&[volume]);
    }
}

/// Bytes allocated on disk under `dir` (sparse files count what they hold).
fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_opcodes() {
        assert_eq!(CommandKind::from_cdb(&[0x28]), CommandKind::Read);
        assert_eq!(CommandKind::from_cdb(&[0x8a]), CommandKind::Write);
        assert_eq!(CommandKind::from_cdb(&[0x12]), CommandKind::Other);
        assert_eq!(CommandKind::from_cdb(&[]), CommandKind::Other);
    }

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new();
        m.login("success");
        m.command_done(CommandKind::Read, 4096, Duration::from_millis(2));
        m.command_done(CommandKind::Other, 0, Duration::from_micros(50));
        m.pdu_rejected();
        m.journal_bytes("vol0", 123);
        m.journal_entries("vol0", 45);
        m.port_valid("vol0", "1", true);
        let text = m.render();
        assert!(text.contains("rewind_logins_total{result=\"success\"} 1"));
        assert!(text.contains("rewind_bytes_total{direction=\"read\"} 4096"));
        assert!(text.contains("rewind_command_duration_seconds_count{kind=\"read\"} 1"));
        assert!(text.contains("rewind_pdus_rejected_total 1"));
        assert!(text.contains("rewind_journal_bytes{volume=\"vol0\"} 123"));
        assert!(text.contains("rewind_journal_entries{volume=\"vol0\"} 45"));
        assert!(text.contains("process_resident_memory_bytes "));
        assert!(text.contains("rewind_port_valid{port=\"1\",volume=\"vol0\"} 1"));
        assert!(text.contains("rewind_build_info{version="));
    }
}
