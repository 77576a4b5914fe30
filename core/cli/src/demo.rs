//! `ferry demo`: Ferry's main job on one machine. A hub, a relay per branch
//! office behind a WAN budget, and a few dozen agents (the real agent code,
//! in this process), a sample package published and deployed, live
//! progress, and a summary of where the bytes came from. Everything lives
//! in a temporary directory removed at the end, also on Ctrl-C.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ferry_catalog::Role;
use ferry_content::{ChunkParams, InstallStep, PackageName, scan_directory};
use ferry_net::HubClient;
use ferry_net::api::routes;
use ferry_net::tasks::{SourceKind, TaskCreated, TaskDetail, TaskSpec, TaskState};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::output;

/// Office names, in order.
const SITES: [&str; 4] = ["berlin", "paris", "madrid", "oslo"];

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Agents in all, spread over the offices.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=200))]
    agents: u32,
    /// Branch offices, each with its relay (1-4).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=4))]
    sites: u32,
    /// Each office's WAN budget, in bits per second (`20Mbit`, `5Mbit`).
    #[arg(long, default_value = "20Mbit", value_parser = parse_rate)]
    wan: u64,
    /// Size of the sample package's main file (`16MiB`).
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    size: u64,
    /// Keep everything in this new directory instead of a temporary one
    /// removed at the end.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("Gbit") {
        (n, 1_000_000_000)
    } else if let Some(n) = t.strip_suffix("Mbit") {
        (n, 1_000_000)
    } else if let Some(n) = t.strip_suffix("kbit") {
        (n, 1_000)
    } else {
        (t, 1)
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a rate (try 20Mbit or 500kbit)"))?;
    if n.is_nan() || n <= 0.0 {
        return Err("the rate must be above zero".into());
    }
    Ok((n * scale as f64) as u64)
}

fn parse_size(text: &str) -> Result<u64, String> {
    let size = ferry_net::parse_size(text)?;
    if size == 0 || size > 4 << 30 {
        return Err("the size must be between 1 byte and 4 GiB".into());
    }
    Ok(size)
}

/// Everything running, to stop at the end.
struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

struct Office {
    site: String,
    relay_dir: PathBuf,
    agents: u32,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (dir, _temp) = match &args.keep {
        Some(d) => {
            if std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()) {
                bail!("{} is not empty; give --keep a new directory", d.display());
            }
            std::fs::create_dir_all(d)?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new().prefix("ferry-demo-").tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    let mut running = Running {
        stop: watch::channel(false).0,
        tasks: Vec::new(),
    };
    let outcome = tokio::select! {
        r = demo(&args, &dir, &mut running) => r,
        _ = crate::hub_cmds::shutdown_signal() => {
            eprintln!("\ninterrupted; stopping and cleaning up");
            Ok(())
        }
    };
    running.stop().await;
    match &args.keep {
        Some(d) => println!("\neverything is kept in {}", d.display()),
        None => println!("\nstopped everything and removed {}", dir.display()),
    }
    outcome
}

async fn demo(args: &DemoArgs, dir: &Path, running: &mut Running) -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "Ferry demo: a hub, {} branch office(s) with a relay behind a {} WAN each, {} agents",
        args.sites,
        rate_text(args.wan),
        args.agents
    );
    println!("working in {}\n", dir.display());

    // The hub.
    let hub_dir = dir.join("hub");
    ferry_hub::init::init(
        &hub_dir,
        ferry_hub::init::InitOptions {
            names: Vec::new(),
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        },
    )
    .await?;
    let (ready, hub_addr) = tokio::sync::oneshot::channel();
    {
        let stopped = running.stopped();
        let hub_dir = hub_dir.clone();
        running.tasks.push(tokio::spawn(async move {
            let result = ferry_hub::run::run(
                &hub_dir,
                ferry_hub::run::RunOptions { listen: None },
                |addr| {
                    let _ = ready.send(addr);
                },
                stopped,
            )
            .await;
            if let Err(e) = result {
                eprintln!("the hub stopped: {e}");
            }
        }));
    }
    let hub_addr = hub_addr.await.context("the hub did not start; see above")?;
    let hub_url = url::Url::parse(&format!("https://{hub_addr}"))?;
    println!("hub        {hub_url}");

    // A publisher, and the sample package.
    let token = |role: Role, site: Option<&str>| {
        ferry_hub::tokens::create_token(
            &hub_dir,
            role,
            site.map(str::to_owned),
            Duration::from_secs(3600),
        )
        .map(|t| t.token.to_string())
    };
    let publisher_dir = dir.join("publisher");
    let publisher = ferry_net::enroll(
        &hub_url,
        &token(Role::Publisher, None)?,
        &publisher_dir,
        Some("demo-publisher".into()),
        Vec::new(),
    )
    .await?;
    let admin = HubClient::from_credentials(&publisher)?;
    let package_dir = dir.join("sample-package");
    let size = args.size;
    let written = package_dir.clone();
    tokio::task::spawn_blocking(move || write_sample(&written, size)).await??;
    let scanned = tokio::task::spawn_blocking(move || {
        scan_directory(
            &package_dir,
            PackageName::new("acme-app")?,
            semver::Version::new(1, 0, 0),
            Some(InstallStep {
                plugin: "copy".into(),
                requirement: semver::VersionReq::STAR,
                params: toml::toml! { target = "acme-app" },
            }),
            ChunkParams::default(),
        )
    })
    .await??;
    let cache = ferry_transfer::upload::ManifestCache::new(publisher.cache_dir().join("manifests"));
    let report = ferry_transfer::upload::publish(&admin, &cache, &scanned, &NoProgress).await?;
    let package_size = report.total_bytes;
    println!(
        "published  acme-app 1.0.0 ({}, {} files, install step: copy into <install root>/acme-app)",
        HumanBytes(package_size),
        report.files
    );

    // One relay per office, its WAN budget set through its schedule
    // plugin's bandwidth cap, as a site would.
    let engine = {
        let cache = dir.join("plugin-cache");
        tokio::task::spawn_blocking(move || ferry_plugin::PluginEngine::new(Some(cache))).await??
    };
    let mut offices = Vec::new();
    let per_site = args.agents / args.sites;
    for (i, site) in SITES.iter().take(args.sites as usize).enumerate() {
        let agents = per_site + u32::from((i as u32) < args.agents % args.sites);
        let relay_dir = dir.join(format!("relay-{site}"));
        ferry_relay::init::init(ferry_relay::init::InitOptions {
            server: hub_url.clone(),
            token: token(Role::Relay, Some(site))?,
            data: relay_dir.clone(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            names: Vec::new(),
            hostname: Some(format!("relay-{site}")),
        })
        .await?;
        cap_wan(&relay_dir.join("relay.toml"), args.wan)?;
        let (ready, addr) = tokio::sync::oneshot::channel();
        {
            let stopped = running.stopped();
            let relay_dir = relay_dir.clone();
            running.tasks.push(tokio::spawn(async move {
                let result = ferry_relay::run::run(
                    &relay_dir,
                    ferry_relay::run::RunOptions::default(),
                    ferry_builtin_plugins::BUILTINS,
                    |a| {
                        let _ = ready.send(a);
                    },
                    stopped,
                )
                .await;
                if let Err(e) = result {
                    eprintln!("a relay stopped: {e}");
                }
            }));
        }
        let addr = addr.await.context("a relay did not start; see above")?;
        let relay_url = url::Url::parse(&format!("https://{addr}"))?;
        println!(
            "relay      {site:<8} {relay_url} (WAN budget {})",
            rate_text(args.wan)
        );
        for n in 0..agents {
            let name = format!("{site}-pc{:02}", n + 1);
            let agent_dir = dir.join("agents").join(&name);
            ferry_agent::init::init(ferry_agent::init::InitOptions {
                server: relay_url.clone(),
                hub: Some(hub_url.clone()),
                token: token(Role::Agent, Some(site))?,
                data: agent_dir.clone(),
                install_root: dir.join("installed").join(&name),
                name: Some(name),
            })
            .await?;
            let stopped = running.stopped();
            let options = ferry_agent::run::RunOptions {
                engine: Some(engine.clone()),
            };
            running.tasks.push(tokio::spawn(async move {
                if let Err(e) = ferry_agent::run::run(
                    &agent_dir,
                    options,
                    ferry_builtin_plugins::BUILTINS,
                    stopped,
                )
                .await
                {
                    eprintln!("an agent stopped: {e}");
                }
            }));
        }
        println!("agents     {site:<8} {agents} enrolled with the relay, the hub as fallback");
        offices.push(Office {
            site: site.to_string(),
            relay_dir,
            agents,
        });
    }

    // The task.
    let spec = TaskSpec {
        package: "acme-app".into(),
        requirement: "^1".into(),
        targets: offices.iter().map(|o| format!("site:{}", o.site)).collect(),
        ..TaskSpec::default()
    };
    let created: TaskCreated = admin
        .post_json(routes::relative(routes::TASKS), &spec)
        .await?;
    let deploy_started = Instant::now();
    println!(
        "\ntask {}   deploy acme-app ^1 (resolved to {}) to {}\n",
        created.id,
        created.version,
        spec.targets.join(", ")
    );

    // Live progress: one bar per office, agents installed.
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:8} [{bar:30}] {pos}/{len} installed  {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let site_bars: Vec<ProgressBar> = offices
        .iter()
        .map(|o| {
            let bar = bars.add(ProgressBar::new(u64::from(o.agents)));
            bar.set_style(style.clone());
            bar.set_prefix(o.site.clone());
            bar
        })
        .collect();
    let detail = loop {
        let detail: TaskDetail = admin.get_json(&routes::task(&created.id)).await?;
        let mut all_done = true;
        for (office, bar) in offices.iter().zip(&site_bars) {
            let mine: Vec<_> = detail
                .targets
                .iter()
                .filter(|t| t.site.as_deref() == Some(office.site.as_str()))
                .collect();
            let installed = mine
                .iter()
                .filter(|t| {
                    t.progress
                        .as_ref()
                        .is_some_and(|p| p.state == TaskState::Installed)
                })
                .count();
            let mut by_state: BTreeMap<TaskState, u32> = BTreeMap::new();
            for t in &mine {
                *by_state
                    .entry(t.progress.as_ref().map_or(TaskState::Pending, |p| p.state))
                    .or_default() += 1;
            }
            let wan = relay_wan(&office.relay_dir);
            bar.set_position(installed as u64);
            bar.set_message(format!(
                "WAN {}  ({})",
                HumanBytes(wan),
                by_state
                    .iter()
                    .map(|(s, n)| format!("{n} {s}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            let done = mine.len() as u32 >= office.agents
                && mine
                    .iter()
                    .all(|t| t.progress.as_ref().is_some_and(|p| p.state.is_final()));
            all_done &= done;
        }
        if all_done {
            break detail;
        }
        if deploy_started.elapsed() > Duration::from_secs(600) {
            for bar in &site_bars {
                bar.abandon();
            }
            bail!("the deployment did not finish within 10 minutes; see the agents' states above");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for bar in &site_bars {
        bar.finish();
    }
    let took = deploy_started.elapsed();
    summary(&detail, &offices, package_size, took, args.wan);
    println!(
        "\ndemo finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn summary(detail: &TaskDetail, offices: &[Office], package_size: u64, took: Duration, wan: u64) {
    println!("\nPer agent:");
    let rows: Vec<Vec<String>> = detail
        .targets
        .iter()
        .map(|t| {
            let p = t.progress.as_ref();
            let b =
                |k| HumanBytes(p.and_then(|p| p.bytes.get(&k).copied()).unwrap_or(0)).to_string();
            vec![
                t.agent.clone(),
                t.site.clone().unwrap_or_default(),
                p.map_or("pending".into(), |p| p.state.to_string()),
                b(SourceKind::Relay),
                b(SourceKind::Hub),
                p.and_then(|p| p.incidents.last().map(|i| i.reason.to_string()))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    output::table(
        &[
            "AGENT",
            "SITE",
            "RESULT",
            "FROM RELAY",
            "FROM HUB",
            "LAST INCIDENT",
        ],
        &rows,
    );

    println!("\nPer WAN link (hub to office):");
    let mut rows = Vec::new();
    let mut total_wan = 0;
    let mut total_direct = 0;
    for o in offices {
        // What the relay moved, and what its agents got from the hub
        // directly: both crossed the office's WAN link.
        let from_hub: u64 = detail
            .targets
            .iter()
            .filter(|t| t.site.as_deref() == Some(o.site.as_str()))
            .filter_map(|t| t.progress.as_ref()?.bytes.get(&SourceKind::Hub).copied())
            .sum();
        let crossed = relay_wan(&o.relay_dir) + from_hub;
        let direct = package_size * u64::from(o.agents);
        total_wan += crossed;
        total_direct += direct;
        rows.push(vec![
            o.site.clone(),
            o.agents.to_string(),
            HumanBytes(crossed).to_string(),
            HumanBytes(direct).to_string(),
            format!("{:.1}x", direct as f64 / crossed.max(1) as f64),
        ]);
    }
    output::table(
        &[
            "OFFICE",
            "AGENTS",
            "CROSSED THE WAN",
            "DIRECT FROM HUB WOULD BE",
            "SAVED",
        ],
        &rows,
    );
    let sum = |k| detail.summary.bytes.get(&k).copied().unwrap_or(0);
    let installed = detail
        .summary
        .states
        .get(&TaskState::Installed)
        .copied()
        .unwrap_or(0);
    println!(
        "\n{installed} of {} agents installed acme-app in {:.1} s; bytes came from: relay {}, hub {}, multicast {}, peers {}",
        detail.targets.len(),
        took.as_secs_f64(),
        HumanBytes(sum(SourceKind::Relay)),
        HumanBytes(sum(SourceKind::Hub)),
        HumanBytes(sum(SourceKind::Multicast)),
        HumanBytes(sum(SourceKind::Peer)),
    );
    println!(
        "all WAN links together carried {} where direct downloads would have carried {} \
         (at {} per link, direct would take at least {:.0} s)",
        HumanBytes(total_wan),
        HumanBytes(total_direct),
        rate_text(wan),
        offices
            .iter()
            .map(|o| (package_size * u64::from(o.agents)) as f64 * 8.0 / wan as f64)
            .fold(0.0, f64::max)
    );
}

/// Bytes the relay moved over its WAN link so far.
fn relay_wan(relay_dir: &Path) -> u64 {
    ferry_relay::RelayStatus::load(&relay_dir.join("status.json"))
        .map(|s| s.wan.received + s.wan.sent)
        .unwrap_or(0)
}

fn rate_text(bps: u64) -> String {
    if bps >= 1_000_000 {
        format!("{} Mbit/s", bps as f64 / 1e6)
    } else {
        format!("{} kbit/s", bps as f64 / 1e3)
    }
}

/// Sets the relay's WAN budget: the schedule plugin's bandwidth cap.
fn cap_wan(path: &Path, bps: u64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let mut config: toml::Table = toml::from_str(&text)?;
    let plugins = config
        .entry("plugins")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .context("[plugins] in relay.toml")?;
    let configs = plugins
        .entry("config")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .context("[plugins.config] in relay.toml")?;
    let mut interval = toml::Table::new();
    interval.insert(
        "bandwidth-cap-bps".into(),
        toml::Value::Integer(bps.min(i64::MAX as u64) as i64),
    );
    configs.insert("interval".into(), toml::Value::Table(interval));
    std::fs::write(path, toml::to_string(&config)?)?;
    Ok(())
}

/// A sample application: a large pseudo-random binary (incompressible, as
/// real binaries mostly are), a README and a config file.
fn write_sample(dir: &Path, size: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::write(
        dir.join("README.txt"),
        "acme-app 1.0.0: the sample package of `ferry demo`.\n",
    )?;
    std::fs::write(dir.join("app.toml"), "listen = 8080\nlog = \"info\"\n")?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("bin").join("acme-app"))?);
    let mut left = size;
    let mut block = vec![0u8; 64 * 1024];
    while left > 0 {
        for word in block.chunks_mut(8) {
            // xorshift64*: fast, and enough to defeat compression.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        std::io::Write::write_all(&mut out, &block[..n])?;
        left -= n as u64;
    }
    std::io::Write::flush(&mut out)?;
    Ok(())
}

struct NoProgress;

impl ferry_transfer::upload::UploadProgress for NoProgress {
    fn start(&self, _: u64, _: u64) {}
    fn advance(&self, _: u64) {}
}
