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
    /// Check a volume's journal offline (no daemon may be serving the data directory); with
    /// --image, compare the volume at a past point with an image. Exit 0 ok, 1 corruption or
    /// mismatch, 2 usage.
    #[command(
        after_help = "Examples:\n  rewind verify vol0\n  rewind verify vol0 --bookmark before-upgrade --image backup.img"
    )]
    Verify(VerifyArgs),
}

#[derive(Args)]
struct VerifyArgs {
    volume: String,
    /// Point to compare: RFC 3339 time, an age such as 5m, or µs since the epoch.
    #[arg(long, conflicts_with = "bookmark", requires = "image")]
    at: Option<String>,
    /// Point to compare: a bookmark's name.
    #[arg(long, requires = "image")]
    bookmark: Option<String>,
    /// Raw image to compare the volume at --at/--bookmark with.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Extent size for the comparison (sha256 per extent).
    #[arg(long, default_value = "1MiB")]
    extent: String,
    /// The daemon's config file, for its journal settings (chunk size).
    #[arg(long, env = "REWIND_CONFIG")]
    config: Option<PathBuf>,
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
            rt.block_on(rewind::daemon::serve(&cli.data, config))
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
        Command::Verify(args) => {
            let code = verify(&cli.data, &args);
            if code != 0 {
                std::process::exit(code);
            }
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

/// `rewind verify`: 0 intact (and equal), 1 corruption or mismatch, 2 usage / cannot run.
fn verify(data: &std::path::Path, args: &VerifyArgs) -> i32 {
    use rewind::verify;
    let usage = |m: String| {
        eprintln!("error: {m}");
        2
    };
    if admin::call(data, &admin::Request::Status).is_ok() {
        return usage(format!(
            "a rewind daemon is serving {}; stop it first (verify reads the journal offline)",
            data.display()
        ));
    }
    if args.image.is_some() && args.at.is_none() && args.bookmark.is_none() {
        return usage("--image needs --at or --bookmark".into());
    }
    let dd = match DataDir::open(data) {
        Ok(d) => d,
        Err(e) => return usage(e.to_string()),
    };
    let meta = match dd.load(&args.volume) {
        Ok(m) => m,
        Err(e) => return usage(e.to_string()),
    };
    let jdir = verify::journal_dir(&dd, &meta);
    if !jdir.exists() {
        return usage(format!("volume {} has no journal", meta.name));
    }
    let check = match verify::check_journal(&jdir, meta.block_size) {
        Ok(c) => c,
        Err(e) => return usage(format!("reading {}: {e}", jdir.display())),
    };
    let entries: u64 = check.segments.iter().map(|s| s.entries).sum();
    println!(
        "journal of {}: {} segment file(s), {} entries",
        meta.name,
        check.segments.len(),
        entries
    );
    for s in check.torn_tails() {
        if let Some((off, why)) = &s.tail {
            println!(
                "  torn tail (left by a crash; recovery cuts it): {} at offset {off} of {}: {why}",
                s.file.display(),
                s.len
            );
        }
    }
    let mut code = 0;
    if check.intact() {
        println!("journal intact");
    } else {
        for p in &check.problems {
            println!("CORRUPT: {p}");
        }
        code = 1;
    }
    let Some(image) = &args.image else {
        return code;
    };
    let point = match (&args.at, &args.bookmark) {
        (Some(t), _) => match t.parse::<u64>() {
            Ok(us) => verify::Point::At(us),
            Err(_) => match rewind::volume::parse_point(t, rewind::volume::now_micros()) {
                Ok(us) => verify::Point::At(us),
                Err(e) => return usage(e),
            },
        },
        (None, Some(b)) => verify::Point::Bookmark(b.clone()),
        (None, None) => return usage("--image needs --at or --bookmark".into()),
    };
    let extent = match parse_size(&args.extent) {
        Ok(n) if n >= 512 => n,
        _ => return usage(format!("bad --extent {:?}", args.extent)),
    };
    let journal_cfg = match &args.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c.journal,
            Err(e) => return usage(format!("{e:#}")),
        },
        None => rewind::journal::JournalConfig::default(),
    };
    match verify::compare_point(&dd, &meta, &journal_cfg, &point, image, extent) {
        Ok(c) => {
            if !c.invalid_ports.is_empty() {
                println!(
                    "WARNING: {} port(s) had journal failures around this point",
                    c.invalid_ports.len()
                );
            }
            if c.mismatches.is_empty() {
                println!(
                    "view at {} equals {}",
                    rewind::volume::format_stamp(c.point),
                    image.display()
                );
            } else {
                for m in &c.mismatches {
                    println!(
                        "MISMATCH extent {}+{}: view sha256 {} image sha256 {}",
                        m.offset, m.len, m.view_sha256, m.image_sha256
                    );
                }
                println!(
                    "view at {} differs from {} in {} extent(s)",
                    rewind::volume::format_stamp(c.point),
                    image.display(),
                    c.mismatches.len()
                );
                code = 1;
            }
            code
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            2
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
