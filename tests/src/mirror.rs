//! An untrusted mirror between a client and the hub: it forwards every
//! request to the hub and can tamper with what it passes back, the way a compromised
//! relay or a man in the middle with a valid certificate could.
//!
//! Its TLS certificate is issued by the hub's own CA, so the client's TLS
//! checks pass and only Ferry's content verification stands between the
//! client and the tampered bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What the mirror does to responses.
#[derive(Debug, Clone, Default)]
pub enum Tamper {
    /// Pass everything through unchanged.
    #[default]
    None,
    /// Flip one bit in the middle of bodies whose path contains the text.
    FlipBit(String),
    /// Append this many junk bytes to bodies whose path contains the text.
    Pad(String, usize),
    /// Serve this body instead for paths containing the text.
    Replace(String, Bytes),
    /// Serve earlier recorded bodies (see [`Mirror::recorded`]) for the
    /// paths they were recorded under; pass the rest through.
    Replay(HashMap<String, Bytes>),
    /// For paths containing the text, send this many bytes of the body and
    /// then break the connection.
    CutAfter(String, usize),
    /// For paths containing the text, answer with a small zstd body
    /// (`Content-Encoding: zstd`) that decodes to this many zero bytes.
    ZstdBomb(String, usize),
}

struct MirrorState {
    upstream: ferry_net::HubClient,
    tamper: Mutex<Tamper>,
    recorded: Mutex<HashMap<String, Bytes>>,
    served: AtomicU64,
}

/// A running mirror; it stops when dropped.
pub struct Mirror {
    addr: SocketAddr,
    state: Arc<MirrorState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Mirror {
    /// Starts a mirror of `upstream` (a client with credentials the hub
    /// accepts), with a certificate from the CA in the hub directory
    /// `hub_data`.
    pub fn start(hub_data: &Path, upstream: ferry_net::HubClient) -> Mirror {
        let ca = ferry_net::CertificateAuthority::load(&hub_data.join("tls")).expect("hub CA");
        let cert = ca
            .issue_server(&["localhost".into()], &["127.0.0.1".parse().expect("ip")])
            .expect("mirror certificate");
        let tls = ferry_net::server_config(ca.cert_pem(), &cert.cert_pem, &cert.key_pem)
            .expect("mirror TLS");
        let state = Arc::new(MirrorState {
            upstream,
            tamper: Mutex::new(Tamper::None),
            recorded: Mutex::new(HashMap::new()),
            served: AtomicU64::new(0),
        });
        let app = Router::new().fallback(forward).with_state(state.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("mirror port");
                addr_tx
                    .send(listener.local_addr().expect("address"))
                    .expect("the starter waits");
                ferry_net::serve(listener, tls, app, async {
                    let _ = stop_rx.await;
                })
                .await;
            });
        });
        let addr = addr_rx.recv().expect("mirror started");
        Mirror {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The mirror's URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Changes what the mirror does from the next request on.
    pub fn set(&self, tamper: Tamper) {
        *self.state.tamper.lock().expect("lock") = tamper;
    }

    /// The last body passed through for every path seen so far.
    pub fn recorded(&self) -> HashMap<String, Bytes> {
        self.state.recorded.lock().expect("lock").clone()
    }

    /// The recorded body of the one path ending in `suffix`.
    pub fn recorded_ending(&self, suffix: &str) -> Bytes {
        let recorded = self.recorded();
        let found: Vec<_> = recorded
            .iter()
            .filter(|(p, _)| p.ends_with(suffix))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "paths ending in {suffix}: {:?}",
            found.iter().map(|f| f.0).collect::<Vec<_>>()
        );
        found[0].1.clone()
    }

    /// Body bytes sent to clients so far.
    pub fn served_bytes(&self) -> u64 {
        self.state.served.load(Ordering::Relaxed)
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn range_start(req: &Request) -> Option<u64> {
    let value = req.headers().get(header::RANGE)?.to_str().ok()?;
    value
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

async fn forward(State(state): State<Arc<MirrorState>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().trim_start_matches('/').to_owned())
        .unwrap_or_default();
    let tamper = state.tamper.lock().expect("lock").clone();
    if let Tamper::Replay(bodies) = &tamper
        && let Some(body) = bodies.get(&path)
    {
        state.served.fetch_add(body.len() as u64, Ordering::Relaxed);
        return (StatusCode::OK, body.clone()).into_response();
    }
    if let Tamper::Replace(needle, body) = &tamper
        && path.contains(needle.as_str())
    {
        state.served.fetch_add(body.len() as u64, Ordering::Relaxed);
        return (StatusCode::OK, body.clone()).into_response();
    }
    if let Tamper::ZstdBomb(needle, size) = &tamper
        && path.contains(needle.as_str())
    {
        let bomb = zstd_of_zeros(*size);
        state.served.fetch_add(bomb.len() as u64, Ordering::Relaxed);
        return (StatusCode::OK, [(header::CONTENT_ENCODING, "zstd")], bomb).into_response();
    }
    let url = match state.upstream.url(&path_and_query) {
        Ok(u) => u,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    // GETs pass as they are; POSTs (the chunk batch route) with their body,
    // asking the hub for an uncompressed answer so tampering sees records.
    let forwarded = if req.method() == axum::http::Method::POST {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
            Ok(b) => b,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        };
        state
            .upstream
            .post_streaming(&url, &content_type, body.to_vec(), false)
            .await
    } else {
        state
            .upstream
            .get(&url, range_start(&req).map(|s| (s, None)))
            .await
    };
    let upstream = match forwarded {
        Ok(r) => r,
        Err(ferry_net::NetError::Status {
            status, message, ..
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return (status, message).into_response();
        }
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::OK);
    let body = match upstream.bytes().await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    if status == StatusCode::OK {
        state
            .recorded
            .lock()
            .expect("lock")
            .insert(path.clone(), body.clone());
    }
    let body = match &tamper {
        Tamper::FlipBit(needle) if path.contains(needle.as_str()) && !body.is_empty() => {
            let mut b = body.to_vec();
            let mid = b.len() / 2;
            b[mid] ^= 0x01;
            Bytes::from(b)
        }
        Tamper::Pad(needle, n) if path.contains(needle.as_str()) => {
            let mut b = body.to_vec();
            b.extend(std::iter::repeat_n(b'x', *n));
            Bytes::from(b)
        }
        Tamper::CutAfter(needle, n) if path.contains(needle.as_str()) && body.len() > *n => {
            let head = body.slice(..*n);
            state.served.fetch_add(head.len() as u64, Ordering::Relaxed);
            let pieces: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(head),
                Err(std::io::Error::other("mirror cut the connection")),
            ];
            let mut response = Response::new(Body::from_stream(futures_util::stream::iter(pieces)));
            *response.status_mut() = status;
            return response;
        }
        _ => body,
    };
    state.served.fetch_add(body.len() as u64, Ordering::Relaxed);
    (status, body).into_response()
}

/// A zstd frame that decodes to `size` zero bytes.
fn zstd_of_zeros(size: usize) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    let block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len());
        encoder.write_all(&block[..n]).expect("in memory");
        left -= n;
    }
    encoder.finish().expect("in memory")
}
