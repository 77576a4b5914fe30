//! `ferry-bench scale`: many simulated agents against one relay, speaking
//! the agents' real protocol (HTTPS with a client certificate each, held
//! `POST /v1/checkin`), but doing nothing else: how fast the relay takes
//! their first check-ins, and how long until every one of them knows of a
//! task created at the hub.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_net::api::routes;
use ferry_net::tasks::{CheckinRequest, CheckinResponse, MAX_CHECKIN_WAIT, TaskCreated, TaskSpec};
use ferry_net::{CertificateAuthority, ClientCredentials, HubClient, generate_client_key};

/// Agents per loopback source address: below the ~28k ephemeral ports one
/// address has towards one server port.
const AGENTS_PER_SOURCE: usize = 1_000;

/// First check-ins in flight at once, as agents arriving over a few
/// seconds rather than in one instant.
const RAMP_CONCURRENCY: usize = 512;

/// What `scale` is told.
pub struct ScaleArgs<'a> {
    /// The hub's data directory (its CA signs the simulated agents).
    pub hub: &'a Path,
    /// An enrolled publisher's data directory (creates the task).
    pub publisher: &'a Path,
    /// The relay's URL.
    pub relay: &'a str,
    /// The site the agents are of (the relay's).
    pub site: &'a str,
    /// The package the task deploys.
    pub package: &'a str,
    /// Simulated agents.
    pub agents: usize,
}

/// One simulated agent: its own certificate, and a client that connects
/// from its loopback source address.
fn agent_client(
    ca: &CertificateAuthority,
    ca_pem: &str,
    index: usize,
    site: &str,
) -> anyhow::Result<reqwest::Client> {
    let key = generate_client_key()?;
    let cert = ca.sign_client_csr(
        &key.csr_pem,
        &format!("sim-{index:06}"),
        "agent",
        Some(site),
        &[],
        1,
    )?;
    let tls = ferry_net::client_config(ca_pem, Some((&cert, &key.key_pem)))?;
    let source = 1 + (index / AGENTS_PER_SOURCE) as u8;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 1, source)))
        .timeout(Duration::from_secs(MAX_CHECKIN_WAIT + 30))
        .build()?)
}

async fn checkin(
    client: &reqwest::Client,
    url: &str,
    after: u64,
) -> anyhow::Result<CheckinResponse> {
    let response = client
        .post(url)
        .json(&CheckinRequest {
            after,
            ..CheckinRequest::default()
        })
        .send()
        .await?
        .error_for_status()?;
    Ok(response.json().await?)
}

/// What one simulated agent saw.
#[derive(Default)]
struct Outcome {
    /// Its first check-in's latency.
    first_ms: Option<f64>,
    /// When its first check-in was answered.
    first_done: Option<Instant>,
    /// Why its first check-in failed.
    first_error: Option<String>,
    /// Seconds from the task's creation until it was told.
    told_s: Option<f64>,
    /// Held check-ins that failed.
    held_errors: usize,
}

fn quantiles(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    serde_json::json!({"n": v.len(), "p50": at(0.5), "p99": at(0.99), "max": at(1.0)})
}

/// Runs the measurement; prints one JSON object.
pub fn run(args: ScaleArgs<'_>) -> anyhow::Result<()> {
    ferry_net::raise_fd_limit();
    let ca = CertificateAuthority::load(&args.hub.join("tls"))?;
    let ca_pem = std::fs::read_to_string(args.hub.join("tls").join("ca.pem"))?;
    let minted = Instant::now();
    let clients: Vec<reqwest::Client> = (0..args.agents)
        .map(|i| agent_client(&ca, &ca_pem, i, args.site))
        .collect::<anyhow::Result<_>>()?;
    let mint_s = minted.elapsed().as_secs_f64();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let base = args.relay.trim_end_matches('/');
        let quick = format!("{base}/{}?wait=0", routes::relative(routes::CHECKIN));
        let held = format!(
            "{base}/{}?wait={MAX_CHECKIN_WAIT}",
            routes::relative(routes::CHECKIN)
        );
        // Each agent checks in once (RAMP_CONCURRENCY at a time, as agents
        // arriving over some seconds), then holds check-ins as a real agent
        // does, noting when an answer brings a newer task list. The task is
        // created once every agent holds one.
        let gate = Arc::new(tokio::sync::Semaphore::new(RAMP_CONCURRENCY));
        let holding = Arc::new(AtomicUsize::new(0));
        let created_at: Arc<tokio::sync::OnceCell<Instant>> = Arc::new(Default::default());
        let ramp = Instant::now();
        let mut agents = Vec::with_capacity(clients.len());
        for client in clients {
            let (gate, quick, held) = (gate.clone(), quick.clone(), held.clone());
            let (holding, created_at) = (holding.clone(), created_at.clone());
            agents.push(tokio::spawn(async move {
                let mut outcome = Outcome::default();
                let slot = gate.acquire_owned().await;
                let t = Instant::now();
                let known = match checkin(&client, &quick, 0).await {
                    Ok(a) => {
                        outcome.first_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
                        outcome.first_done = Some(Instant::now());
                        a.version
                    }
                    Err(e) => {
                        outcome.first_error = Some(format!("{e:#}"));
                        holding.fetch_add(1, Ordering::SeqCst);
                        return outcome;
                    }
                };
                drop(slot);
                // The connection goes back to the client's pool only once
                // its answer is read to the end and its task notices: a
                // moment, so the held check-in reuses it instead of opening
                // a second one.
                tokio::time::sleep(Duration::from_millis(50)).await;
                holding.fetch_add(1, Ordering::SeqCst);
                loop {
                    match checkin(&client, &held, known).await {
                        Ok(a) if a.version != known => {
                            outcome.told_s = created_at.get().map(|t| t.elapsed().as_secs_f64());
                            return outcome;
                        }
                        Ok(_) => {}
                        Err(_) => {
                            outcome.held_errors += 1;
                            if outcome.held_errors > 3 {
                                return outcome;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }));
        }
        while holding.load(Ordering::SeqCst) < agents.len() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Sent is not yet received: let the last requests reach the relay,
        // so the time measured is that of telling held agents.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let publisher = HubClient::from_credentials(&ClientCredentials::load(args.publisher)?)?;
        let spec = TaskSpec {
            package: args.package.to_owned(),
            requirement: "*".into(),
            targets: vec![format!("site:{}", args.site)],
            ..TaskSpec::default()
        };
        let _ = created_at.set(Instant::now());
        let created: TaskCreated = publisher
            .post_json(routes::relative(routes::TASKS), &spec)
            .await?;
        let mut told = Vec::new();
        let mut latency = Vec::new();
        let (mut hold_errors, mut untold, mut ramp_errors) = (0, 0, 0);
        let mut first_error = None;
        let mut ramp_end = ramp;
        for agent in agents {
            let o = agent.await?;
            latency.extend(o.first_ms);
            ramp_end = ramp_end.max(o.first_done.unwrap_or(ramp));
            if let Some(e) = o.first_error {
                ramp_errors += 1;
                first_error.get_or_insert(e);
            }
            hold_errors += o.held_errors;
            match o.told_s {
                Some(t) => told.push(t),
                None => untold += 1,
            }
        }
        let ramp_s = (ramp_end - ramp).as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "agents": args.agents,
                "task": created.id,
                "mint_s": mint_s,
                "first_checkins": {
                    "seconds": ramp_s,
                    "per_second": latency.len() as f64 / ramp_s,
                    "latency_ms": quantiles(latency),
                    "errors": ramp_errors,
                    "first_error": first_error,
                },
                "told_s": quantiles(told),
                "untold": untold,
                "held_errors": hold_errors,
            })
        );
        Ok(())
    })
}
