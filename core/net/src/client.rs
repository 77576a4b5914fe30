use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use std::sync::Arc;

use crate::api::ErrorBody;
use crate::pace::{PaceWindow, headers_too_slow, paced, waiting_for_headers};
use crate::{ClientCredentials, Link, NetError, Pace, client_config};

/// A response body read at a client's [`Pace`].
pub type BodyStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, NetError>> + Send + Sync>>;

/// Largest error body read from a source; the rest is ignored.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// An HTTPS client for the hub (or a mirror) that trusts only the pinned hub
/// CA and presents this client's certificate.
#[derive(Debug, Clone)]
pub struct HubClient {
    http: reqwest::Client,
    base: Url,
    pace: Pace,
    link: Option<Arc<Link>>,
    /// A rate window shared by every request of this client, if any.
    window: Option<Arc<PaceWindow>>,
    /// The package every request is for ([`crate::api::PACKAGE_HEADER`]).
    package: Option<reqwest::header::HeaderValue>,
}

/// A streaming response.
pub type Response = reqwest::Response;

/// Describes an error with its causes, which reqwest's own message leaves
/// out (the TLS or connection reason is what an operator needs).
pub fn describe_error(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

impl HubClient {
    /// A client for `base` trusting `ca_pem`, optionally with a client
    /// certificate.
    pub fn new(base: Url, ca_pem: &str, identity: Option<(&str, &str)>) -> Result<Self, NetError> {
        let tls = client_config(ca_pem, identity)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| NetError::Tls(describe_error(&e)))?;
        Ok(HubClient {
            http,
            base: with_slash(base),
            pace: Pace::default(),
            link: None,
            window: None,
            package: None,
        })
    }

    /// The same client drawing every byte it sends and receives from
    /// `link`'s budget, and counting them there.
    pub fn with_link(mut self, link: Arc<Link>) -> Self {
        self.link = Some(link);
        self
    }

    /// Waits for the link's budget for `n` bytes about to be sent.
    async fn sending(&self, n: usize) {
        if let Some(link) = &self.link {
            link.send(n as u64).await;
        }
    }

    /// The same client with another [`Pace`].
    pub fn with_pace(mut self, pace: Pace) -> Self {
        self.pace = pace;
        self
    }

    /// The same client judging all its requests (and its clones') in one
    /// rate window from now on, instead of each in its own: a source that
    /// answers many small requests slowly is dropped after one window of
    /// the [`Pace`], not one per request. Time between requests does not
    /// count. Meant for one job of many requests, such as a sync.
    pub fn sharing_pace(mut self) -> Self {
        self.window = Some(Arc::default());
        self
    }

    /// The same client telling the server each request is for the package
    /// `name` (a relay counts what it serves per package).
    pub fn for_package(mut self, name: &str) -> Self {
        self.package = reqwest::header::HeaderValue::from_str(name).ok();
        self
    }

    /// The pace every request of this client must keep.
    pub fn pace(&self) -> Pace {
        self.pace
    }

    /// A client for the hub these credentials were issued by.
    pub fn from_credentials(creds: &ClientCredentials) -> Result<Self, NetError> {
        Self::new(
            creds.info.server.clone(),
            &creds.ca_pem,
            Some((&creds.cert_pem, &creds.key_pem)),
        )
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The same client pointed at another base URL (a mirror).
    pub fn with_base(&self, base: Url) -> Self {
        HubClient {
            http: self.http.clone(),
            base: with_slash(base),
            pace: self.pace,
            link: self.link.clone(),
            window: self.window.clone(),
            package: self.package.clone(),
        }
    }

    /// Resolves an API path such as `v1/packages`.
    pub fn url(&self, path: &str) -> Result<Url, NetError> {
        self.base.join(path).map_err(|e| NetError::Request {
            url: format!("{}{path}", self.base),
            detail: e.to_string(),
        })
    }

    /// Sends a request and waits for the response headers at most
    /// `deadline`, turning an error status into [`NetError::Status`] (reading
    /// at most 64 KiB of its body).
    async fn send(
        &self,
        url: &Url,
        request: reqwest::RequestBuilder,
        deadline: Duration,
    ) -> Result<reqwest::Response, NetError> {
        let request = match &self.package {
            Some(name) => request.header(crate::api::PACKAGE_HEADER, name.clone()),
            None => request,
        };
        // In a shared window, waiting for headers counts against the
        // source too, and may end when the window does.
        let (_reading, left) = match &self.window {
            Some(window) => {
                let (reading, left) = waiting_for_headers(window, self.pace);
                (Some(reading), left)
            }
            None => (None, None),
        };
        let wait = left.map_or(deadline, |l| l.min(deadline));
        let response = match tokio::time::timeout(wait, request.send()).await {
            Err(_) if wait < deadline => {
                let window = self.window.as_ref().expect("a shared window");
                return Err(headers_too_slow(window, self.pace, url));
            }
            Err(_) => {
                return Err(NetError::TooSlow {
                    url: url.to_string(),
                    detail: format!("no response within {deadline:?}"),
                });
            }
            Ok(result) => result.map_err(|e| NetError::Request {
                url: url.to_string(),
                detail: describe_error(&e),
            })?,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let code = response
            .headers()
            .get(crate::api::ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut text = Vec::new();
        let mut stream = self.body(url, response);
        while let Some(Ok(piece)) = stream.next().await {
            let room = MAX_ERROR_BODY as usize - text.len();
            text.extend_from_slice(&piece[..piece.len().min(room)]);
            if text.len() as u64 >= MAX_ERROR_BODY {
                break;
            }
        }
        let body = serde_json::from_slice::<ErrorBody>(&text).ok();
        let message = match &body {
            Some(b) => b.error.clone(),
            None => String::from_utf8_lossy(&text).chars().take(500).collect(),
        };
        Err(NetError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            code: body.and_then(|b| b.code).or(code),
            message,
        })
    }

    /// The body of `response` as a stream that fails with
    /// [`NetError::TooSlow`] when the source falls below this client's pace.
    pub fn body(&self, url: &Url, response: reqwest::Response) -> BodyStream {
        Box::pin(paced(
            url.clone(),
            response.bytes_stream(),
            self.pace,
            self.link.clone(),
            self.window.clone().unwrap_or_default(),
        ))
    }

    /// GET a JSON document.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, NetError> {
        let url = self.url(path)?;
        let response = self
            .send(&url, self.http.get(url.clone()), self.pace.grace)
            .await?;
        let bytes = self
            .read_limited(&url, response, crate::api::MAX_JSON_BODY as u64)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| NetError::Request {
            url: url.to_string(),
            detail: format!("unexpected response: {e}"),
        })
    }

    /// POST a JSON body, expecting a JSON answer.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, NetError> {
        let bytes = serde_json::to_vec(body).expect("API bodies serialize");
        self.post_bytes(path, "application/json", bytes).await
    }

    /// POST raw bytes with a content type, expecting a JSON answer.
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<T, NetError> {
        self.post_bytes_within(path, content_type, body, Duration::ZERO)
            .await
    }

    /// [`HubClient::post_bytes`] for a request the server may work on for
    /// up to `processing` before it answers (a publish assembling files).
    /// The wait for the answer is bounded by the grace period, the time the
    /// body takes at the minimum rate, and `processing`.
    pub async fn post_bytes_within<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        processing: Duration,
    ) -> Result<T, NetError> {
        self.post_bytes_encoded(path, content_type, None, body, processing)
            .await
    }

    /// [`HubClient::post_bytes_within`] with a `Content-Encoding` (such as
    /// `zstd`) for a body the caller compressed.
    pub async fn post_bytes_encoded<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        content_encoding: Option<&str>,
        body: Vec<u8>,
        processing: Duration,
    ) -> Result<T, NetError> {
        let url = self.url(path)?;
        let deadline = self.upload_deadline(body.len()) + processing;
        let mut request = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type);
        if let Some(encoding) = content_encoding {
            request = request.header(reqwest::header::CONTENT_ENCODING, encoding);
        }
        self.sending(body.len()).await;
        let request = request.body(body);
        let response = self.send(&url, request, deadline).await?;
        let bytes = self
            .read_limited(&url, response, crate::api::MAX_JSON_BODY as u64)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| NetError::Request {
            url: url.to_string(),
            detail: format!("unexpected response: {e}"),
        })
    }

    /// DELETE a resource.
    pub async fn delete(&self, url: &Url) -> Result<(), NetError> {
        self.send(url, self.http.delete(url.clone()), self.pace.grace)
            .await?;
        Ok(())
    }

    /// GET a resource, optionally a byte range of it, as a stream.
    pub async fn get(
        &self,
        url: &Url,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<Response, NetError> {
        let mut request = self.http.get(url.clone());
        if let Some((start, end)) = range {
            let value = match end {
                Some(end) => format!("bytes={start}-{end}"),
                None => format!("bytes={start}-"),
            };
            request = request.header(reqwest::header::RANGE, value);
        }
        self.send(url, request, self.pace.grace).await
    }

    /// How long sending a body of `len` bytes and getting the answer may
    /// take: the grace period plus the body at the minimum rate.
    fn upload_deadline(&self, len: usize) -> Duration {
        self.pace.grace + Duration::from_secs(len as u64 / self.pace.min_rate.max(1))
    }

    /// POST raw bytes and return the streaming response (its body is read
    /// with [`HubClient::body`]). With `zstd`, a zstd-compressed answer is
    /// welcome (`Accept-Encoding: zstd`).
    pub async fn post_streaming(
        &self,
        url: &Url,
        content_type: &str,
        body: Vec<u8>,
        zstd: bool,
    ) -> Result<Response, NetError> {
        let len = body.len();
        self.sending(len).await;
        let mut request = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        if zstd {
            request = request.header(reqwest::header::ACCEPT_ENCODING, "zstd");
        }
        let deadline = self.upload_deadline(len);
        self.send(url, request, deadline).await
    }

    /// GET a resource, telling the server a zstd-compressed body is welcome
    /// (`Accept-Encoding: zstd`); the caller decodes it when the response's
    /// `Content-Encoding` says so.
    pub async fn get_accepting_zstd(&self, url: &Url) -> Result<Response, NetError> {
        let request = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT_ENCODING, "zstd");
        self.send(url, request, self.pace.grace).await
    }

    /// GET a resource into memory, refusing more than `limit` bytes.
    pub async fn get_bytes(&self, url: &Url, limit: u64) -> Result<Bytes, NetError> {
        let response = self.get(url, None).await?;
        self.read_limited(url, response, limit).await
    }

    /// Reads a body at this client's pace, stopping as soon as it passes
    /// `limit`.
    pub async fn read_limited(
        &self,
        url: &Url,
        response: reqwest::Response,
        limit: u64,
    ) -> Result<Bytes, NetError> {
        read_stream_limited(
            url,
            response.content_length(),
            self.body(url, response),
            limit,
        )
        .await
    }
}

/// Reads a body at the default [`Pace`], stopping as soon as it passes
/// `limit`.
pub async fn read_limited(
    url: &Url,
    response: reqwest::Response,
    limit: u64,
) -> Result<Bytes, NetError> {
    let length = response.content_length();
    let stream = Box::pin(paced(
        url.clone(),
        response.bytes_stream(),
        Pace::default(),
        None,
        Arc::default(),
    ));
    read_stream_limited(url, length, stream, limit).await
}

async fn read_stream_limited(
    url: &Url,
    content_length: Option<u64>,
    mut stream: impl Stream<Item = Result<Bytes, NetError>> + Unpin,
    limit: u64,
) -> Result<Bytes, NetError> {
    if content_length.is_some_and(|n| n > limit) {
        return Err(NetError::TooLarge {
            url: url.to_string(),
            limit,
        });
    }
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        if out.len() as u64 + piece.len() as u64 > limit {
            return Err(NetError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        out.extend_from_slice(&piece);
    }
    Ok(Bytes::from(out))
}

fn with_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}
