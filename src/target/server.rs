//! Listeners and the life of each TCP connection: login (bounded by the login timeout), then
//! the full feature phase. Shutdown: stop accepting, ask initiators to log out, wait a little.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn, Instrument};

use super::login::{self, LoginEnd};
use super::pdu_io::PduReader;
use super::TargetContext;

/// Bind every portal; returns the bound addresses (port 0 resolved).
pub async fn bind(ctx: &TargetContext, addrs: &[SocketAddr]) -> std::io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for a in addrs {
        let l = TcpListener::bind(a).await?;
        bound.push(l.local_addr()?);
        listeners.push(l);
    }
    if let Ok(mut p) = ctx.portals.write() {
        *p = bound;
    }
    Ok(listeners)
}

/// How many over-the-cap connections may be waiting for their refusal at once; beyond that
/// they are closed at once.
const MAX_REFUSING: usize = 32;

/// Accept connections on every listener until shutdown. A connection over
/// `max_tcp_connections` is refused promptly (a login answered Out of Resources) instead of
/// waiting unserved.
pub async fn serve(ctx: Arc<TargetContext>, listeners: Vec<TcpListener>) {
    let limit = Arc::new(Semaphore::new(ctx.iscsi.max_tcp_connections as usize));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        let ctx = ctx.clone();
        let limit = limit.clone();
        let refusing = refusing.clone();
        tasks.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    a = listener.accept() => a,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = limit.clone().try_acquire_owned() else {
                            crate::metrics::global().login("over_capacity");
                            if let Ok(r) = refusing.clone().try_acquire_owned() {
                                warn!(%peer, cap = ctx.iscsi.max_tcp_connections, "connection over the cap: refusing its login (out of resources)");
                                tokio::spawn(async move {
                                    login::refuse_for_resources(stream, std::time::Duration::from_secs(2)).await;
                                    drop(r);
                                });
                            }
                            continue;
                        };
                        let ctx = ctx.clone();
                        let span = tracing::info_span!("conn", %peer);
                        tokio::spawn(
                            async move {
                                handle(ctx, stream, peer).await;
                                drop(permit);
                            }
                            .instrument(span),
                        );
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn handle(ctx: Arc<TargetContext>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    let (rd, mut wr) = stream.into_split();
    let mut reader = PduReader::new(rd);
    let local_addr = local.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let outcome = tokio::time::timeout(
        ctx.iscsi.login_timeout,
        login::run(&ctx, &mut reader, &mut wr, local_addr),
    )
    .await;
    crate::metrics::global().login_outcome(&outcome);
    match outcome {
        Err(_) => info!("login timed out; closing"),
        Ok(Err(e)) => info!(error = %e, "login failed; closing"),
        Ok(Ok(LoginEnd::Closed)) => debug!("closed during login"),
        Ok(Ok(LoginEnd::Failed(status))) => {
            info!(status = format_args!("{:#06x}", status.0), "login refused")
        }
        Ok(Ok(LoginEnd::FullFeature(logged_in))) => {
            let s = &logged_in.session;
            info!(
                initiator = %s.initiator_name,
                target = s.target_name().unwrap_or("(discovery)"),
                tsih = s.tsih,
                cid = logged_in.cid,
                %peer,
                header_digest = logged_in.conn.header_digest,
                data_digest = logged_in.conn.data_digest,
                "login"
            );
            super::connection::run(ctx, reader, wr, logged_in, local).await;
        }
    }
}
