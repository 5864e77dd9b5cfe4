//! `rewind serve`: open the data directory, build the targets and logical units, listen, and
//! shut down cleanly on SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use tracing::info;

use crate::config::{parse_size, Config, DEFAULT_VOLUME, DEFAULT_VOLUME_SIZE};
use crate::datadir::{DataDir, VolumeMeta};
use crate::target::{server, Target, TargetContext};
use crate::volume::Registry;

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
    // The config may turn an existing volume read-only, or its journal off.
    for m in &mut metas {
        if let Some(v) = config.volumes.iter().find(|v| v.name == m.name) {
            m.read_only |= v.read_only;
            if let Some(journal) = v.journal {
                m.journal = journal;
            }
        }
    }
    Ok(metas)
}

/// Build the targets: the config's, plus one per volume that no target names.
pub fn build_targets(reg: &Registry, config: &Config, metas: &[VolumeMeta]) -> anyhow::Result<()> {
    for m in metas {
        reg.open_volume(m)?;
    }
    let mut used = std::collections::HashSet::new();
    for t in &config.targets {
        let mut luns = BTreeMap::new();
        for (i, name) in t.luns.iter().enumerate() {
            let v = reg
                .volume(name)
                .with_context(|| format!("target {} names unknown volume {name}", t.name))?;
            luns.insert(i as u64, v.lu.clone());
            used.insert(name.clone());
        }
        reg.ctx.add_target(Target {
            name: t.name.clone(),
            alias: t.alias.clone(),
            luns,
        });
    }
    for v in reg.volumes() {
        if !used.contains(&v.meta.name) {
            reg.add_default_target(&v);
        }
    }
    Ok(())
}

/// A running target, for tests and the CLI.
pub struct Running {
    pub ctx: Arc<TargetContext>,
    pub registry: Arc<Registry>,
    pub addrs: Vec<SocketAddr>,
    pub task: tokio::task::JoinHandle<()>,
    /// Replication to and from other sites (`[replication]`, `rewind replicate`).
    pub replication: Arc<crate::replication::Service>,
}

/// Start serving; returns once the listeners are bound.
pub async fn start(data: &Path, config: &Config) -> anyhow::Result<Running> {
    config.validate()?;
    let dd = DataDir::open(data)?;
    let metas = prepare_volumes(&dd, config)?;
    let ctx = TargetContext::new(config.iscsi.clone(), config.portal_group_tag)?;
    let auth = config.load_auth()?;
    for w in &auth.warnings {
        tracing::warn!("{w}");
    }
    ctx.set_auth(auth);
    let registry = Registry::new(ctx.clone(), dd.clone(), config.journal.clone());
    build_targets(&registry, config, &metas)?;
    registry.restore_saved_views();
    let replication = crate::replication::Service::start(registry.clone(), config)
        .await
        .context("starting replication")?;
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
    let admin_reg = registry.clone();
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        // Ends with the daemon, so that it lets go of the registry (and the volumes' journals).
        tokio::select! {
            _ = shutdown.cancelled() => {}
            r = crate::admin::serve(admin_reg) => if let Err(e) = r {
                tracing::error!(error = %e, "admin socket failed; `rewind` subcommands cannot reach this daemon");
            }
        }
    });
    let task = tokio::spawn(server::serve(ctx.clone(), listeners));
    Ok(Running {
        ctx,
        registry,
        addrs: bound,
        task,
        replication,
    })
}

/// Serve until SIGTERM or SIGINT.
pub async fn serve(data: &Path, config: Config) -> anyhow::Result<()> {
    serve_with_http(data, config, None).await
}

/// [`serve`], plus the HTTP admin API ([`crate::http`]) on `http` if given.
pub async fn serve_with_http(
    data: &Path,
    config: Config,
    http: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let running = start(data, &config).await?;
    if let Some(addr) = http {
        crate::http::spawn(running.registry.clone(), addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
    }
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
    for v in running.registry.volumes() {
        let name = v.meta.name.clone();
        let store = v.store.clone();
        let flushed = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tokio::task::spawn_blocking(move || store.flush()),
        )
        .await;
        match flushed {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::error!(volume = %name, error = %e, "flush at shutdown failed")
            }
            _ => tracing::error!(volume = %name, "flush at shutdown did not finish in 30 s"),
        }
    }
    info!("stopped");
    Ok(())
}
