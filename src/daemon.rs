//! `rewind serve`: open the data directory, build the targets and logical units, listen, and
//! shut down cleanly on SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use tracing::info;

use crate::config::{default_target_name, parse_size, Config, DEFAULT_VOLUME, DEFAULT_VOLUME_SIZE};
use crate::datadir::{DataDir, VolumeMeta};
use crate::scsi::{LogicalUnit, LuConfig};
use crate::storage::file::FileStore;
use crate::storage::BlockStore;
use crate::target::{server, Target, TargetContext};

/// Make sure every volume the config names exists, and that there is at least one volume.
pub fn prepare_volumes(dd: &DataDir, config: &Config) -> anyhow::Result<Vec<VolumeMeta>> {
    for v in &config.volumes {
        match dd.load(&v.name) {
            Ok(meta) => {
                if meta.block_size != v.block_size {
                    bail!(
                        "volume {:?} exists with block size {}, but the config says {}",
                        v.name,
                        meta.block_size,
                        v.block_size
                    );
                }
            }
            Err(crate::datadir::DataDirError::NoSuchVolume(_)) => {
                let size = match (&v.size, &v.path) {
                    (Some(s), _) => parse_size(s)?,
                    (None, Some(p)) => std::fs::metadata(p)
                        .with_context(|| format!("backing path {}", p.display()))?
                        .len(),
                    (None, None) => bail!(
                        "volume {:?} does not exist yet: give it a size in the config",
                        v.name
                    ),
                };
                dd.create(&v.name, size, v.block_size, v.path.clone(), v.read_only)?;
                info!(volume = %v.name, size, "volume created");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut metas = dd.list()?;
    if metas.is_empty() {
        let meta = dd.create(DEFAULT_VOLUME, DEFAULT_VOLUME_SIZE, 512, None, false)?;
        info!(
            volume = DEFAULT_VOLUME,
            size = DEFAULT_VOLUME_SIZE,
            "created the default thin volume"
        );
        metas.push(meta);
    }
    // The config may turn an existing volume read-only.
    for m in &mut metas {
        if config
            .volumes
            .iter()
            .any(|v| v.name == m.name && v.read_only)
        {
            m.read_only = true;
        }
    }
    Ok(metas)
}

/// Open a volume's logical unit.
pub fn open_lu(dd: &DataDir, meta: &VolumeMeta) -> anyhow::Result<Arc<LogicalUnit>> {
    let path = dd.data_path(meta);
    let store = FileStore::open(&path, meta.block_size, meta.read_only)
        .with_context(|| format!("opening volume {:?} at {}", meta.name, path.display()))?;
    let store: Arc<dyn BlockStore> = Arc::new(store);
    Ok(Arc::new(LogicalUnit::new(
        LuConfig {
            name: meta.name.clone(),
            serial: meta.serial(),
            naa_id: meta.id,
            vendor: "REWIND".into(),
            product: "rewind volume".into(),
            revision: env!("CARGO_PKG_VERSION")
                .chars()
                .filter(|c| *c != '.')
                .take(4)
                .collect(),
            read_only: meta.read_only,
            thin: meta.path.is_none(),
        },
        store,
    )))
}

/// Build the targets: the config's, plus one per volume that no target names.
pub fn build_targets(
    ctx: &TargetContext,
    dd: &DataDir,
    config: &Config,
    metas: &[VolumeMeta],
) -> anyhow::Result<()> {
    let mut lus = BTreeMap::new();
    for m in metas {
        lus.insert(m.name.clone(), open_lu(dd, m)?);
    }
    let mut used = std::collections::HashSet::new();
    for t in &config.targets {
        let mut luns = BTreeMap::new();
        for (i, name) in t.luns.iter().enumerate() {
            let lu = lus
                .get(name)
                .with_context(|| format!("target {} names unknown volume {name}", t.name))?;
            luns.insert(i as u64, lu.clone());
            used.insert(name.clone());
        }
        ctx.add_target(Target {
            name: t.name.clone(),
            alias: t.alias.clone(),
            luns,
        });
    }
    for (name, lu) in &lus {
        if !used.contains(name) {
            let mut luns = BTreeMap::new();
            luns.insert(0, lu.clone());
            ctx.add_target(Target {
                name: default_target_name(name),
                alias: Some(name.clone()),
                luns,
            });
        }
    }
    Ok(())
}

/// A running target, for tests and the CLI.
pub struct Running {
    pub ctx: Arc<TargetContext>,
    pub addrs: Vec<SocketAddr>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Start serving; returns once the listeners are bound.
pub async fn start(data: &Path, config: &Config) -> anyhow::Result<Running> {
    config.validate()?;
    let dd = DataDir::open(data)?;
    let metas = prepare_volumes(&dd, config)?;
    let ctx = TargetContext::new(config.iscsi.clone(), config.portal_group_tag);
    build_targets(&ctx, &dd, config, &metas)?;
    let addrs = config.listen_addrs()?;
    let listeners = server::bind(&ctx, &addrs)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen.join(", ")))?;
    let bound: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    for t in ctx.targets() {
        info!(target = %t.name, luns = t.luns.len(), "target ready");
    }
    let admin_ctx = ctx.clone();
    let admin_dd = dd.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::admin::serve(admin_ctx, admin_dd).await {
            tracing::error!(error = %e, "admin socket failed; `rewind` subcommands cannot reach this daemon");
        }
    });
    let task = tokio::spawn(server::serve(ctx.clone(), listeners));
    Ok(Running {
        ctx,
        addrs: bound,
        task,
    })
}

/// Serve until SIGTERM or SIGINT.
pub async fn serve(data: &Path, config: Config) -> anyhow::Result<()> {
    let running = start(data, &config).await?;
    for a in &running.addrs {
        info!(portal = %a, data = %data.display(), "rewind is listening");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("shutting down: asking initiators to log out");
    running.ctx.shutdown.cancel();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !running.ctx.sessions.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    running.task.abort();
    info!("stopped");
    Ok(())
}
