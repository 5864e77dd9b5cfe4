//! The `rewind` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rewind::admin;
use rewind::config::{parse_size, Config};
use rewind::datadir::DataDir;

#[derive(Parser)]
#[command(
    name = "rewind",
    version,
    about = "iSCSI target with continuous data protection",
    after_help = "Examples:\n  rewind serve                                  serve ./rewind-data on 127.0.0.1:3260\n  rewind --data /var/lib/rewind serve --listen 0.0.0.0:3260\n  rewind volume create db --size 20GiB\n  rewind volume list --json"
)]
struct Cli {
    /// Data directory: volumes, journals, the admin socket.
    #[arg(
        long,
        global = true,
        env = "REWIND_DATA",
        default_value = "./rewind-data"
    )]
    data: PathBuf,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "REWIND_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the data directory's volumes over iSCSI (creates a 1 GiB volume `vol0` if there is none).
    Serve(ServeArgs),
    /// Create and list volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Show the running daemon's portals, targets, sessions and volumes.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show a volume's history: newest point, bookmarks, consistency marks, retention.
    #[command(after_help = "Example:\n  rewind history vol0")]
    History {
        volume: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Name the current moment of a volume, to export or restore it later by name.
    #[command(after_help = "Example:\n  rewind bookmark vol0 before-upgrade")]
    Bookmark { volume: String, name: String },
    /// Export a past point of a volume as a read-only iSCSI target.
    #[command(subcommand)]
    View(ViewCommand),
    /// Roll a volume back to a past point (the rollback is journaled and can be undone).
    #[command(
        after_help = "Examples:\n  rewind restore vol0 --at 10m\n  rewind restore vol0 --bookmark before-upgrade --force"
    )]
    Restore {
        volume: String,
        #[command(flatten)]
        point: PointArgs,
        /// Restore even while initiators are logged in to the volume.
        #[arg(long)]
        force: bool,
    },
    /// Apply the retention policy to a volume's journal now.
    Merge { volume: String },
}

/// A point in time: `--at` (RFC 3339 time or an age such as 5m) or `--bookmark`.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct PointArgs {
    /// RFC 3339 time (2026-11-23T10:00:00Z) or how long ago (30s, 5m, 2h 30m).
    #[arg(long)]
    at: Option<String>,
    /// A bookmark's name.
    #[arg(long)]
    bookmark: Option<String>,
}

#[derive(Subcommand)]
enum ViewCommand {
    /// Export VOLUME as it was at a point in time as a read-only target.
    #[command(
        after_help = "Examples:\n  rewind view export vol0 --at 5m\n  rewind view export vol0 --bookmark before-upgrade --name pre"
    )]
    Export {
        volume: String,
        #[command(flatten)]
        point: PointArgs,
        /// Suffix of the target name (default: at-<time stamp>).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List exported views.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop exporting a view (its sessions are closed).
    Remove { target: String },
}

#[derive(Args)]
struct ServeArgs {
    /// Portal to listen on, ADDR:PORT (repeatable; overrides the config's `listen`).
    #[arg(long, env = "REWIND_LISTEN")]
    listen: Vec<String>,
    /// TOML config file (targets, portals, volumes).
    #[arg(long, env = "REWIND_CONFIG")]
    config: Option<PathBuf>,
    /// Serve the HTTP admin API (/metrics, /healthz, /api/v1) on ADDR:PORT; off by default.
    #[arg(long, env = "REWIND_HTTP", value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum VolumeCommand {
    /// Create a thin volume.
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
    /// List volumes.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(format: LogFormat) {
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
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
            let result = rt.block_on(rewind::daemon::serve_with_http(
                &cli.data, config, args.http,
            ));
            // `serve` flushed every volume; do not wait on stragglers.
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
            result
        }
        Command::Volume(VolumeCommand::Create {
            name,
            size,
            block_size,
            read_only,
        }) => {
            let bytes = parse_size(&size)?;
            let req = admin::Request::VolumeCreate {
                name: name.clone(),
                size: bytes,
                block_size,
                read_only,
            };
            match admin::call(&cli.data, &req) {
                Ok(_) => {
                    println!(
                        "created volume {name} ({bytes} bytes, {block_size}-byte blocks), now served as {}",
                        rewind::config::default_target_name(&name)
                    );
                    Ok(())
                }
                Err(admin::ClientError::NotRunning) => {
                    let dd = DataDir::open(&cli.data)?;
                    let meta = dd.create(&name, bytes, block_size, None, read_only)?;
                    println!(
                        "created volume {} ({} bytes, {}-byte blocks); `rewind serve` will serve it as {}",
                        meta.name,
                        meta.size,
                        meta.block_size,
                        rewind::config::default_target_name(&meta.name)
                    );
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Status { json } => print_status(&cli.data, json),
        Command::History { volume, json } => {
            let v = admin::call(&cli.data, &admin::Request::History { volume })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "volume            {}",
                    v["volume"].as_str().unwrap_or_default()
                );
                println!(
                    "newest point      {}",
                    v["newest"].as_str().unwrap_or_default()
                );
                println!("journal entries   {}", v["entries"]);
                println!(
                    "consistency marks {} (last {})",
                    v["consistency_marks"],
                    v["last_consistency_mark"].as_str().unwrap_or("none")
                );
                let invalid = v["invalid_ports"].as_array().map_or(0, Vec::len);
                if invalid > 0 {
                    println!("WARNING: {invalid} port(s) could not flush their journal; points after that are not guaranteed complete");
                }
                println!("bookmarks");
                for b in v["bookmarks"].as_array().into_iter().flatten() {
                    println!(
                        "  {:<24} {}",
                        b["name"].as_str().unwrap_or_default(),
                        b["time"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        Command::Bookmark { volume, name } => {
            let v = admin::call(&cli.data, &admin::Request::Bookmark { volume, name })?;
            println!(
                "bookmark {} = {}",
                v["bookmark"].as_str().unwrap_or_default(),
                v["time"].as_str().unwrap_or_default()
            );
            Ok(())
        }
        Command::View(ViewCommand::Export {
            volume,
            point,
            name,
            json,
        }) => {
            let (at, bookmark) = point.resolve()?;
            let v = admin::call(
                &cli.data,
                &admin::Request::ViewExport {
                    volume,
                    at,
                    bookmark,
                    name,
                },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let info: rewind::volume::ViewInfo = serde_json::from_value(v)?;
                println!(
                    "exported {} as it was at {}",
                    info.volume,
                    rewind::volume::format_stamp(info.point)
                );
                println!("target   {} (read-only, LUN 0)", info.target);
                if !info.invalid_ports.is_empty() {
                    println!("WARNING: {} port(s) had journal failures before this point; it may be incomplete", info.invalid_ports.len());
                }
            }
            Ok(())
        }
        Command::View(ViewCommand::List { json }) => {
            let v = admin::call(&cli.data, &admin::Request::ViewList)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let views: Vec<rewind::volume::ViewInfo> = serde_json::from_value(v)?;
                println!("{:<60} {:<12} POINT", "TARGET", "VOLUME");
                for x in views {
                    println!(
                        "{:<60} {:<12} {}",
                        x.target,
                        x.volume,
                        rewind::volume::format_stamp(x.point)
                    );
                }
            }
            Ok(())
        }
        Command::View(ViewCommand::Remove { target }) => {
            admin::call(
                &cli.data,
                &admin::Request::ViewRemove {
                    target: target.clone(),
                },
            )?;
            println!("view {target} removed");
            Ok(())
        }
        Command::Restore {
            volume,
            point,
            force,
        } => {
            let (at, bookmark) = point.resolve()?;
            eprintln!("restoring {volume} ...");
            let v = admin::call(
                &cli.data,
                &admin::Request::Restore {
                    volume,
                    at,
                    bookmark,
                    force,
                },
            )?;
            println!(
                "restored {} to {} ({} chunks changed)",
                v["volume"].as_str().unwrap_or_default(),
                v["restored_to"].as_str().unwrap_or_default(),
                v["chunks_changed"]
            );
            Ok(())
        }
        Command::Merge { volume } => {
            let v = admin::call(&cli.data, &admin::Request::Merge { volume })?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Command::Volume(VolumeCommand::List { json }) => {
            let dd = DataDir::open(&cli.data)?;
            let list = dd.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<20} {:>16} {:>6} {:<3}", "NAME", "SIZE", "BLOCK", "RO");
                for v in list {
                    println!(
                        "{:<20} {:>16} {:>6} {:<3}",
                        v.name,
                        v.size,
                        v.block_size,
                        if v.read_only { "yes" } else { "no" }
                    );
                }
            }
            Ok(())
        }
    }
}

impl PointArgs {
    /// (µs since the epoch, bookmark name)
    fn resolve(&self) -> anyhow::Result<(Option<u64>, Option<String>)> {
        match &self.at {
            Some(text) => {
                let ts = rewind::volume::parse_point(text, rewind::volume::now_micros())
                    .map_err(anyhow::Error::msg)?;
                Ok((Some(ts), None))
            }
            None => Ok((None, self.bookmark.clone())),
        }
    }
}

fn print_status(data: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let value = admin::call(data, &admin::Request::Status)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let s: admin::Status = serde_json::from_value(value)?;
    println!("rewind {} listening on {}", s.version, s.portals.join(", "));
    println!("\nTARGETS");
    for t in &s.targets {
        println!("  {}  luns {:?}", t.name, t.luns);
    }
    println!("\nSESSIONS ({})", s.sessions.len());
    for x in &s.sessions {
        println!(
            "  tsih {:<5} {} isid {} -> {}  connections {} tasks {}",
            x.tsih,
            x.initiator,
            x.isid,
            x.target.as_deref().unwrap_or("(discovery)"),
            x.connections,
            x.tasks
        );
    }
    println!("\nVOLUMES");
    for v in &s.volumes {
        println!(
            "  {:<20} {:>16} bytes  {}-byte blocks{}",
            v.name,
            v.size,
            v.block_size,
            if v.read_only { "  read-only" } else { "" }
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
