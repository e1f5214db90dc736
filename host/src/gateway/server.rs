//! Starting and stopping a gateway: open the store and key, restore the desk, bind the
//! listeners, accept until shutdown, then drain sessions and close the store.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::auth::TokenKey;
use super::config::GatewayConfig;
use super::context::Ctx;
use super::desk::{Desk, DeskConfig, OpenConsult};
use super::policy::{Policy, PolicyConfig};
use super::{http, tcp};
use crate::store::sqlite::{SqliteConfig, SqliteStore, SyncMode};
use crate::store::{Store, StoreError};

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data folder could not be created or used.
    #[error("data folder {path}: {source}")]
    DataDir {
        /// The folder.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The token key could not be read or created.
    #[error("token key: {0}")]
    Key(String),
    /// The TLS certificate or key could not be read or does not fit together.
    #[error("tls: {0}")]
    Tls(String),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// The database file inside the data folder.
pub const DB_FILE: &str = "kefu.db";
/// The token key file inside the data folder.
pub const KEY_FILE: &str = "token.key";

/// Opens the data folder's store (creating the folder).
pub fn open_store(data_dir: &Path, durable: bool) -> Result<SqliteStore, StartError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let cfg = SqliteConfig {
        sync: if durable {
            SyncMode::Full
        } else {
            SyncMode::Normal
        },
        ..SqliteConfig::default()
    };
    Ok(SqliteStore::open(&data_dir.join(DB_FILE), cfg)?)
}

/// Reads (or creates) the data folder's token key.
pub fn open_key(data_dir: &Path) -> Result<TokenKey, StartError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    TokenKey::load_or_create(&data_dir.join(KEY_FILE)).map_err(|e| StartError::Key(e.to_string()))
}

/// A gateway that is running.
pub struct Running {
    /// Where the HTTP / WebSocket listener is bound.
    pub http_addr: SocketAddr,
    /// Where the TCP listener is bound.
    pub tcp_addr: SocketAddr,
    /// Whether the HTTP listener speaks TLS (`wss://`, `https://`).
    pub tls: bool,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, tells every client, lets sessions finish their commits (bounded by the
    /// drain timeout), closes the store; resolves when all of that is done.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the gateway stopped (after [`Running::shutdown`] from elsewhere).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A handle to begin shutdown from elsewhere (a signal handler).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Starts a gateway with `cfg`: binds both listeners and serves in the background.
pub async fn start(cfg: GatewayConfig) -> Result<Running, StartError> {
    let store = Arc::new(open_store(&cfg.data_dir, cfg.durable)?);
    let key = open_key(&cfg.data_dir)?;
    let policy = Policy::new(PolicyConfig {
        max_content: cfg.max_content,
        words: cfg.words.clone(),
    });
    let mut desk = Desk::new(DeskConfig {
        max_load: cfg.max_agent_load,
    });
    let tls = match &cfg.tls {
        Some(files) => Some(http::tls_acceptor(&files.cert, &files.key).map_err(StartError::Tls)?),
        None => None,
    };
    let consults = store.open_consults().await?;
    desk.restore(consults.iter().filter_map(OpenConsult::from_record));
    let http_listener =
        TcpListener::bind(cfg.http_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: cfg.http_addr,
                source,
            })?;
    let tcp_listener =
        TcpListener::bind(cfg.tcp_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: cfg.tcp_addr,
                source,
            })?;
    let http_addr = local_addr(&http_listener, cfg.http_addr)?;
    let tcp_addr = local_addr(&tcp_listener, cfg.tcp_addr)?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx::new(store, policy, key, desk, cfg, shutdown_rx));
    let tls_on = tls.is_some();
    let task = tokio::spawn(serve(ctx, http_listener, tls, tcp_listener));
    tracing::info!(%http_addr, %tcp_addr, tls = tls_on, "kefu gateway listening");
    Ok(Running {
        http_addr,
        tcp_addr,
        tls: tls_on,
        shutdown,
        task,
    })
}

/// Serves the HTTP router on `listener` (plain TCP or TLS) until shutdown.
async fn serve_http<L>(ctx: Arc<Ctx<SqliteStore>>, listener: L)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let mut stop = ctx.shutdown.clone();
    let served = axum::serve(listener, http::router(ctx))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "http listener failed");
    }
}

fn local_addr(l: &TcpListener, asked: SocketAddr) -> Result<SocketAddr, StartError> {
    l.local_addr().map_err(|source| StartError::Bind {
        addr: asked,
        source,
    })
}

async fn serve(
    ctx: Arc<Ctx<SqliteStore>>,
    http_listener: TcpListener,
    tls: Option<TlsAcceptor>,
    tcp_listener: TcpListener,
) {
    let sessions = ctx.sessions.clone();
    let mut stop = ctx.shutdown.clone();
    let http_task = match tls {
        None => {
            // Frames are small and latency matters: no Nagle delay (as on the TCP listener).
            let listener = http_listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(serve_http(Arc::clone(&ctx), listener))
        }
        Some(acceptor) => {
            let listener =
                http::TlsListener::new(http_listener, acceptor, ctx.cfg.handshake_timeout);
            tokio::spawn(serve_http(Arc::clone(&ctx), listener))
        }
    };
    loop {
        tokio::select! {
            accepted = tcp_listener.accept() => match accepted {
                Ok((stream, _)) => {
                    sessions.spawn(tcp::serve(Arc::clone(&ctx), stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
    }
    drop(tcp_listener);
    tracing::info!("shutting down: draining sessions");
    sessions.close();
    let drain = ctx.cfg.drain_timeout + Duration::from_secs(2);
    if tokio::time::timeout(drain, sessions.wait()).await.is_err() {
        tracing::warn!("some sessions did not finish in time");
    }
    if tokio::time::timeout(drain, http_task).await.is_err() {
        tracing::warn!("the http listener did not stop in time");
    }
    ctx.store.close().await;
    tracing::info!("stopped");
}
