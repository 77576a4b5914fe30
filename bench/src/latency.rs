//! `ferry-bench latency`: request latency seen by many concurrent clients
//! of a hub (or relay), for signed metadata and for object ranges, through
//! Ferry's own HTTPS client with an enrolled client's credentials.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_net::api::routes;
use ferry_net::{ClientCredentials, HubClient};
use futures_util::StreamExt;

/// Runs `clients` loops for `seconds`, each alternating a metadata request
/// and a 64 KiB object range; prints p50/p99 per kind in milliseconds.
pub fn run(data: &Path, object: &str, clients: usize, seconds: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let creds = ClientCredentials::load(data)?;
        let client = HubClient::from_credentials(&creds)?;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let client = client.clone();
            let object = object.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut meta = Vec::new();
                let mut objects = Vec::new();
                let mut errors = 0u64;
                let ts = client.url(&routes::tuf_metadata("timestamp.json"))?;
                let obj = client.url(&routes::object(&object))?;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match client.get_bytes(&ts, 1 << 20).await {
                        Ok(_) => meta.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                    let t = Instant::now();
                    let got = async {
                        let response = client.get(&obj, Some((0, Some(65535)))).await?;
                        let mut body = client.body(&obj, response);
                        let mut n = 0;
                        while let Some(piece) = body.next().await {
                            n += piece?.len();
                        }
                        Ok::<_, ferry_net::NetError>(n)
                    }
                    .await;
                    match got {
                        Ok(65536) => objects.push(t.elapsed()),
                        _ => errors += 1,
                    }
                }
                Ok::<_, anyhow::Error>((meta, objects, errors))
            }));
        }
        let mut meta = Vec::new();
        let mut objects = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (m, o, e) = t.await??;
            meta.extend(m);
            objects.extend(o);
            errors += e;
        }
        let stats = |mut v: Vec<Duration>| {
            v.sort();
            let at = |q: f64| {
                v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
                    .map(|d| d.as_secs_f64() * 1000.0)
                    .unwrap_or(f64::NAN)
            };
            serde_json::json!({"n": v.len(), "p50_ms": at(0.50), "p99_ms": at(0.99)})
        };
        println!(
            "{}",
            serde_json::json!({
                "clients": clients,
                "seconds": seconds,
                "metadata": stats(meta),
                "object_range": stats(objects),
                "errors": errors,
            })
        );
        Ok(())
    })
}
