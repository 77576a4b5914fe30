use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::cert_sha256;

/// Who is on the other end of a connection, as a request extension.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Remote address.
    pub addr: SocketAddr,
    /// SHA-256 of the client certificate, if one was presented (rustls has
    /// already verified it against the hub CA).
    pub cert_sha256: Option<[u8; 32]>,
    /// The client certificate's DER, if one was presented: a server without
    /// the hub's client list (a relay) reads the identity the hub's CA
    /// signed into it ([`crate::certificate_identity`]).
    pub cert_der: Option<Arc<[u8]>>,
}

/// What one server allows, so no client (trusted or not) can hold it: a
/// connection that does not finish its TLS handshake or send its request
/// headers in time is closed, and connections are capped in total and per
/// client certificate. (Handlers bound their own time; see
/// `ferry_serve`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for a request's headers, and for the next request on an
    /// idle kept-alive connection.
    pub header_timeout: Duration,
    /// Open connections at most; past it new ones are closed at once.
    pub max_connections: usize,
    /// Open connections per client certificate at most.
    pub max_per_client: usize,
    /// Open connections without a client certificate per address at most.
    pub max_anonymous_per_address: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_connections: 50_000,
            max_per_client: 256,
            max_anonymous_per_address: 64,
        }
    }
}

/// Raises this process's open-file limit to its hard limit, so a server
/// can hold as many connections as the system allows (the soft default,
/// often 1024, is far below what one hub or relay serves).
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Who a connection counts against: its client certificate, or, without
/// one (enrollment, the CA), its address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Holder {
    Cert([u8; 32]),
    Address(std::net::IpAddr),
}

/// Counts open connections per holder.
#[derive(Default)]
struct PerClient(std::sync::Mutex<HashMap<Holder, usize>>);

impl PerClient {
    fn enter(self: &Arc<Self>, cert: Holder, max: usize) -> Option<ClientSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(cert).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            counts: self.clone(),
            cert,
        })
    }
}

struct ClientSlot {
    counts: Arc<PerClient>,
    cert: Holder,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.cert) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.cert);
            }
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then lets
/// requests in flight finish (up to 10 s), within [`ServerLimits`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    serve_with_limits(listener, tls, app, ServerLimits::default(), shutdown).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with_limits(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    raise_fd_limit();
    let acceptor = TlsAcceptor::from(tls);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_client = Arc::new(PerClient::default());
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Small answers (metadata, errors) go out at once instead of waiting
        // on Nagle's algorithm for the client's delayed ACK (40 ms each).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%addr, "cannot set TCP_NODELAY: {e}");
        }
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "connection refused: {} connections open", limits.max_connections);
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let per_client = per_client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "TLS handshake timed out");
                        return;
                    }
                };
            let leaf: Option<Arc<[u8]>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| Arc::from(leaf.as_ref()));
            let cert = leaf.as_deref().map(cert_sha256);
            let (holder, max) = match cert {
                Some(c) => (Holder::Cert(c), limits.max_per_client),
                None => (Holder::Address(addr.ip()), limits.max_anonymous_per_address),
            };
            let Some(_slot) = per_client.enter(holder, max) else {
                tracing::debug!(%addr, "connection refused: {max} already open for this client");
                return;
            };
            let peer = Peer {
                addr,
                cert_sha256: cert,
                cert_der: leaf,
            };
            let svc = app.map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                req
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(svc));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%addr, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
}
