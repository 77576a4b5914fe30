//! Manifests as they are served: each read from the source once, its hash
//! and compressed forms computed once, then kept in memory (bounded).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferry_content::Digest;

use crate::handlers::Form;

/// Most bytes of manifests and deltas kept in memory; past it the cache
/// starts again empty (simple, and refilling costs one read each).
const CACHE_BYTES: usize = 256 << 20;

/// A served manifest: its bytes, and its zstd form once asked for.
#[derive(Debug)]
pub(crate) struct CachedManifest {
    pub bytes: Bytes,
    zstd: Mutex<Option<Bytes>>,
}

impl CachedManifest {
    /// The manifest as one zstd frame, compressed on first use.
    pub fn zstd(&self) -> Bytes {
        let mut slot = self.zstd.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| ferry_content::encode_manifest_delta(&[], &self.bytes).into())
            .clone()
    }
}

#[derive(Default)]
struct Inner {
    manifests: HashMap<String, Arc<CachedManifest>>,
    deltas: HashMap<(String, String, Form), Bytes>,
    bytes: usize,
}

/// The cache, keyed by `SHA256.TARGET` (content-addressed, so an entry
/// never goes stale: a withdrawn and republished version has a new hash).
pub(crate) struct ManifestCache {
    inner: Mutex<Inner>,
}

impl ManifestCache {
    pub fn new() -> Self {
        ManifestCache {
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Arc<CachedManifest>> {
        self.lock().manifests.get(key).cloned()
    }

    /// Caches `bytes` read for `target`; returns the entry and its key.
    pub fn insert(&self, target: &str, bytes: Vec<u8>) -> Arc<CachedManifest> {
        let sha256 = Digest::of(&bytes).to_hex();
        let key = format!("{sha256}.{target}");
        let entry = Arc::new(CachedManifest {
            bytes: bytes.into(),
            zstd: Mutex::new(None),
        });
        let cost = entry.bytes.len() * 2;
        let mut inner = self.lock();
        if let Some(existing) = inner.manifests.get(&key) {
            return existing.clone();
        }
        // A manifest too large to share the cache is served, not kept.
        if cost > CACHE_BYTES / 4 {
            return entry;
        }
        inner.make_room(cost);
        inner.bytes += cost;
        inner.manifests.insert(key, entry.clone());
        entry
    }

    pub fn delta(&self, target: &str, base: &str, form: Form) -> Option<Bytes> {
        self.lock()
            .deltas
            .get(&(target.to_owned(), base.to_owned(), form))
            .cloned()
    }

    pub fn insert_delta(&self, target: &str, base: &str, form: Form, delta: Bytes) {
        if delta.len() > CACHE_BYTES / 4 {
            return;
        }
        let mut inner = self.lock();
        inner.make_room(delta.len());
        inner.bytes += delta.len();
        inner
            .deltas
            .insert((target.to_owned(), base.to_owned(), form), delta);
    }
}

impl Inner {
    fn make_room(&mut self, more: usize) {
        if self.bytes + more > CACHE_BYTES {
            self.manifests.clear();
            self.deltas.clear();
            self.bytes = 0;
        }
    }
}
