//! One budget for everything a node moves over one link: every client that
//! shares a [`Link`] draws from one token bucket and adds to one count, so
//! a site's cap holds for all its transfers together instead of per
//! connection.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How fast a link may move bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// No cap.
    Unlimited,
    /// At most this many bytes per second.
    BytesPerSecond(u64),
    /// Nothing moves until the rate changes.
    Stopped,
}

impl Rate {
    /// The rate for a cap in bits per second as schedule plugins give it:
    /// none is unlimited, zero stops all traffic.
    pub fn from_bits_per_second(bps: Option<u64>) -> Rate {
        match bps {
            None => Rate::Unlimited,
            Some(0) => Rate::Stopped,
            Some(bps) => Rate::BytesPerSecond((bps / 8).max(1)),
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Unlimited => f.write_str("unlimited"),
            Rate::Stopped => f.write_str("stopped"),
            Rate::BytesPerSecond(b) => write!(f, "{} bit/s", b.saturating_mul(8)),
        }
    }
}

/// A shared byte budget and counter for one link (a relay's WAN uplink).
#[derive(Debug)]
pub struct Link {
    rate: watch::Sender<Rate>,
    bucket: Mutex<Bucket>,
    received: AtomicU64,
    sent: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// How long a full bucket lets the link run at its cap without waiting:
/// short, so the cap holds over any window longer than this.
const BURST: Duration = Duration::from_millis(50);
/// Smallest burst in bytes, so slow caps still let a whole piece of a
/// response through at once.
const MIN_BURST: f64 = 16.0 * 1024.0;

impl Link {
    /// A link at `rate`.
    pub fn new(rate: Rate) -> Link {
        Link {
            rate: watch::channel(rate).0,
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                at: Instant::now(),
            }),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        }
    }

    /// Changes the rate; transfers waiting on the budget see it at once.
    pub fn set_rate(&self, rate: Rate) {
        self.rate.send_if_modified(|r| {
            let changed = *r != rate;
            *r = rate;
            changed
        });
    }

    /// The rate now.
    pub fn rate(&self) -> Rate {
        *self.rate.borrow()
    }

    /// Bytes received over this link so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Bytes sent over this link so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Counts `n` bytes received and waits until the budget allows them;
    /// returns how long it waited.
    pub async fn receive(&self, n: u64) -> Duration {
        self.received.fetch_add(n, Ordering::Relaxed);
        self.take(n).await
    }

    /// Counts `n` bytes about to be sent and waits until the budget allows
    /// them; returns how long it waited.
    pub async fn send(&self, n: u64) -> Duration {
        self.sent.fetch_add(n, Ordering::Relaxed);
        self.take(n).await
    }

    /// Takes `n` bytes from the bucket, going into debt if needed, and waits
    /// until the debt is paid at the current rate. Debt (rather than waiting
    /// for enough tokens) keeps large pieces from starving behind small
    /// ones and makes the long-run rate exact.
    async fn take(&self, n: u64) -> Duration {
        let start = Instant::now();
        let mut rates = self.rate.subscribe();
        loop {
            let rate = *rates.borrow_and_update();
            let per_second = match rate {
                Rate::Unlimited => return start.elapsed(),
                Rate::Stopped => {
                    // Wait for a new rate; a dropped sender cannot happen
                    // while `self` lives.
                    let _ = rates.changed().await;
                    continue;
                }
                Rate::BytesPerSecond(b) => b as f64,
            };
            let wait = {
                let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let burst = (per_second * BURST.as_secs_f64()).max(MIN_BURST);
                let earned = now.duration_since(bucket.at).as_secs_f64() * per_second;
                bucket.tokens = (bucket.tokens + earned).min(burst) - n as f64;
                bucket.at = now;
                if bucket.tokens >= 0.0 {
                    Duration::ZERO
                } else {
                    Duration::from_secs_f64(-bucket.tokens / per_second)
                }
            };
            if wait.is_zero() {
                return start.elapsed();
            }
            // A rate change while waiting does not re-price the debt taken;
            // the next piece pays at the new rate.
            tokio::time::sleep(wait).await;
            return start.elapsed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_cap_holds_for_all_users_together() {
        let link = std::sync::Arc::new(Link::new(Rate::BytesPerSecond(1_000_000)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let link = link.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..100 {
                    link.receive(10_000).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // 4 MB at 1 MB/s: 4 s, less the first burst.
        let took = start.elapsed().as_secs_f64();
        assert!((3.9..=4.1).contains(&took), "{took}");
        assert_eq!(link.received(), 4_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_link_waits_for_a_new_rate() {
        let link = std::sync::Arc::new(Link::new(Rate::Stopped));
        let waiting = {
            let link = link.clone();
            tokio::spawn(async move { link.receive(100).await })
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!waiting.is_finished());
        link.set_rate(Rate::Unlimited);
        let waited = waiting.await.unwrap();
        assert!(waited >= Duration::from_secs(10), "{waited:?}");
        assert_eq!(Rate::from_bits_per_second(Some(0)), Rate::Stopped);
        assert_eq!(
            Rate::from_bits_per_second(Some(8_000)),
            Rate::BytesPerSecond(1_000)
        );
    }
}
