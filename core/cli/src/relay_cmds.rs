//! `ferry relay ...`: commands run on a relay's machine.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use ferry_catalog::CacheIndex;
use ferry_net::api::routes;
use ferry_relay::status::{Outcome, SyncRecord};
use ferry_relay::{RelayLayout, RelayStatus, init, run};
use indicatif::HumanBytes;

use crate::output;

#[derive(Debug, Subcommand)]
pub enum RelayCommand {
    /// Enroll a relay with the hub (or an upstream relay) and create its
    /// data directory with a documented relay.toml.
    Init {
        /// The upstream's URL: the hub, or a relay enrolled with it.
        #[arg(long)]
        server: url::Url,
        /// A one-time token from `ferry token create --role relay --site SITE`.
        #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
        token: String,
        /// Data directory to create (new or empty).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Address agents reach this relay at, written to relay.toml.
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8444")]
        listen: SocketAddr,
        /// A DNS name or IP address agents use for this relay (repeatable);
        /// localhost, 127.0.0.1, ::1 and the host name are always included.
        #[arg(long = "server-name", value_name = "NAME")]
        names: Vec<String>,
        /// The name for this relay in the hub's inventory (default: host name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Serve the office's agents and sync with the upstream until
    /// interrupted (Ctrl-C or SIGTERM).
    Run {
        /// Relay data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Address to serve on, overriding relay.toml (port 0: any free port).
        #[arg(long, env = "FERRY_LISTEN", value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Show what is synced and served, lag behind upstream, the last and
    /// next sync and why, and the bytes over the WAN. Safe while it runs.
    Status {
        /// Relay data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Show it again every second until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Pin a version: kept whatever the cache quota, and fetched at the next
    /// sync if the relay lacks it.
    Pin {
        /// Relay data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The exact version, NAME@VERSION.
        #[arg(value_name = "NAME@VERSION")]
        version: String,
        /// How long the pin holds.
        #[arg(long = "for", default_value = "7d", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Why (shown in `ferry relay status`).
        #[arg(long, default_value = "pinned by an admin")]
        reason: String,
    },
    /// Remove a pin.
    Unpin {
        /// Relay data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The exact version, NAME@VERSION.
        #[arg(value_name = "NAME@VERSION")]
        version: String,
    },
    /// Ask the running relay to sync now, and wait for that sync's result.
    Sync {
        /// Relay data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Return once the sync is requested instead of when it ends.
        #[arg(long)]
        no_wait: bool,
        /// Longest wait for the sync to end.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run_relay(cmd: RelayCommand) -> anyhow::Result<()> {
    match cmd {
        RelayCommand::Init {
            server,
            token,
            data,
            listen,
            names,
            name,
        } => {
            let summary = init::init(init::InitOptions {
                server: server.clone(),
                token,
                data,
                listen,
                names,
                hostname: name,
            })
            .await?;
            println!(
                "created relay {} (site {}) in {}",
                summary.id,
                summary.site.as_deref().unwrap_or("none"),
                summary.data.display()
            );
            println!("  upstream         {server}");
            println!("  listen           {}", summary.listen);
            println!("  certificate for  {}", summary.names.join(", "));
            println!();
            println!("Edit relay.toml to choose what it keeps and its schedule, then:");
            println!("  ferry relay run --data {}", summary.data.display());
            Ok(())
        }
        RelayCommand::Run { data, listen } => {
            run::run(
                &data,
                run::RunOptions { listen },
                ferry_builtin_plugins::BUILTINS,
                |addr| {
                    println!("ferry relay listening on https://{addr}");
                    let _ = std::io::stdout().flush();
                },
                crate::hub_cmds::shutdown_signal(),
            )
            .await?;
            Ok(())
        }
        RelayCommand::Status { data, json, watch } => {
            if !watch {
                return print_status(&data, json);
            }
            loop {
                if !json {
                    // Clear the screen, then draw.
                    print!("\x1b[2J\x1b[H");
                }
                print_status(&data, json)?;
                let _ = std::io::stdout().flush();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = crate::hub_cmds::shutdown_signal() => return Ok(()),
                }
            }
        }
        RelayCommand::Sync {
            data,
            no_wait,
            timeout,
            json,
        } => sync(&data, !no_wait, timeout, json).await,
        RelayCommand::Pin {
            data,
            version,
            duration,
            reason,
        } => {
            let target = exact_target(&version)?;
            let catalog = open_catalog(&data)?;
            let until = chrono::Utc::now()
                + chrono::Duration::from_std(duration).context("the pin is too long")?;
            catalog.pin(&target, until.timestamp(), &reason)?;
            println!(
                "pinned {version} until {}; the relay fetches it at its next sync \
                 (`ferry relay sync --data {}` to fetch it now)",
                until.to_rfc3339(),
                data.display()
            );
            Ok(())
        }
        RelayCommand::Unpin { data, version } => {
            let target = exact_target(&version)?;
            if !open_catalog(&data)?.unpin(&target)? {
                anyhow::bail!("{version} is not pinned");
            }
            println!("unpinned {version}");
            Ok(())
        }
    }
}

/// `NAME@VERSION` → its TUF target name.
fn exact_target(spec: &str) -> anyhow::Result<String> {
    let (name, version) = spec
        .split_once('@')
        .context("give the exact version as NAME@VERSION, e.g. my-app@1.2.0")?;
    let name = ferry_content::PackageName::new(name)?;
    let version = semver::Version::parse(version)
        .with_context(|| format!("{version:?} is not an exact semver version"))?;
    Ok(ferry_content::target_name(&name, &version))
}

/// The relay's catalog (safe beside a running relay: SQLite in WAL mode).
fn open_catalog(data: &Path) -> anyhow::Result<ferry_catalog::SqliteCatalog> {
    let layout = RelayLayout::new(data);
    if !layout.config().exists() {
        anyhow::bail!("{} holds no relay", data.display());
    }
    Ok(ferry_catalog::SqliteCatalog::open(&layout.catalog())?)
}

fn load_status(data: &Path) -> anyhow::Result<RelayStatus> {
    let layout = RelayLayout::new(data);
    if !layout.config().exists() {
        anyhow::bail!(
            "{} holds no relay; create one with `ferry relay init --server URL --token TOKEN --data {}`",
            data.display(),
            data.display()
        );
    }
    let mut status = RelayStatus::load(&layout.status())?;
    if !ferry_relay::is_running(data) {
        // Stopped without a chance to say so (killed, power loss).
        status.address = None;
        status.pid = None;
        status.next_sync = None;
    }
    Ok(status)
}

fn print_status(data: &Path, json: bool) -> anyhow::Result<()> {
    let s = load_status(data)?;
    if json {
        return output::json(&s);
    }
    println!(
        "relay {} (site {}), upstream {}",
        s.id,
        s.site.as_deref().unwrap_or("none"),
        s.upstream
    );
    match (&s.address, s.pid) {
        (Some(addr), Some(pid)) => println!("  running      pid {pid}, serving on https://{addr}"),
        _ => println!(
            "  running      no (start it with `ferry relay run --data {}`)",
            data.display()
        ),
    }
    match &s.serving {
        Some(v) => println!(
            "  serving      {} version(s); metadata timestamp {}, targets {}; since {}; expires {}",
            v.served.len(),
            v.timestamp_version,
            v.targets_version,
            v.switched_at,
            v.expires
        ),
        None => println!("  serving      nothing yet (no sync has finished)"),
    }
    if let Some(up) = &s.upstream_seen {
        let lag = match &s.serving {
            Some(v) if v.timestamp_version >= up.timestamp_version => "up to date".to_owned(),
            Some(v) => format!(
                "behind: upstream targets {} (served {}), timestamp {} (served {})",
                up.targets_version, v.targets_version, up.timestamp_version, v.timestamp_version
            ),
            None => "nothing served yet".to_owned(),
        };
        println!("  upstream     {lag}; last seen {}", up.at);
    }
    if let Some(last) = &s.last_sync {
        println!("  last sync    {}", describe_sync(last));
    }
    if let Some(f) = &s.last_failure {
        println!("  last failure {}: {}", f.at, f.reason);
    }
    if let Some(n) = &s.next_sync {
        println!(
            "  next sync    {} ({}; decided by {}), WAN cap {}",
            n.at, n.reason, n.decided_by, n.cap
        );
        if let Some(why) = &n.fallback {
            println!("               the configured plugin did not decide: {why}");
        }
    }
    println!(
        "  reports      {} waiting in the outbox, {} forwarded{}",
        s.outbox.pending,
        s.outbox.forwarded,
        s.outbox
            .last_forwarded_at
            .as_deref()
            .map(|t| format!(" (last {t})"))
            .unwrap_or_default()
    );
    if let Some(e) = &s.outbox.last_error {
        println!("               forwarding fails: {e}");
    }
    println!(
        "  WAN          {} received, {} sent",
        HumanBytes(s.wan.received),
        HumanBytes(s.wan.sent)
    );
    println!(
        "  LAN          {} served to agents{}",
        HumanBytes(s.lan_served),
        if s.lan_served > s.wan.received {
            format!(
                " ({} more than crossed the WAN)",
                HumanBytes(s.lan_served - s.wan.received)
            )
        } else {
            String::new()
        }
    );
    if let Ok(catalog) = open_catalog(data) {
        for pin in catalog.pins(chrono::Utc::now().timestamp())? {
            let until = chrono::DateTime::from_timestamp(pin.until, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            println!(
                "  pinned       {} until {until} ({})",
                pin.target, pin.reason
            );
        }
        let mut evicted: Vec<String> = catalog.evicted()?.into_iter().collect();
        evicted.sort();
        if !evicted.is_empty() {
            println!(
                "  evicted      {} (for the cache quota)",
                evicted.join(", ")
            );
        }
    }
    if !s.packages.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = s
            .packages
            .iter()
            .map(|(name, t)| {
                vec![
                    name.clone(),
                    HumanBytes(t.wan_bytes).to_string(),
                    HumanBytes(t.full_bytes).to_string(),
                    HumanBytes(t.full_bytes.saturating_sub(t.wan_bytes)).to_string(),
                    HumanBytes(t.lan_bytes).to_string(),
                ]
            })
            .collect();
        output::table(
            &["PACKAGE", "OVER WAN", "FULL SIZE", "SAVED", "SERVED ON LAN"],
            &rows,
        );
    }
    Ok(())
}

fn describe_sync(r: &SyncRecord) -> String {
    let outcome = match r.outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Partial => "partial",
        Outcome::Failed => "failed",
    };
    let mut text = format!(
        "{outcome} ({}), {} to {}; fetched {} version(s), {} of chunks ({} reused, {} resumed), \
         {} of deltas for {} file(s), {} of manifests, {} over the WAN",
        r.trigger,
        r.started,
        r.finished,
        r.fetched.len(),
        HumanBytes(r.chunk_bytes),
        HumanBytes(r.reused_bytes),
        HumanBytes(r.resumed_bytes),
        HumanBytes(r.delta_bytes),
        r.files_by_delta,
        HumanBytes(r.manifest_bytes),
        HumanBytes(r.wan_bytes)
    );
    if !r.dropped.is_empty() {
        text.push_str(&format!("; dropped {}", r.dropped.join(", ")));
    }
    if let Some(e) = &r.error {
        text.push_str(&format!("; {e}"));
    }
    text
}

async fn sync(data: &Path, wait: bool, timeout: Duration, json: bool) -> anyhow::Result<()> {
    let status = load_status(data)?;
    let address: SocketAddr = status
        .address
        .as_deref()
        .context("the relay is not running; start it with `ferry relay run`")?
        .parse()
        .context("status.json holds a bad address")?;
    // A relay listening on every address is reached on loopback.
    let host = match address.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let creds = ferry_net::ClientCredentials::load(data)?;
    let base: url::Url = format!("https://{host}:{}/", address.port()).parse()?;
    let client =
        ferry_net::HubClient::new(base, &creds.ca_pem, Some((&creds.cert_pem, &creds.key_pem)))?;
    let path = format!("{}?wait={wait}", routes::relative(routes::RELAY_SYNC));
    let answer: serde_json::Value = client
        .post_bytes_within(&path, "application/json", Vec::new(), timeout)
        .await?;
    if !wait {
        if json {
            return output::json(&answer);
        }
        println!("sync requested");
        return Ok(());
    }
    let record: SyncRecord = serde_json::from_value(answer.clone())
        .context("the relay answered with an unexpected record")?;
    if json {
        output::json(&answer)?;
    } else {
        println!("sync {}", describe_sync(&record));
    }
    if record.outcome != Outcome::Succeeded {
        anyhow::bail!(
            "the sync did not finish: {}",
            record.error.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(())
}
