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
