//! How slow a source may be before it counts as down, and the body streams
//! that enforce it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::Instant;
use url::Url;

use crate::client::describe_error;
use crate::{Link, NetError};

/// How slow a source may be before it counts as down. An untrusted source
/// must not hold a client by dripping bytes: the response headers must come
/// within `grace`, every `grace`-long window of the body must average
/// `min_rate` bytes per second, and no wait for the next piece may last
/// longer than `stall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Time allowed before the average rate counts (connection, headers,
    /// the first bytes).
    pub grace: Duration,
    /// Lowest average rate accepted after `grace`, in bytes per second.
    pub min_rate: u64,
    /// Longest wait for any single piece.
    pub stall: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            grace: Duration::from_secs(30),
            min_rate: 1024,
            stall: Duration::from_secs(30),
        }
    }
}

/// The rate window bodies are judged in. Each request has its own unless
/// a client shares one among its requests ([`crate::HubClient::sharing_pace`]):
/// then a source that answers many small requests slowly is judged on all
/// of them together, and is dropped after one window rather than one per
/// request. Time counts only while at least one body is being read, so
/// work between requests does not count against the source.
#[derive(Debug, Default)]
pub(crate) struct PaceWindow {
    state: Mutex<WindowState>,
}

#[derive(Debug, Default)]
struct WindowState {
    /// Bodies being read now.
    active: usize,
    /// Reading time in this window before `since`.
    before: Duration,
    /// When the current stretch of reading started (some body active).
    since: Option<Instant>,
    /// Bytes received in this window.
    bytes: u64,
}

impl WindowState {
    fn elapsed(&self, now: Instant) -> Duration {
        self.before + self.since.map_or(Duration::ZERO, |s| now - s)
    }
}

impl PaceWindow {
    fn lock(&self) -> std::sync::MutexGuard<'_, WindowState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self) {
        let mut s = self.lock();
        s.active += 1;
        if s.active == 1 {
            s.since = Some(Instant::now());
        }
    }

    fn end(&self) {
        let mut s = self.lock();
        s.active = s.active.saturating_sub(1);
        if s.active == 0 {
            let now = Instant::now();
            s.before = s.elapsed(now);
            s.since = None;
        }
    }

    /// Time spent waiting for the link's budget: not the source's fault.
    fn exclude(&self, waited: Duration) {
        let mut s = self.lock();
        let now = Instant::now();
        let elapsed = s.elapsed(now).saturating_sub(waited);
        s.before = elapsed;
        s.since = s.since.map(|_| now);
    }

    /// Counts `n` bytes; fails when a full window brought too few.
    fn record(&self, n: u64, window: Duration, needed: u64) -> Result<(), u64> {
        let mut s = self.lock();
        s.bytes += n;
        let now = Instant::now();
        if s.elapsed(now) >= window {
            if s.bytes < needed {
                return Err(s.bytes);
            }
            s.before = Duration::ZERO;
            s.since = s.since.map(|_| now);
            s.bytes = 0;
        }
        Ok(())
    }

    /// How long the next piece may take before this window is judged, and
    /// the bytes counted so far.
    fn remaining(&self, window: Duration, needed: u64) -> (Option<Duration>, u64) {
        let s = self.lock();
        let left = (s.bytes < needed).then(|| window.saturating_sub(s.elapsed(Instant::now())));
        (left, s.bytes)
    }
}

impl Pace {
    /// The window's length and the bytes it must bring.
    fn window(&self) -> (Duration, u64) {
        let span = self.grace.max(Duration::from_millis(1));
        (span, (self.min_rate as f64 * span.as_secs_f64()) as u64)
    }
}

/// Counts a request's time in a shared window while it waits for its
/// response headers: a source that trickles headers is as slow as one that
/// trickles bodies. Returns the guard to hold while waiting, and how long
/// the wait may last before the window is judged (`None`: the window is
/// already full).
pub(crate) fn waiting_for_headers(
    window: &Arc<PaceWindow>,
    pace: Pace,
) -> (Reading, Option<Duration>) {
    let reading = Reading::new(window.clone());
    let (span, needed) = pace.window();
    (reading, window.remaining(span, needed).0)
}

/// The error for a shared window that ran out while waiting for headers.
pub(crate) fn headers_too_slow(window: &Arc<PaceWindow>, pace: Pace, url: &Url) -> NetError {
    let (span, needed) = pace.window();
    let got = window.remaining(span, needed).1;
    NetError::TooSlow {
        url: url.to_string(),
        detail: format!(
            "with its earlier answers it sent {got} bytes in {span:?}, fewer than the {needed} required ({} bytes/s)",
            pace.min_rate
        ),
    }
}

/// Counts reading time in a window until dropped, finished or not.
pub(crate) struct Reading(Arc<PaceWindow>);

impl Reading {
    fn new(window: Arc<PaceWindow>) -> Self {
        window.start();
        Reading(window)
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Wraps a body stream so it fails once the source falls below `pace`:
/// every window of `grace` reading time (the first one starting with the
/// body) must bring `min_rate × grace` bytes, and no piece may take longer
/// than `stall`. Windows do not carry credit over, so a fast start does not
/// buy a long drip later. With a `link`, each piece waits for its budget,
/// and that wait does not count against the source.
pub(crate) fn paced(
    url: Url,
    stream: impl Stream<Item = reqwest::Result<Bytes>> + Send + Sync + 'static,
    pace: Pace,
    link: Option<Arc<Link>>,
    window: Arc<PaceWindow>,
) -> impl Stream<Item = Result<Bytes, NetError>> + Send + Sync + 'static {
    let (span, needed) = pace.window();
    let state = Some((Box::pin(stream), Reading::new(window)));
    futures_util::stream::unfold(state, move |state| {
        let url = url.clone();
        let link = link.clone();
        async move {
            let (mut stream, reading) = state?;
            let window = reading.0.clone();
            let too_slow = |got: u64| NetError::TooSlow {
                url: url.to_string(),
                detail: format!(
                    "it sent {got} bytes in {span:?}, fewer than the {needed} required ({} bytes/s), or nothing for {:?}",
                    pace.min_rate, pace.stall
                ),
            };
            // An unfinished window must be filled by its end.
            let (left, got) = window.remaining(span, needed);
            let wait = left.map_or(pace.stall, |l| l.min(pace.stall));
            match tokio::time::timeout(wait, stream.next()).await {
                Err(_) => Some((Err(too_slow(got)), None)),
                Ok(None) => None,
                Ok(Some(Ok(piece))) => {
                    if let Some(link) = &link {
                        window.exclude(link.receive(piece.len() as u64).await);
                    }
                    if let Err(got) = window.record(piece.len() as u64, span, needed) {
                        return Some((Err(too_slow(got)), None));
                    }
                    Some((Ok(piece), Some((stream, reading))))
                }
                Ok(Some(Err(e))) => Some((
                    Err(NetError::Request {
                        url: url.to_string(),
                        detail: describe_error(&e),
                    }),
                    None,
                )),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that sends `first` bytes at once, then one byte every `gap`.
    fn dripping(
        first: usize,
        gap: Duration,
    ) -> impl Stream<Item = reqwest::Result<Bytes>> + Send + Sync {
        let burst = futures_util::stream::iter([Ok(Bytes::from(vec![0u8; first]))]);
        let drip = futures_util::stream::unfold((), move |()| async move {
            tokio::time::sleep(gap).await;
            Some((Ok(Bytes::from_static(b"x")), ()))
        });
        burst.chain(drip)
    }

    /// A body of `n` bytes sent one byte every `gap`.
    fn slow(n: usize, gap: Duration) -> impl Stream<Item = reqwest::Result<Bytes>> + Send + Sync {
        futures_util::stream::unfold(n, move |left| async move {
            if left == 0 {
                return None;
            }
            tokio::time::sleep(gap).await;
            Some((Ok(Bytes::from_static(b"x")), left - 1))
        })
    }

    fn pace() -> Pace {
        Pace {
            grace: Duration::from_secs(3),
            min_rate: 100,
            stall: Duration::from_secs(2),
        }
    }

    fn own() -> Arc<PaceWindow> {
        Arc::default()
    }

    async fn drain(stream: impl Stream<Item = Result<Bytes, NetError>>) -> (u64, Option<NetError>) {
        let mut got = 0;
        let mut stream = std::pin::pin!(stream);
        while let Some(piece) = stream.next().await {
            match piece {
                Ok(b) => got += b.len() as u64,
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    #[tokio::test(start_paused = true)]
    async fn a_dripping_source_is_dropped_even_after_a_fast_start() {
        let url: Url = "https://source.example/x".parse().unwrap();
        let started = Instant::now();
        // 1 MiB at once, then a byte a second: the first window is full, the
        // second is not, so it fails within two windows.
        let (got, err) = drain(paced(
            url.clone(),
            dripping(1 << 20, Duration::from_secs(1)),
            pace(),
            None,
            own(),
        ))
        .await;
        assert!(matches!(err, Some(NetError::TooSlow { .. })), "{err:?}");
        assert!(got >= 1 << 20);
        assert!(
            started.elapsed() <= Duration::from_secs(7),
            "{:?}",
            started.elapsed()
        );
        // Silence longer than the stall limit.
        let (_, err) = drain(paced(
            url.clone(),
            dripping(10, Duration::from_secs(60)),
            pace(),
            None,
            own(),
        ))
        .await;
        assert!(matches!(err, Some(NetError::TooSlow { .. })), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_source_is_read_to_the_end() {
        let url: Url = "https://source.example/x".parse().unwrap();
        // 200 bytes every 500 ms for 20 s: 400 B/s, above the 100 required.
        let steady = futures_util::stream::unfold(0, |n| async move {
            if n == 40 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some((Ok(Bytes::from(vec![1u8; 200])), n + 1))
        });
        let (got, err) = drain(paced(url, steady, pace(), None, own())).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, 8000);
    }

    #[tokio::test(start_paused = true)]
    async fn many_slow_small_bodies_are_judged_together_in_a_shared_window() {
        let url: Url = "https://source.example/x".parse().unwrap();
        // Each body: 20 bytes at 10 B/s, done in 2 s, so none alone fills a
        // 3 s window. With a window each, all twenty bodies are read.
        let started = Instant::now();
        for _ in 0..20 {
            let (got, err) = drain(paced(
                url.clone(),
                slow(20, Duration::from_millis(100)),
                pace(),
                None,
                own(),
            ))
            .await;
            assert!(err.is_none(), "{err:?}");
            assert_eq!(got, 20);
        }
        assert!(started.elapsed() >= Duration::from_secs(40));
        // Shared, with pauses between bodies that do not count: the second
        // body ends the first window short of 300 bytes.
        let shared = own();
        let started = Instant::now();
        let mut failed = None;
        for i in 0..20 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let (_, err) = drain(paced(
                url.clone(),
                slow(20, Duration::from_millis(100)),
                pace(),
                None,
                shared.clone(),
            ))
            .await;
            if let Some(err) = err {
                assert!(matches!(err, NetError::TooSlow { .. }), "{err:?}");
                failed = Some(i);
                break;
            }
        }
        assert_eq!(failed, Some(1), "after {:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_the_link_budget_does_not_count_against_the_source() {
        let url: Url = "https://source.example/x".parse().unwrap();
        // A fast source behind a link capped far below the pace's minimum.
        let fast = futures_util::stream::iter((0..10).map(|_| Ok(Bytes::from(vec![1u8; 20_000]))));
        let link = Arc::new(Link::new(crate::Rate::BytesPerSecond(50)));
        let started = Instant::now();
        let (got, err) = drain(paced(url, fast, pace(), Some(link.clone()), own())).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, 200_000);
        assert_eq!(link.received(), 200_000);
        // The cap held: 200 kB less the first burst at 50 B/s.
        assert!(
            started.elapsed() >= Duration::from_secs(3_600),
            "{:?}",
            started.elapsed()
        );
    }
}
