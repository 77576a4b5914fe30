//! `ferry-bench`: the measurements the scripts in `bench/` print beside the
//! anchor tools they compare Ferry with. Each subcommand prints one JSON
//! object so the scripts can compute ratios.

mod latency;
mod plugins;
mod scale;

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};
use ferry_content::{ChunkParams, chunk_bytes, chunk_file, encode_manifest_delta};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chunk and hash a file the way `ferry publish` does; print the time.
    Chunk {
        /// The file.
        file: PathBuf,
        /// Runs; the fastest is reported.
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
    /// Write a file of pseudo-random bytes (the same for the same seed).
    Random {
        /// Where to write it.
        out: PathBuf,
        /// Size, MiB.
        #[arg(long)]
        mib: usize,
        /// Seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Write a copy of a file with 1% of it changed.
    Edit {
        /// The original.
        input: PathBuf,
        /// Where to write the changed copy.
        out: PathBuf,
        /// `contiguous` (10 runs of 100 KiB) or `scattered` (1,024 runs of
        /// 1 KiB).
        #[arg(long)]
        pattern: String,
    },
    /// For each chunk size, the bytes a new version of a file costs: new
    /// chunks plus the manifest delta.
    Sweep {
        /// Size of the file, MiB.
        #[arg(long, default_value_t = 100)]
        mib: usize,
    },
    /// Latency of metadata and object-range requests from many concurrent
    /// clients of a hub or relay.
    Latency {
        /// An enrolled client's data directory.
        #[arg(long)]
        data: PathBuf,
        /// Content id of a served object of at least 64 KiB.
        #[arg(long)]
        object: String,
        /// Concurrent clients.
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// How long to measure.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Per-call latency of each kind of default plugin through the host and
    /// compiled natively, and the cost of loading and instantiating one.
    Plugins {
        /// Calls timed per kind (installers: a fortieth of it).
        #[arg(long, default_value_t = 20_000)]
        calls: usize,
    },
    /// Many simulated agents (a certificate each, the real check-in
    /// protocol) against one relay: their first check-ins, then the time
    /// until each held check-in tells of a task created at the hub.
    Scale {
        /// The hub's data directory (its CA signs the simulated agents).
        #[arg(long)]
        hub: PathBuf,
        /// An enrolled publisher's data directory.
        #[arg(long)]
        publisher: PathBuf,
        /// The relay's URL.
        #[arg(long)]
        relay: String,
        /// The relay's site.
        #[arg(long)]
        site: String,
        /// A published package the task deploys.
        #[arg(long)]
        package: String,
        /// Simulated agents.
        #[arg(long)]
        agents: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Chunk { file, runs } => {
            let size = std::fs::metadata(&file)?.len();
            let mut best = f64::MAX;
            let mut chunks = 0;
            for _ in 0..runs.max(1) {
                let start = Instant::now();
                chunks = chunk_file(&file, ChunkParams::default())?.len();
                best = best.min(start.elapsed().as_secs_f64());
            }
            println!(
                "{}",
                serde_json::json!({"bytes": size, "chunks": chunks, "seconds": best})
            );
        }
        Command::Random { out, mib, seed } => std::fs::write(out, random_bytes(mib << 20, seed))?,
        Command::Edit {
            input,
            out,
            pattern,
        } => {
            let scattered = match pattern.as_str() {
                "scattered" => true,
                "contiguous" => false,
                other => anyhow::bail!("unknown pattern {other:?}: use contiguous or scattered"),
            };
            std::fs::write(out, edited(&std::fs::read(input)?, scattered))?;
        }
        Command::Sweep { mib } => sweep(mib << 20),
        Command::Latency {
            data,
            object,
            clients,
            seconds,
        } => latency::run(&data, &object, clients, seconds)?,
        Command::Scale {
            hub,
            publisher,
            relay,
            site,
            package,
            agents,
        } => scale::run(scale::ScaleArgs {
            hub: &hub,
            publisher: &publisher,
            relay: &relay,
            site: &site,
            package: &package,
            agents,
        })?,
        Command::Plugins { calls } => {
            println!("{}", plugins::run(calls)?);
        }
    }
    Ok(())
}

/// xorshift bytes, so every run measures the same data.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The two edit patterns of `bench/delta`: 1% of the file changed as ten
/// contiguous 100 KiB runs, or as 1,024 scattered 1 KiB runs.
fn edited(base: &[u8], scattered: bool) -> Vec<u8> {
    let mut out = base.to_vec();
    let (count, len) = if scattered {
        (1024, 1024)
    } else {
        (10, 100 * 1024)
    };
    let stride = base.len() / count;
    for i in 0..count {
        let at = i * stride + stride / 3;
        out[at..at + len].copy_from_slice(&random_bytes(len, 1000 + i as u64));
    }
    out
}

/// A manifest-like record list: what a manifest spends per chunk.
fn records(chunks: &[ferry_content::ChunkRef]) -> Vec<u8> {
    chunks
        .iter()
        .flat_map(|c| {
            let mut r = c.digest.0.to_vec();
            r.extend_from_slice(&c.len.to_le_bytes());
            r
        })
        .collect()
}

/// Average chunk size, min = avg / this, normalization level.
const SWEEP: [(u32, u32, u8); 10] = [
    (512, 4, 1),
    (1024, 4, 1),
    (2048, 4, 0),
    (2048, 4, 1),
    (2048, 4, 2),
    (2048, 4, 3),
    (4096, 4, 1),
    (8192, 4, 1),
    (16384, 4, 1),
    (65536, 4, 1),
];

fn sweep(size: usize) {
    let base = random_bytes(size, 7);
    for scattered in [false, true] {
        let new = edited(&base, scattered);
        for (avg, min_div, normalization) in SWEEP {
            let params = ChunkParams {
                min: avg / min_div,
                avg,
                max: avg * 8,
                normalization,
            };
            let old_chunks = chunk_bytes(&base, params);
            let new_chunks = chunk_bytes(&new, params);
            let known: std::collections::HashSet<_> = old_chunks.iter().map(|c| c.digest).collect();
            let chunk_bytes_sent: u64 = new_chunks
                .iter()
                .filter(|c| !known.contains(&c.digest))
                .map(|c| c.len as u64)
                .sum();
            let old_manifest = records(&old_chunks);
            let new_manifest = records(&new_chunks);
            let delta = encode_manifest_delta(&old_manifest, &new_manifest).len() as u64;
            println!(
                "{}",
                serde_json::json!({
                    "pattern": if scattered { "scattered" } else { "contiguous" },
                    "avg": avg,
                    "min": params.min,
                    "normalization": normalization,
                    "chunks": new_chunks.len(),
                    "manifest_bytes": new_manifest.len(),
                    "chunk_bytes": chunk_bytes_sent,
                    "manifest_delta_bytes": delta,
                    "total": chunk_bytes_sent + delta,
                    "default": params == ChunkParams::default(),
                })
            );
        }
    }
}
