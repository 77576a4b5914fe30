//! The serving block in process (axum's `oneshot`), over a content source
//! backed by real files in a temporary directory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use ferry_content::{Digest, PackageName};
use ferry_net::Peer;
use ferry_net::api::{BATCH_NOT_HELD, ERROR_CODE_HEADER, Role, VersionInfo, routes};
use ferry_serve::{
    ApiError, Authentication, Authorizer, ChunkPlace, ClientIdentity, ContentSource, Lookup,
};
use tower::ServiceExt as _;

/// Files on disk: one object holding three chunks, two manifests, and the
/// metadata directory.
struct DiskSource {
    dir: tempfile::TempDir,
    object: Digest,
    chunks: HashMap<Digest, (u64, u32)>,
    manifests: HashMap<String, Vec<u8>>,
    version: Arc<tokio::sync::watch::Sender<u64>>,
}

impl DiskSource {
    fn new() -> (Self, Vec<(Digest, Vec<u8>)>) {
        let dir = tempfile::tempdir().unwrap();
        let parts: Vec<Vec<u8>> = vec![b"alpha".repeat(100), b"beta".repeat(300), vec![7u8; 4000]];
        let object = Digest::of(b"the object id");
        let mut data = Vec::new();
        let mut chunks = HashMap::new();
        let mut listed = Vec::new();
        for p in &parts {
            let d = Digest::of(p);
            chunks.insert(d, (data.len() as u64, p.len() as u32));
            data.extend_from_slice(p);
            listed.push((d, p.clone()));
        }
        std::fs::write(dir.path().join(object.to_hex()), &data).unwrap();
        std::fs::create_dir(dir.path().join("metadata")).unwrap();
        std::fs::write(dir.path().join("metadata/timestamp.json"), b"{}").unwrap();
        let mut manifests = HashMap::new();
        let v1: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut v2 = v1.clone();
        v2[40_000..40_010].copy_from_slice(b"0123456789");
        manifests.insert("app@1.0.0.json".to_owned(), v1);
        manifests.insert("app@1.1.0.json".to_owned(), v2);
        (
            DiskSource {
                dir,
                object,
                chunks,
                manifests,
                version: Arc::new(tokio::sync::watch::channel(1).0),
            },
            listed,
        )
    }
}

impl ContentSource for DiskSource {
    fn metadata_dir(&self) -> PathBuf {
        self.dir.path().join("metadata")
    }
    fn manifest(&self, target: &str) -> Result<Option<Vec<u8>>, ApiError> {
        Ok(self.manifests.get(target).cloned())
    }
    fn serves(&self, target: &str) -> bool {
        self.manifests.contains_key(target)
    }
    fn object(&self, id: &Digest) -> Result<Option<PathBuf>, ApiError> {
        // The object above, and files a test adds under their ids.
        let path = self.dir.path().join(id.to_hex());
        Ok((*id == self.object || path.exists()).then_some(path))
    }
    fn chunks(&self, digests: &[Digest]) -> Result<Vec<Option<ChunkPlace>>, ApiError> {
        Ok(digests
            .iter()
            .map(|d| {
                self.chunks.get(d).map(|&(offset, len)| ChunkPlace {
                    file: self.dir.path().join(self.object.to_hex()),
                    offset,
                    len,
                })
            })
            .collect())
    }
    fn revocations(&self) -> Option<PathBuf> {
        None
    }
    fn metadata_version(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }
    fn versions(&self, _name: Option<&PackageName>) -> Result<Vec<VersionInfo>, ApiError> {
        Ok(Vec::new())
    }
}

/// Certificate [1; 32] is an agent, [2; 32] was revoked, others unknown.
struct Clients;

impl Authorizer for Clients {
    fn lookup(&self, cert: &[u8; 32], _der: &[u8]) -> Result<Lookup, ApiError> {
        Ok(match cert[0] {
            1 => Lookup::Client(ClientIdentity {
                id: "agent-1".into(),
                role: Role::Agent,
                site: Some("berlin".into()),
            }),
            2 => Lookup::Revoked("agent-2".into()),
            _ => Lookup::Unknown,
        })
    }
}

fn app(source: DiskSource) -> Router {
    ferry_serve::router(Arc::new(source))
        .fallback(ferry_serve::not_found)
        .layer(Authentication::new(Arc::new(Clients)).layer())
}

fn request(method: &str, uri: &str, cert: Option<u8>, body: Vec<u8>) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .unwrap();
    req.extensions_mut().insert(Peer {
        addr: "127.0.0.1:9".parse().unwrap(),
        cert_sha256: cert.map(|c| [c; 32]),
        cert_der: cert.map(|c| Arc::from(&[c][..])),
    });
    req
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .unwrap();
    (status, headers, body.to_vec())
}

fn records(mut body: &[u8]) -> HashMap<Digest, Option<Vec<u8>>> {
    let mut out = HashMap::new();
    while !body.is_empty() {
        let d = Digest(body[..32].try_into().unwrap());
        let len = u32::from_le_bytes(body[32..36].try_into().unwrap());
        body = &body[36..];
        if len == BATCH_NOT_HELD {
            out.insert(d, None);
        } else {
            out.insert(d, Some(body[..len as usize].to_vec()));
            body = &body[len as usize..];
        }
    }
    out
}

#[tokio::test]
async fn a_batch_answers_each_chunk_once_plain_or_compressed() {
    let (source, listed) = DiskSource::new();
    let app = app(source);
    let absent = Digest::of(b"not here");
    let mut ask: Vec<u8> = Vec::new();
    for d in [listed[2].0, absent, listed[0].0, listed[2].0] {
        ask.extend_from_slice(&d.0);
    }
    let (status, headers, body) = send(
        &app,
        request("POST", routes::CHUNKS_BATCH, Some(1), ask.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
    let got = records(&body);
    assert_eq!(got.len(), 3, "the duplicate was sent once");
    assert_eq!(got[&listed[0].0].as_deref(), Some(&listed[0].1[..]));
    assert_eq!(got[&listed[2].0].as_deref(), Some(&listed[2].1[..]));
    assert_eq!(got[&absent], None);

    let mut req = request("POST", routes::CHUNKS_BATCH, Some(1), ask);
    req.headers_mut()
        .insert(header::ACCEPT_ENCODING, "gzip, zstd".parse().unwrap());
    let (status, headers, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_ENCODING], "zstd");
    assert!(
        body.len() < 4000,
        "repetitive chunks compress: {} bytes",
        body.len()
    );
    assert_eq!(records(&zstd::decode_all(&body[..]).unwrap()), got);
}

#[tokio::test]
async fn a_metadata_long_poll_answers_once_the_version_passes() {
    let (source, _) = DiskSource::new();
    let versions = source.version.clone();
    let app = app(source);
    let poll = |query: &str| {
        request(
            "GET",
            &format!("/v1/metadata/wait?{query}"),
            Some(1),
            vec![],
        )
    };
    let version = |body: Vec<u8>| {
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["version"]
            .as_u64()
            .unwrap()
    };
    // Newer than the caller's already: at once.
    let (status, _, body) = send(&app, poll("after=0")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version(body), 1);
    // The caller is current: the answer waits for the next version.
    let waiting = {
        let (app, req) = (app.clone(), poll("after=1&wait=15"));
        tokio::spawn(async move { send(&app, req).await })
    };
    let started = std::time::Instant::now();
    versions.send_replace(2);
    let (_, _, body) = waiting.await.unwrap();
    assert_eq!(version(body), 2);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Nothing new: the current version after the wait.
    let started = std::time::Instant::now();
    let (_, _, body) = send(&app, poll("after=2&wait=1")).await;
    assert_eq!(version(body), 2);
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    // Only for enrolled clients.
    let (status, _, _) = send(&app, request("GET", "/v1/metadata/wait", None, vec![])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn malformed_or_oversized_batches_are_refused_with_a_code() {
    let (source, _) = DiskSource::new();
    let app = app(source);
    let (status, headers, _) = send(
        &app,
        request("POST", routes::CHUNKS_BATCH, Some(1), vec![0; 33]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers[ERROR_CODE_HEADER], "bad-request");
    let too_many = vec![0u8; (ferry_net::api::MAX_BATCH_DIGESTS + 1) * 32];
    let (status, _, _) = send(
        &app,
        request("POST", routes::CHUNKS_BATCH, Some(1), too_many),
    )
    .await;
    assert!(status.is_client_error(), "{status}");
}

#[tokio::test]
async fn callers_are_known_enrolled_clients() {
    let (source, _) = DiskSource::new();
    let app = app(source);
    let (status, headers, _) = send(&app, request("GET", routes::WHOAMI, None, vec![])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[ERROR_CODE_HEADER], "unauthenticated");
    let (status, _, _) = send(&app, request("GET", routes::WHOAMI, Some(9), vec![])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, _) = send(&app, request("GET", routes::WHOAMI, Some(2), vec![])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers[ERROR_CODE_HEADER], "revoked");
    let (status, _, body) = send(&app, request("GET", routes::WHOAMI, Some(1), vec![])).await;
    assert_eq!(status, StatusCode::OK);
    let me: ClientIdentity = serde_json::from_slice(&body).unwrap();
    assert_eq!(me.id, "agent-1");
}

#[tokio::test]
async fn objects_honour_ranges_and_unknown_paths_are_refused() {
    let (source, listed) = DiskSource::new();
    let object = source.object;
    let app = app(source);
    let whole: Vec<u8> = listed.iter().flat_map(|(_, b)| b.clone()).collect();
    let mut req = request("GET", &format!("/v1/objects/{object}"), Some(1), vec![]);
    req.headers_mut()
        .insert(header::RANGE, "bytes=1000-".parse().unwrap());
    let (status, _, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, whole[1000..]);
    let (status, _, _) = send(
        &app,
        request(
            "GET",
            &format!("/v1/objects/{}", Digest::of(b"x")),
            Some(1),
            vec![],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for uri in [
        "/v1/tuf/..%2Fsecret",
        "/v1/tuf/timestamp.json.bak",
        "/v2/anything",
    ] {
        let (status, headers, _) = send(&app, request("GET", uri, Some(1), vec![])).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(headers[ERROR_CODE_HEADER], "not-found", "{uri}");
    }
    let (status, _, body) = send(
        &app,
        request("GET", "/v1/tuf/timestamp.json", Some(1), vec![]),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, b"{}".to_vec()));
}

#[tokio::test]
async fn a_manifest_comes_as_a_small_delta_of_one_the_client_holds() {
    let (source, _) = DiskSource::new();
    let v1 = source.manifests["app@1.0.0.json"].clone();
    let v2 = source.manifests["app@1.1.0.json"].clone();
    let app = app(source);
    let (s1, s2) = (Digest::of(&v1).to_hex(), Digest::of(&v2).to_hex());
    let uri = format!(
        "/{}",
        routes::manifest(&s2, "app@1.1.0.json", Some((&s1, "app@1.0.0.json")))
    );
    let (status, _, delta) = send(&app, request("GET", &uri, Some(1), vec![])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        delta.len() < 200,
        "delta of a 10-byte change is {} bytes",
        delta.len()
    );
    assert_eq!(
        ferry_content::decode_manifest_delta(&v1, &delta, v2.len() as u64).unwrap(),
        v2
    );
    // Whole, when no base is named.
    let uri = format!("/{}", routes::manifest(&s2, "app@1.1.0.json", None));
    let (_, _, whole) = send(&app, request("GET", &uri, Some(1), vec![])).await;
    assert_eq!(
        ferry_content::decode_manifest_delta(&[], &whole, v2.len() as u64).unwrap(),
        v2
    );
    // A base the server lacks, or a wrong hash.
    let other = Digest::of(b"other").to_hex();
    let uri = format!(
        "/{}",
        routes::manifest(&s2, "app@1.1.0.json", Some((&other, "app@0.9.0.json")))
    );
    let (status, headers, _) = send(&app, request("GET", &uri, Some(1), vec![])).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(headers[ERROR_CODE_HEADER], "unknown-base");
    let uri = format!("/{}", routes::manifest(&other, "app@1.1.0.json", None));
    let (status, _, _) = send(&app, request("GET", &uri, Some(1), vec![])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Source-like text of `lines` lines; `version` changes one line in 200.
fn source_text(lines: u64, version: u64) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..lines {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = if i % 200 == 0 { version } else { 1 };
        writeln!(
            out,
            "fn f{}(x: u{}) -> u8 {{ {} + {v} }}",
            x % 9000,
            x % 64,
            (x >> 16) % 1000
        )
        .unwrap();
    }
    out
}

#[tokio::test]
async fn a_file_delta_is_made_again_smaller_for_later_clients() {
    let (source, _) = DiskSource::new();
    let (old, new) = (source_text(60_000, 1), source_text(60_000, 2));
    let (from, to) = (Digest::of(b"old file"), Digest::of(b"new file"));
    std::fs::write(source.dir.path().join(from.to_hex()), &old).unwrap();
    std::fs::write(source.dir.path().join(to.to_hex()), &new).unwrap();
    let app = app(source);
    let uri = format!("/{}", routes::delta(&to, &from));
    let (status, _, first) = send(&app, request("GET", &uri, Some(1), vec![])).await;
    assert_eq!(status, StatusCode::OK);
    let rebuilt = ferry_content::decode_file_delta(&old, &first, new.len() as u64).unwrap();
    assert!(rebuilt == new);
    // The refined delta replaces the first once made (in the background;
    // the deadline is only a last guard).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let later = loop {
        let (status, _, later) = send(&app, request("GET", &uri, Some(1), vec![])).await;
        assert_eq!(status, StatusCode::OK);
        if later.len() < first.len() {
            break later;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {} bytes, as first",
            first.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let rebuilt = ferry_content::decode_file_delta(&old, &later, new.len() as u64).unwrap();
    assert!(rebuilt == new);
}
