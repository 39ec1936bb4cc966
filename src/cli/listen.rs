//! Listening and shutting down, shared by `serve`, `worker` and
//! `scheduler`: bind an address, serve one or more routers, and on
//! SIGINT/SIGTERM run a last step (a worker leaves its scheduler), stop
//! accepting, let in-flight requests finish for up to a deadline, then cut
//! what is left.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Listens on `host:port` (port 0: a free one); returns the listener and
/// the address it got.
pub async fn bind(host: &str, port: u16) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .with_context(|| format!("`--host` {host} / `--port` {port}"))?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// The address to reach a server listening on `addr` from this machine:
/// the loopback address when it listens on every interface.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// Routers being served, each on its listener, until told to stop.
pub struct Serving {
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Serving {
    pub fn start(servers: Vec<(TcpListener, axum::Router)>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let servers = servers
            .into_iter()
            .map(|(listener, router)| {
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.wait_for(|&s| s).await;
                        })
                        .await
                })
            })
            .collect();
        Self { stop, servers }
    }

    /// Serves until SIGINT/SIGTERM; then runs `last_step`, stops accepting
    /// and drains for at most `deadline`.
    pub async fn until_signal(
        self,
        deadline: Duration,
        last_step: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        shutdown_signal().await;
        eprintln!("strata: shutting down");
        last_step.await;
        tracing::info!("shutting down: no new connections; draining for up to {deadline:?}");
        let _ = self.stop.send(true);
        let drained = futures_util::future::join_all(self.servers);
        match tokio::time::timeout(deadline, drained).await {
            Ok(results) => {
                for r in results {
                    r.context("an HTTP server task failed")?
                        .context("the HTTP server failed")?;
                }
            }
            Err(_) => {
                tracing::warn!("shutdown deadline passed: cutting the requests still in flight")
            }
        }
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
