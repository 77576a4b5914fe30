//! The WebAssembly engine every plugin runs in: pooled instances, an epoch
//! ticker for call deadlines, and compiled code cached on disk.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::PluginError;
use crate::manifest::MAX_MEMORY_MIB;

/// How often the epoch advances; call deadlines are rounded up to it.
pub const TICK: Duration = Duration::from_millis(2);

/// How many plugin instances may exist at once across the node, idle ones
/// kept for reuse included.
const POOL_INSTANCES: u32 = 256;
/// How many calls may run at once; the rest wait (up to their own time
/// limit) for one to end. Half of [`POOL_INSTANCES`], so the idle instances
/// kept for reuse (at most 8 per plugin) leave every running call an
/// instance while a node has at most 16 policy plugins loaded.
pub(crate) const CONCURRENT_CALLS: usize = 128;

/// Why [`PluginEngine::run_within`] gave up on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abandoned {
    /// It ran (or waited inside the host) past its limit.
    TimedOut,
    /// Every call slot stayed taken until its limit.
    Busy,
}

/// Threads for blocking host work of plugin calls (file opens and reads). A
/// call abandoned at its deadline may leave one blocked (a FIFO nobody
/// writes); the pool bounds how many.
const HOST_WAIT_THREADS: usize = 64;

/// The engine and the compiled-code cache. Cheap to clone.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    compat: String,
    pooled: bool,
    /// Drives what plugin calls wait on inside the host (WASI files and
    /// sockets), so a call can be abandoned at its deadline.
    runtime: Option<tokio::runtime::Runtime>,
    /// One permit per running call.
    calls: Arc<tokio::sync::Semaphore>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Threads stuck in a host wait (a FIFO without a writer) must not
        // hold up the node, and the engine may be dropped on an async thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PluginEngine {
    /// Creates the engine. `cache_dir` keeps compiled plugins between runs
    /// (it must be writable by this node only: its files are loaded as
    /// machine code); `None` compiles in memory each time.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<PluginEngine, PluginError> {
        // Pooling needs a large virtual address space reservation; where the
        // machine refuses it (small VMs with an address-space ulimit) plain
        // on-demand allocation still works, only slower to instantiate.
        let (engine, pooled) = match Engine::new(&config(true)) {
            Ok(engine) => (engine, true),
            Err(pool_err) => {
                tracing::warn!(error = %pool_err, "pooling allocator unavailable; plugins use on-demand allocation");
                let engine =
                    Engine::new(&config(false)).map_err(|e| PluginError::Engine(e.to_string()))?;
                (engine, false)
            }
        };
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = format!("{:016x}", hasher.finish());
        start_ticker(&engine)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(HOST_WAIT_THREADS)
            .thread_name("ferry-plugin-io")
            .enable_all()
            .build()
            .map_err(|e| {
                PluginError::Engine(format!("cannot start the plugin I/O runtime: {e}"))
            })?;
        Ok(PluginEngine {
            inner: Arc::new(Inner {
                engine,
                cache_dir,
                compat,
                pooled,
                runtime: Some(runtime),
                calls: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CALLS)),
            }),
        })
    }

    /// Runs a plugin call's future on the calling thread once one of the
    /// [`CONCURRENT_CALLS`] slots is free, with host waits driven by the
    /// engine's runtime, and abandons it after `limit`. Called from a thread
    /// that may block, never an async worker.
    pub(crate) fn run_within<F: std::future::Future>(
        &self,
        limit: Duration,
        future: F,
    ) -> Result<F::Output, Abandoned> {
        let calls = self.inner.calls.clone();
        self.inner
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the engine")
            .handle()
            .block_on(async move {
                // Waiting for a slot counts against the call's own limit.
                let started = std::cell::Cell::new(false);
                let waited = tokio::time::timeout(limit, async {
                    let _permit = calls.acquire().await;
                    started.set(true);
                    future.await
                });
                waited.await.map_err(|_| {
                    if started.get() {
                        Abandoned::TimedOut
                    } else {
                        Abandoned::Busy
                    }
                })
            })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooled(&self) -> bool {
        self.inner.pooled
    }

    /// Compiles `wasm`, or loads its compiled form from the cache. `name`
    /// names the plugin in errors.
    pub fn compile(&self, name: &str, wasm: &[u8]) -> Result<Component, PluginError> {
        let invalid = |e: wasmtime::Error| PluginError::Invalid {
            plugin: name.to_string(),
            reason: format!("not a loadable WebAssembly component: {e:#}"),
        };
        let Some(dir) = &self.inner.cache_dir else {
            return Component::new(&self.inner.engine, wasm).map_err(invalid);
        };
        let path = self.cache_path(dir, wasm);
        if path.exists() && !trusted(&path) {
            tracing::warn!(path = %path.display(), "not loading a compiled plugin others could have written; compiling afresh");
        } else if path.exists() {
            // SAFETY: the cache directory holds only files this node wrote
            // with `precompile_component` for this engine's configuration
            // (the file name carries the engine's compatibility hash).
            match unsafe { Component::deserialize_file(&self.inner.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled plugin");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let compiled = self
            .inner
            .engine
            .precompile_component(wasm)
            .map_err(invalid)?;
        if let Err(e) = write_atomically(dir, &path, &compiled) {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled plugin");
        }
        // SAFETY: `compiled` was produced by this engine just now.
        unsafe { Component::deserialize(&self.inner.engine, &compiled) }.map_err(invalid)
    }

    /// Whether `wasm` is already compiled in the cache.
    pub fn is_cached(&self, wasm: &[u8]) -> bool {
        match &self.inner.cache_dir {
            Some(dir) => self.cache_path(dir, wasm).exists(),
            None => false,
        }
    }

    fn cache_path(&self, dir: &Path, wasm: &[u8]) -> PathBuf {
        let digest = hex::encode(Sha256::digest(wasm));
        dir.join(format!("{digest}-{}.cwasm", self.inner.compat))
    }
}

fn config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            // Components made from other languages (Python) hold many core
            // instances, memories and large tables.
            .max_core_instances_per_component(64)
            .max_memories_per_component(16)
            .max_tables_per_component(16)
            .total_core_instances(POOL_INSTANCES * 8)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .table_elements(100_000)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            .max_memory_size(MAX_MEMORY_MIB as usize * 1024 * 1024);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Advances the epoch every [`TICK`] while the engine lives; holding only a
/// weak reference, so the thread ends with the engine. Without it no call
/// would ever reach its deadline, so failing to start it is an error.
fn start_ticker(engine: &Engine) -> Result<(), PluginError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("ferry-plugin-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .map(|_| ())
        .map_err(|e| PluginError::Engine(format!("cannot start the deadline thread: {e}")))
}

/// Whether a cached file may be loaded as machine code: it must belong to
/// this user and be writable by nobody else, nor its directory.
#[cfg(unix)]
fn trusted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let safe = |p: &Path| {
        std::fs::symlink_metadata(p)
            .map(|m| m.uid() == me && m.mode() & 0o022 == 0)
            .unwrap_or(false)
    };
    safe(path) && path.parent().is_some_and(safe)
}

#[cfg(not(unix))]
fn trusted(_path: &Path) -> bool {
    true
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
