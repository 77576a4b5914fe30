//! Fetching many chunks at once through `POST /v1/chunks/batch`, each one
//! verified against the digest it was asked for before anyone sees it.

use std::collections::HashSet;

use ferry_content::{ChunkParams, Digest};
use ferry_net::HubClient;
use ferry_net::api::{BATCH_NOT_HELD, BATCH_RECORD_HEADER, MAX_BATCH_DIGESTS, routes};
use futures_util::StreamExt;
use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

use crate::TransferError;

/// Largest zstd window accepted from a source (8 MiB): a frame asking for
/// more is refused before the decoder allocates it.
const MAX_WINDOW_LOG: u32 = 23;

/// What one batch moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Requests made.
    pub requests: u64,
    /// Chunks received and verified.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Where the verified chunks of a batch answer go.
pub trait ChunkSink {
    /// Takes one verified chunk. Called on an async thread: keep it quick
    /// (buffer the bytes, leave disk work to [`ChunkSink::settle`]).
    fn chunk(&mut self, digest: Digest, bytes: &[u8]) -> Result<(), TransferError>;
    /// Called after each piece read from the network: the place to wait,
    /// without blocking, for buffered chunks to be written, so a source
    /// faster than the disk cannot fill memory.
    fn settle(&mut self) -> impl std::future::Future<Output = Result<(), TransferError>> + Send;
}

/// Fetches `digests` (each at most once; order does not matter) from
/// `client`'s base URL, in batches of at most [`MAX_BATCH_DIGESTS`].
/// `sink` gets each verified chunk. Fails with a source fault
/// ([`TransferError::is_source_fault`]) if the source lacks a chunk, sends a
/// wrong, unasked or duplicate one, or breaks off; chunks handed to `sink`
/// before that stay valid.
pub async fn fetch_chunks(
    client: &HubClient,
    digests: &[Digest],
    sink: &mut impl ChunkSink,
) -> Result<BatchStats, TransferError> {
    let mut stats = BatchStats::default();
    let url = client.url(routes::relative(routes::CHUNKS_BATCH))?;
    for batch in digests.chunks(MAX_BATCH_DIGESTS) {
        let body: Vec<u8> = batch.iter().flat_map(|d| d.0).collect();
        let response = client
            .post_streaming(&url, "application/octet-stream", body, true)
            .await?;
        let zstd = response
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v.as_bytes() == b"zstd");
        let mut parser = RecordParser::new(batch, url.as_str());
        let mut decoder = if zstd {
            let mut d = Decoder::new().map_err(|e| parser.corrupt(e))?;
            d.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
                .map_err(|e| parser.corrupt(e))?;
            Some(d)
        } else {
            None
        };
        let mut out = vec![0u8; 128 << 10];
        let mut stream = client.body(&url, response);
        stats.requests += 1;
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| parser.interrupted(e.to_string(), stats.bytes))?;
            match decoder.as_mut() {
                None => parser.feed(&piece, &mut |d, b| sink.chunk(d, b), &mut stats)?,
                Some(d) => {
                    let mut input = InBuffer::around(&piece);
                    loop {
                        let mut output = OutBuffer::around(&mut out[..]);
                        d.run(&mut input, &mut output)
                            .map_err(|e| parser.corrupt(e))?;
                        let produced = output.pos();
                        parser.feed(&out[..produced], &mut |d, b| sink.chunk(d, b), &mut stats)?;
                        // A small compressed piece may expand to many chunks.
                        sink.settle().await?;
                        if input.pos() == piece.len() && produced < out.len() {
                            break;
                        }
                    }
                }
            }
            sink.settle().await?;
        }
        parser.finish(stats.bytes)?;
    }
    Ok(stats)
}

/// Parses the record stream of one batch answer.
struct RecordParser<'a> {
    wanted: HashSet<Digest>,
    source: &'a str,
    header: Vec<u8>,
    current: Option<(Digest, usize)>,
    data: Vec<u8>,
}

impl<'a> RecordParser<'a> {
    fn new(batch: &[Digest], source: &'a str) -> Self {
        RecordParser {
            wanted: batch.iter().copied().collect(),
            source,
            header: Vec::with_capacity(BATCH_RECORD_HEADER),
            current: None,
            data: Vec::new(),
        }
    }

    fn corrupt(&self, detail: impl std::fmt::Display) -> TransferError {
        TransferError::WrongLength {
            path: "chunk batch".into(),
            source_url: self.source.to_owned(),
            detail: format!("the answer is malformed: {detail}"),
        }
    }

    fn interrupted(&self, detail: String, kept: u64) -> TransferError {
        TransferError::Interrupted {
            path: "chunk batch".into(),
            source_url: self.source.to_owned(),
            kept,
            detail,
        }
    }

    fn feed(
        &mut self,
        mut bytes: &[u8],
        on_chunk: &mut impl FnMut(Digest, &[u8]) -> Result<(), TransferError>,
        stats: &mut BatchStats,
    ) -> Result<(), TransferError> {
        while !bytes.is_empty() {
            match self.current {
                None => {
                    let take = (BATCH_RECORD_HEADER - self.header.len()).min(bytes.len());
                    self.header.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.header.len() < BATCH_RECORD_HEADER {
                        continue;
                    }
                    let digest = Digest(self.header[..32].try_into().expect("32 bytes"));
                    let len = u32::from_le_bytes(self.header[32..].try_into().expect("4 bytes"));
                    self.header.clear();
                    if !self.wanted.remove(&digest) {
                        return Err(self
                            .corrupt(format!("chunk {digest} was not asked for, or sent twice")));
                    }
                    if len == BATCH_NOT_HELD {
                        return Err(TransferError::SourceLacks {
                            source_url: self.source.to_owned(),
                            digest,
                        });
                    }
                    if len == 0 || len > ChunkParams::MAX_CHUNK {
                        return Err(self.corrupt(format!(
                            "chunk {digest} is said to be {len} bytes, outside 1..={}",
                            ChunkParams::MAX_CHUNK
                        )));
                    }
                    self.current = Some((digest, len as usize));
                }
                Some((digest, len)) => {
                    let take = (len - self.data.len()).min(bytes.len());
                    self.data.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.data.len() < len {
                        continue;
                    }
                    if Digest::of(&self.data) != digest {
                        return Err(TransferError::ChunkMismatch {
                            path: "chunk batch".into(),
                            index: 0,
                            expected: digest,
                            source_url: self.source.to_owned(),
                        });
                    }
                    on_chunk(digest, &self.data)?;
                    stats.chunks += 1;
                    stats.bytes += len as u64;
                    self.data.clear();
                    self.current = None;
                }
            }
        }
        Ok(())
    }

    fn finish(self, kept: u64) -> Result<(), TransferError> {
        if self.wanted.is_empty() && self.current.is_none() && self.header.is_empty() {
            return Ok(());
        }
        Err(self.interrupted(
            format!(
                "the answer ended with {} requested chunk(s) missing",
                self.wanted.len() + usize::from(self.current.is_some())
            ),
            kept,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(data: &[u8]) -> (Digest, Vec<u8>) {
        let d = Digest::of(data);
        let mut r = d.0.to_vec();
        r.extend_from_slice(&(data.len() as u32).to_le_bytes());
        r.extend_from_slice(data);
        (d, r)
    }

    fn parse(batch: &[Digest], stream: &[u8], split: usize) -> Result<Vec<Digest>, TransferError> {
        let mut p = RecordParser::new(batch, "https://source/");
        let mut got = Vec::new();
        let mut stats = BatchStats::default();
        for piece in stream.chunks(split.max(1)) {
            p.feed(
                piece,
                &mut |d, _| {
                    got.push(d);
                    Ok(())
                },
                &mut stats,
            )?;
        }
        p.finish(0)?;
        Ok(got)
    }

    #[test]
    fn records_are_verified_whatever_the_piece_boundaries() {
        let (a, ra) = record(b"first chunk");
        let (b, rb) = record(&[7u8; 5000]);
        let stream = [rb.clone(), ra.clone()].concat();
        for split in [1, 7, 36, 37, 4096, 1 << 20] {
            assert_eq!(parse(&[a, b], &stream, split).unwrap(), vec![b, a]);
        }
    }

    #[test]
    fn a_source_cannot_slip_in_wrong_extra_or_missing_chunks() {
        let (a, ra) = record(b"first chunk");
        let (b, rb) = record(b"second chunk");
        // Flipped byte.
        let mut bad = ra.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            parse(&[a], &bad, 64),
            Err(TransferError::ChunkMismatch { .. })
        ));
        // Not asked for, and sent twice.
        assert!(parse(&[a], &[ra.clone(), rb.clone()].concat(), 64).is_err());
        assert!(parse(&[a, b], &[ra.clone(), ra.clone()].concat(), 64).is_err());
        // Cut short.
        let err = parse(&[a, b], &ra, 64).unwrap_err();
        assert!(matches!(err, TransferError::Interrupted { .. }), "{err}");
        let err = parse(&[a], &ra[..40], 64).unwrap_err();
        assert!(matches!(err, TransferError::Interrupted { .. }), "{err}");
        // The source says it lacks it.
        let mut lacks = a.0.to_vec();
        lacks.extend_from_slice(&BATCH_NOT_HELD.to_le_bytes());
        assert!(matches!(
            parse(&[a], &lacks, 64),
            Err(TransferError::SourceLacks { .. })
        ));
        // An absurd length is refused before any buffering.
        let mut huge = a.0.to_vec();
        huge.extend_from_slice(&(64u32 << 20).to_le_bytes());
        let err = parse(&[a], &huge, 64).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        assert!(err.is_source_fault());
    }
}
