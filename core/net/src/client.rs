use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::api::ErrorBody;
use crate::{ClientCredentials, NetError, client_config};

/// An HTTPS client for the hub (or a mirror) that trusts only the pinned hub
/// CA and presents this client's certificate.
#[derive(Debug, Clone)]
pub struct HubClient {
    http: reqwest::Client,
    base: Url,
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
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| NetError::Tls(describe_error(&e)))?;
        Ok(HubClient {
            http,
            base: with_slash(base),
        })
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
        }
    }

    /// Resolves an API path such as `v1/packages`.
    pub fn url(&self, path: &str) -> Result<Url, NetError> {
        self.base.join(path).map_err(|e| NetError::Request {
            url: format!("{}{path}", self.base),
            detail: e.to_string(),
        })
    }

    async fn check(
        url: &Url,
        result: reqwest::Result<reqwest::Response>,
    ) -> Result<reqwest::Response, NetError> {
        let response = result.map_err(|e| NetError::Request {
            url: url.to_string(),
            detail: describe_error(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| text.chars().take(500).collect());
        Err(NetError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            message,
        })
    }

    /// GET a JSON document.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, NetError> {
        let url = self.url(path)?;
        let response = Self::check(&url, self.http.get(url.clone()).send().await).await?;
        let bytes = read_limited(&url, response, crate::api::MAX_JSON_BODY as u64).await?;
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
        let url = self.url(path)?;
        let response = Self::check(
            &url,
            self.http
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body)
                .send()
                .await,
        )
        .await?;
        let bytes = read_limited(&url, response, crate::api::MAX_JSON_BODY as u64).await?;
        serde_json::from_slice(&bytes).map_err(|e| NetError::Request {
            url: url.to_string(),
            detail: format!("unexpected response: {e}"),
        })
    }

    /// DELETE a resource.
    pub async fn delete(&self, url: &Url) -> Result<(), NetError> {
        Self::check(url, self.http.delete(url.clone()).send().await).await?;
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
        Self::check(url, request.send().await).await
    }

    /// GET a resource, telling the server a zstd-compressed body is welcome
    /// (`Accept-Encoding: zstd`); the caller decodes it when the response's
    /// `Content-Encoding` says so.
    pub async fn get_accepting_zstd(&self, url: &Url) -> Result<Response, NetError> {
        let request = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT_ENCODING, "zstd");
        Self::check(url, request.send().await).await
    }

    /// GET a resource into memory, refusing more than `limit` bytes.
    pub async fn get_bytes(&self, url: &Url, limit: u64) -> Result<Bytes, NetError> {
        let response = self.get(url, None).await?;
        read_limited(url, response, limit).await
    }
}

/// Reads a body, stopping as soon as it passes `limit`.
pub async fn read_limited(
    url: &Url,
    response: reqwest::Response,
    limit: u64,
) -> Result<Bytes, NetError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(NetError::TooLarge {
            url: url.to_string(),
            limit,
        });
    }
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| NetError::Request {
            url: url.to_string(),
            detail: describe_error(&e),
        })?;
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
