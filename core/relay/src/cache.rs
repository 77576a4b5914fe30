//! The relay's disk quota: which versions are pinned, evicted, and which go
//! when the content kept passes the quota (least recently asked for
//! first; never a pinned version, nor the newest version of a package the
//! relay keeps, which the next sync would only fetch again).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferry_catalog::{CacheIndex, VersionCatalog};
use ferry_content::{Manifest, ManifestLimits, PackageName};

use crate::config::KeepRule;
use crate::sync::{blocking, keeps, split_target};
use crate::{RelayError, RelayState};

/// The cache's bookkeeping at the start of a sync.
pub(crate) struct Cache {
    /// Versions pinned now.
    pub pinned: HashSet<String>,
    /// Versions evicted for the quota.
    pub evicted: HashSet<String>,
    /// When each version was last asked for (unix seconds).
    pub last_used: HashMap<String, i64>,
}

/// Writes the uses noted since the last sync and reads the bookkeeping.
pub(crate) async fn load(state: &Arc<RelayState>) -> Result<Cache, RelayError> {
    let uses = state.take_uses();
    let state = state.clone();
    blocking(move || {
        state.catalog.touch(&uses)?;
        let now = chrono::Utc::now().timestamp();
        Ok(Cache {
            pinned: state
                .catalog
                .pins(now)?
                .into_iter()
                .map(|p| p.target)
                .collect(),
            evicted: state.catalog.evicted()?,
            last_used: state.catalog.last_used()?,
        })
    })
    .await
}

/// Evicts versions of `served` until the content they use fits the quota;
/// returns the evicted targets (marked so in the catalog). Files shared
/// with versions that stay count for those.
pub(crate) async fn evict(
    state: &Arc<RelayState>,
    cache: &Cache,
    rules: &[KeepRule],
    served: &[String],
) -> Result<HashSet<String>, RelayError> {
    let quota = state
        .config
        .cache
        .quota_bytes()
        .map_err(|e| RelayError::DataDir(format!("[cache] quota: {e}")))?;
    let Some(quota) = quota else {
        return Ok(HashSet::new());
    };
    // Each served version's files (content id → size).
    let files: Vec<(String, HashMap<ferry_content::Digest, u64>)> = {
        let (catalog, served) = (state.catalog.clone(), served.to_vec());
        blocking(move || {
            let mut out = Vec::new();
            for target in served {
                let Some(bytes) = catalog.manifest_by_target(&target)? else {
                    continue;
                };
                let manifest = Manifest::from_slice(&bytes, ManifestLimits::default())
                    .map_err(|e| RelayError::DataDir(format!("held manifest {target}: {e}")))?;
                let files = manifest
                    .files
                    .iter()
                    .filter(|f| f.symlink.is_none())
                    .map(|f| (f.content_id(), f.size))
                    .collect();
                out.push((target, files));
            }
            Ok(out)
        })
        .await?
    };
    let mut users: HashMap<ferry_content::Digest, (u64, usize)> = HashMap::new();
    for (_, f) in &files {
        for (id, size) in f {
            users.entry(*id).or_insert((*size, 0)).1 += 1;
        }
    }
    let mut used: u64 = users.values().map(|(size, _)| size).sum();
    if used <= quota {
        return Ok(HashSet::new());
    }
    // The newest served version of each kept package stays.
    let mut newest: HashMap<PackageName, semver::Version> = HashMap::new();
    for target in served {
        if let Some((name, version)) = split_target(target)
            && keeps(rules, &name, &version)
        {
            let entry = newest.entry(name).or_insert(version.clone());
            if version > *entry {
                *entry = version;
            }
        }
    }
    let mut candidates: Vec<&(String, HashMap<ferry_content::Digest, u64>)> = files
        .iter()
        .filter(|(target, _)| {
            !cache.pinned.contains(target)
                && split_target(target)
                    .is_none_or(|(name, version)| newest.get(&name) != Some(&version))
        })
        .collect();
    candidates.sort_by_key(|(target, _)| cache.last_used.get(target).copied().unwrap_or(0));
    let mut evicted = HashSet::new();
    for (target, f) in candidates {
        if used <= quota {
            break;
        }
        for id in f.keys() {
            if let Some((size, n)) = users.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    used -= *size;
                }
            }
        }
        evicted.insert(target.clone());
    }
    if used > quota {
        tracing::warn!(
            used,
            quota,
            "the pinned versions and the newest of each kept package alone pass the cache quota; \
             raise [cache] quota or keep fewer packages"
        );
    }
    let (catalog, marked) = (
        state.catalog.clone(),
        evicted.iter().cloned().collect::<Vec<_>>(),
    );
    blocking(move || Ok(catalog.set_evicted(&marked, true)?)).await?;
    Ok(evicted)
}
