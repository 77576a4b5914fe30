//! `POST /v1/chunks/batch`: many chunks in one streamed answer, so a client
//! missing thousands of 1 KiB chunks needs a few round trips, not thousands.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use ferry_content::Digest;
use ferry_net::api::{BATCH_NOT_HELD, MAX_BATCH_DIGESTS};
use tokio::sync::mpsc;

use crate::handlers::accepts_zstd;
use crate::{ApiError, Caller, ChunkPlace, Served, blocking};

/// Bytes gathered before a piece of the answer is handed to the socket.
const PIECE: usize = 64 << 10;
/// Pieces queued between the reading thread and the socket: the memory a
/// slow client can hold on the server is `PIECE * QUEUE` per request.
const QUEUE: usize = 8;
/// Longest a reading thread waits for a client to take the next piece; a
/// client that stops reading for longer loses its answer.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// zstd level for chunk streams: level 1 keeps up with a fast network on
/// one core; incompressible data passes as raw blocks at ~0.01% cost.
const ZSTD_LEVEL: i32 = 1;

/// Reads one chunk from its place.
pub(crate) fn read_place(place: &ChunkPlace) -> Result<Vec<u8>, ApiError> {
    let file = std::fs::File::open(&place.file)
        .map_err(|e| ApiError::internal(format!("opening {}: {e}", place.file.display())))?;
    let mut buf = vec![0u8; place.len as usize];
    file.read_exact_at(&mut buf, place.offset)
        .map_err(|e| ApiError::internal(format!("reading {}: {e}", place.file.display())))?;
    Ok(buf)
}

/// `POST /v1/chunks/batch`.
pub(crate) async fn chunks_batch(
    State(served): State<Arc<Served>>,
    _caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut digests = crate::digests_from_body(&body, MAX_BATCH_DIGESTS, "chunk batch request")?;
    // Each chunk once, however often it was asked for.
    digests.sort_unstable();
    digests.dedup();
    let source = served.source.clone();
    let places = {
        let digests = digests.clone();
        blocking(move || source.chunks(&digests)).await?
    };
    // Read in file order, so the disk sees sequential reads.
    let mut order: Vec<(Digest, Option<ChunkPlace>)> = digests.into_iter().zip(places).collect();
    order.sort_by(|a, b| match (&a.1, &b.1) {
        (Some(x), Some(y)) => (&x.file, x.offset).cmp(&(&y.file, y.offset)),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let zstd = accepts_zstd(&headers);
    // Each answer holds a blocking thread while it streams: at most
    // MAX_BATCHES at once, the rest wait (within the route's time limit).
    let permit = served
        .batches
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal("the batch limiter was closed"))?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(QUEUE);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let sink = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(PIECE),
            runtime,
        };
        let result = if zstd {
            match zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL) {
                Ok(encoder) => write_records(encoder.auto_finish(), &order),
                Err(e) => Err(e),
            }
        } else {
            write_records(sink, &order)
        };
        if let Err(e) = result
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            tracing::warn!("chunk batch stopped: {e}");
            // The client sees a cut answer and fetches the rest again.
            let _ = tx.try_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ferry-chunks"),
    );
    if zstd {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    }
    Ok(response)
}

/// Writes each chunk's record; an open file is reused while the places
/// stay in it.
fn write_records(
    mut out: impl Write,
    order: &[(Digest, Option<ChunkPlace>)],
) -> std::io::Result<()> {
    let mut open: Option<(PathBuf, std::fs::File)> = None;
    let mut buf = Vec::new();
    for (digest, place) in order {
        out.write_all(&digest.0)?;
        let Some(place) = place else {
            out.write_all(&BATCH_NOT_HELD.to_le_bytes())?;
            continue;
        };
        if open.as_ref().is_none_or(|(p, _)| *p != place.file) {
            open = Some((place.file.clone(), std::fs::File::open(&place.file)?));
        }
        let file = &open.as_ref().expect("just opened").1;
        buf.resize(place.len as usize, 0);
        file.read_exact_at(&mut buf, place.offset)?;
        out.write_all(&place.len.to_le_bytes())?;
        out.write_all(&buf)?;
    }
    out.flush()
}

/// A `Write` that hands pieces of about [`PIECE`] bytes to the response
/// stream; fails with `BrokenPipe` once the client has gone, and with
/// `TimedOut` if it stops reading for [`SEND_TIMEOUT`].
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    runtime: tokio::runtime::Handle,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        // This is a blocking-pool thread, so it may wait on the runtime.
        match self
            .runtime
            .block_on(tokio::time::timeout(SEND_TIMEOUT, self.tx.send(Ok(piece))))
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
        }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}
