//! Argument definitions (clap derive) and dispatch.

/// `println!` that exits quietly when standard output is a closed pipe (see `out`).
macro_rules! outln {
    () => {
        $crate::cli::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}

mod out;
mod print;
mod verify;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rewind::admin::{self, Request};
use rewind::config::{parse_size, Config};
use rewind::datadir::DataDir;

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_NOT_RUNNING: u8 = 3;

#[derive(Parser)]
#[command(
    name = "rewind",
    version,
    about = "iSCSI target with continuous data protection",
    after_help = "Examples:
  rewind serve                                   serve ./rewind-data on 127.0.0.1:3260
  rewind --data /var/lib/rewind serve --listen 0.0.0.0:3260
  rewind volume create db --size 20GiB
  rewind bookmark db before-upgrade
  rewind snapshot export db --at '15m ago'
  rewind restore db --to @before-upgrade

Exit codes: 0 success, 1 failure, 2 usage error, 3 no daemon running on the data directory."
)]
pub struct Cli {
    /// Data directory: volumes, journals, the admin socket.
    #[arg(
        long,
        global = true,
        env = "REWIND_DATA",
        default_value = "./rewind-data"
    )]
    pub data: PathBuf,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "REWIND_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the data directory's volumes over iSCSI (creates a 1 GiB volume `vol0` if there is none).
    Serve(ServeArgs),
    /// Create and list volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Show the running daemon's portals, targets, sessions, volumes, journals (CDP) and I/O totals.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show a volume's history: oldest and newest point, bookmarks, consistency marks, retention.
    #[command(after_help = "Example:\n  rewind history vol0 --json")]
    History {
        volume: String,
        #[arg(long)]
        json: bool,
    },
    /// Name the current moment of a volume (use it later as WHEN = @NAME).
    #[command(after_help = "Example:\n  rewind bookmark vol0 before-upgrade")]
    Bookmark { volume: String, name: String },
    /// Export a past moment of a volume as an iSCSI target of its own.
    #[command(subcommand, visible_alias = "view")]
    Snapshot(SnapshotCommand),
    /// Roll a volume back to a past moment (the rollback is journaled and can be undone).
    #[command(
        after_help = "Examples:\n  rewind restore vol0 --to '10m ago'\n  rewind restore vol0 --to @before-upgrade --force\n\nWHEN is an RFC 3339 time (2026-11-23T10:15:00Z), an age (15m ago), or @BOOKMARK."
    )]
    Restore {
        volume: String,
        /// WHEN: RFC 3339 time, an age such as "15m ago", or @BOOKMARK.
        #[arg(long)]
        to: String,
        /// Log out initiators that are logged in to the volume, then restore.
        #[arg(long)]
        force: bool,
    },
    /// Apply the retention policy to a volume's journal now.
    Merge { volume: String },
    /// Replicate a volume to a secondary site (runs in the daemon; resumed after a restart).
    #[command(
        after_help = "Examples:\n  rewind replicate db --to dr.example.net:3262 --interval 30s\n  rewind replicate db --stop\n\nBoth sites need the same [replication] secret_file; the secondary lists the volume under\n[replication] volumes and has it with the same size and block size."
    )]
    Replicate {
        volume: String,
        /// The secondary's replication listener, HOST:PORT.
        #[arg(long, required_unless_present = "stop")]
        to: Option<String>,
        /// How often a consistent point is shipped (the recovery point objective).
        #[arg(long, default_value = "30s")]
        interval: humantime::Duration,
        /// Stop replicating the volume (the secondary keeps what it has).
        #[arg(long, conflicts_with = "to")]
        stop: bool,
    },
    /// Fail over: make a replication secondary's volume writable (it takes no more updates).
    #[command(after_help = "Example:\n  rewind promote db")]
    Promote { volume: String },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  rewind completions bash > /etc/bash_completion.d/rewind\n  rewind completions zsh > \"${fpath[1]}/_rewind\""
    )]
    Completions { shell: clap_complete::Shell },
    /// Check a volume's journal offline (no daemon may be serving the data directory); with
    /// --image, compare the volume at a past point with an image. Exit 0 ok, 1 corruption or
    /// mismatch, 2 usage.
    #[command(
        after_help = "Examples:\n  rewind verify vol0\n  rewind verify vol0 --bookmark before-upgrade --image backup.img"
    )]
    Verify(verify::VerifyArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// Portal to listen on, ADDR:PORT (repeatable; overrides the config's `listen`).
    #[arg(long, env = "REWIND_LISTEN")]
    pub listen: Vec<String>,
    /// TOML config file (targets, portals, volumes, journal, authentication).
    #[arg(long, env = "REWIND_CONFIG")]
    pub config: Option<PathBuf>,
    /// Serve the HTTP admin API (/metrics, /healthz, /api/v1) on ADDR:PORT; off by default.
    #[arg(long, env = "REWIND_HTTP", value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a thin volume (served at once if the daemon runs).
    #[command(after_help = "Example:\n  rewind volume create db --size 20GiB --block-size 4096")]
    Create {
        name: String,
        /// Size, e.g. 10GiB or 512MiB.
        #[arg(long)]
        size: String,
        /// Logical block size: 512 or 4096.
        #[arg(long, default_value_t = 512)]
        block_size: u32,
        /// Serve it read-only.
        #[arg(long)]
        read_only: bool,
    },
    /// Grow a served volume; logged-in initiators are told its capacity changed.
    #[command(
        after_help = "Volumes only grow. The daemon must be running. Initiators see a unit attention\n(CAPACITY DATA HAS CHANGED); on Linux, `iscsiadm -m session --rescan` then shows the new size.\nExample:\n  rewind volume resize db --size 40GiB"
    )]
    Resize {
        name: String,
        /// The new size, e.g. 40GiB (not smaller than the current one).
        #[arg(long)]
        size: String,
    },
    /// List volumes.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Export VOLUME as it was at WHEN; the new target's IQN is printed on the last line.
    #[command(
        after_help = "Examples:\n  rewind snapshot export vol0 --at 2026-11-23T10:15:00Z\n  rewind snapshot export vol0 --at '15m ago'\n  rewind snapshot export vol0 --at @before-upgrade --name pre\n  rewind snapshot export vol0 --at '1h ago' --writable      # test failover: writes are discarded"
    )]
    Export {
        volume: String,
        /// WHEN: RFC 3339 time, an age such as "15m ago", or @BOOKMARK.
        #[arg(long)]
        at: String,
        /// Target name suffix instead of one derived from the time.
        #[arg(long)]
        name: Option<String>,
        /// Accept writes into a private overlay, discarded at unexport (never touches the volume).
        #[arg(long)]
        writable: bool,
        #[arg(long)]
        json: bool,
    },
    /// List exported snapshots.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop exporting a snapshot (its sessions are closed).
    Unexport { target: String },
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(data: &std::path::Path, args: &ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.listen = args.listen.clone();
    }
    config.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(rewind::daemon::serve_with_http(data, config, args.http));
    // `serve` flushed every volume; do not wait on stragglers.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

fn create_volume(
    data: &std::path::Path,
    name: String,
    size: &str,
    block_size: u32,
    read_only: bool,
) -> anyhow::Result<()> {
    let bytes = parse_size(size)?;
    let target = rewind::config::default_target_name(&name);
    let req = Request::VolumeCreate {
        name: name.clone(),
        size: bytes,
        block_size,
        read_only,
    };
    match admin::call(data, &req) {
        Ok(_) => outln!("created volume {name} ({bytes} bytes, {block_size}-byte blocks), now served as {target}"),
        Err(admin::ClientError::NotRunning) => {
            DataDir::open(data)?.create(&name, bytes, block_size, None, read_only)?;
            outln!("created volume {name} ({bytes} bytes, {block_size}-byte blocks); `rewind serve` will serve it as {target}");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let data = cli.data.as_path();
    match cli.command {
        Command::Serve(args) => serve(data, &args),
        Command::Volume(VolumeCommand::Create {
            name,
            size,
            block_size,
            read_only,
        }) => create_volume(data, name, &size, block_size, read_only),
        Command::Volume(VolumeCommand::Resize { name, size }) => {
            let bytes = parse_size(&size)?;
            let v = match admin::call(data, &Request::VolumeResize { name: name.clone(), size: bytes }) {
                Err(admin::ClientError::NotRunning) => anyhow::bail!(
                    "the daemon is not running: start `rewind serve` and resize while it serves the volume (initiators must be told)"
                ),
                r => r?,
            };
            let before = v["size_before"].as_u64().unwrap_or_default();
            if before == bytes {
                outln!("volume {name} is already {bytes} bytes");
            } else {
                outln!("volume {name} grew from {before} to {bytes} bytes; logged-in initiators were told");
            }
            Ok(())
        }
        Command::Volume(VolumeCommand::List { json }) => {
            print::volumes(&DataDir::open(data)?.list()?, json)
        }
        Command::Status { json } => {
            let v = admin::call(data, &Request::Status)?;
            let repl = v["replication"].clone();
            print::status(v, json)?;
            if !json {
                print_replication(&repl);
            }
            Ok(())
        }
        Command::History { volume, json } => {
            let v = admin::call(data, &Request::History { volume })?;
            let repl = v["replication"].clone();
            print::history(v, json)?;
            if !json {
                print_volume_replication(&repl);
            }
            Ok(())
        }
        Command::Replicate {
            volume,
            to,
            interval,
            stop,
        } => {
            if stop {
                admin::call(
                    data,
                    &Request::ReplicateStop {
                        volume: volume.clone(),
                    },
                )?;
                outln!("stopped replicating {volume}");
                return Ok(());
            }
            let to = to.unwrap_or_default();
            let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
            admin::call(
                data,
                &Request::Replicate {
                    volume: volume.clone(),
                    to: to.clone(),
                    interval_ms,
                },
            )?;
            outln!("replicating {volume} to {to} every {interval}; see `rewind status`");
            Ok(())
        }
        Command::Promote { volume } => {
            let v = admin::call(
                data,
                &Request::Promote {
                    volume: volume.clone(),
                },
            )?;
            outln!(
                "{volume} is promoted and writable; it holds the primary's state at {}",
                v["at"].as_str().unwrap_or("(nothing shipped yet)")
            );
            Ok(())
        }
        Command::Bookmark { volume, name } => {
            let v = admin::call(data, &Request::Bookmark { volume, name })?;
            outln!(
                "bookmark {} = {}",
                v["bookmark"].as_str().unwrap_or_default(),
                v["time"].as_str().unwrap_or_default()
            );
            Ok(())
        }
        Command::Snapshot(SnapshotCommand::Export {
            volume,
            at,
            name,
            writable,
            json,
        }) => {
            let req = Request::SnapshotExport {
                volume,
                when: at,
                name,
                writable,
            };
            print::snapshot(admin::call(data, &req)?, json)
        }
        Command::Snapshot(SnapshotCommand::List { json }) => {
            print::snapshots(admin::call(data, &Request::SnapshotList)?, json)
        }
        Command::Snapshot(SnapshotCommand::Unexport { target }) => {
            admin::call(
                data,
                &Request::SnapshotUnexport {
                    target: target.clone(),
                },
            )?;
            outln!("{target} is no longer exported");
            Ok(())
        }
        Command::Restore { volume, to, force } => {
            let mut bar = print::Progress::new(&format!("restoring {volume}"));
            let v = admin::call_with_progress(
                data,
                &Request::Restore {
                    volume,
                    when: to,
                    force,
                },
                &mut |d, t| bar.update(d, t),
            )?;
            bar.finish();
            outln!(
                "restored {} to {} ({} chunks changed)",
                v["volume"].as_str().unwrap_or_default(),
                v["restored_to"].as_str().unwrap_or_default(),
                v["chunks_changed"]
            );
            Ok(())
        }
        Command::Verify(args) => {
            let code = verify::run(data, &args);
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into a buffer first: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "rewind", &mut script);
            out::bytes(&script);
            Ok(())
        }
        Command::Merge { volume } => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&admin::call(data, &Request::Merge { volume })?)?
            );
            Ok(())
        }
    }
}

fn micros(v: &serde_json::Value) -> String {
    match v.as_u64() {
        Some(us) => {
            humantime::format_duration(std::time::Duration::from_millis(us / 1000)).to_string()
        }
        None => "-".into(),
    }
}

/// Replication lines of `rewind status`.
fn print_replication(r: &serde_json::Value) {
    let empty = Vec::new();
    let primary = r["primary"].as_array().unwrap_or(&empty);
    let secondary = r["secondary"].as_array().unwrap_or(&empty);
    if primary.is_empty() && secondary.is_empty() && r["listen"].is_null() {
        return;
    }
    outln!("\nREPLICATION");
    if let Some(l) = r["listen"].as_str() {
        outln!("  accepting on {l}");
    }
    for p in primary {
        outln!(
            "  {} -> {}  {}  shipped {}  lag {} / {} bytes  updates {}  sent {} data bytes ({} on the wire)  errors {}",
            p["volume"].as_str().unwrap_or("?"),
            p["to"].as_str().unwrap_or("?"),
            p["state"].as_str().unwrap_or("?"),
            p["shipped"].as_str().unwrap_or("never"),
            micros(&p["lag_us"]),
            p["lag_bytes"],
            p["updates"],
            p["data_bytes_sent"],
            p["wire_bytes"],
            p["errors"],
        );
        if let Some(last) = p["recent"].as_array().and_then(|a| a.last()) {
            outln!(
                "    last update: {} at {}: {} extents, {} data bytes, {} wire bytes, {} bytes read; journal grew {} bytes",
                last["kind"].as_str().unwrap_or("?"),
                last["point"].as_str().unwrap_or("?"),
                last["extents"],
                last["data_bytes"],
                last["wire_bytes"],
                last["read_bytes"],
                last["journal_growth_bytes"],
            );
        }
        if let Some(e) = p["last_error"].as_str() {
            outln!("    last error: {e}");
        }
    }
    for s in secondary {
        outln!(
            "  {} <- {}  {}  at {}  updates {}  rejected {}  errors {}",
            s["volume"].as_str().unwrap_or("?"),
            s["connected_from"].as_str().unwrap_or("(not connected)"),
            s["role"].as_str().unwrap_or("?"),
            s["applied"].as_str().unwrap_or("nothing yet"),
            s["updates_applied"],
            s["rejected"],
            s["errors"],
        );
        if let Some(e) = s["last_error"].as_str() {
            outln!("    last error: {e}");
        }
    }
}

/// Replication lines of `rewind history VOL`.
fn print_volume_replication(r: &serde_json::Value) {
    if let Some(p) = r.get("primary").filter(|p| !p.is_null()) {
        outln!(
            "replicated to     {} (last shipped point {}, lag {})",
            p["to"].as_str().unwrap_or("?"),
            p["shipped"].as_str().unwrap_or("never"),
            micros(&p["lag_us"])
        );
    }
    if let Some(s) = r.get("secondary").filter(|s| !s.is_null()) {
        outln!(
            "replica           {} at the primary's {} (bookmarks repl-<µs> mark each shipped point)",
            s["role"].as_str().unwrap_or("?"),
            s["applied"].as_str().unwrap_or("nothing yet")
        );
    }
}
