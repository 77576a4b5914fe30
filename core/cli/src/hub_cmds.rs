//! `ferry hub ...` and `ferry token ...`: commands run on the hub's machine.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use ferry_catalog::{Enrollment, ReportStore, Role, SqliteCatalog, VersionCatalog};
use ferry_hub::{HubLayout, HubState, init, run, tokens};

use crate::output;

#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Create a hub data directory: catalog, content store, signing keys,
    /// CA and server certificate, and a documented hub.toml.
    Init {
        /// Data directory to create (must be new or empty).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// A DNS name or IP address clients use to reach the hub, added to
        /// the server certificate (repeatable). localhost, 127.0.0.1, ::1 and
        /// the host name are always included.
        #[arg(long = "san", value_name = "NAME")]
        names: Vec<String>,
        /// Address to serve on, written to hub.toml.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Serve the hub's HTTPS API until interrupted (Ctrl-C or SIGTERM).
    Run {
        /// Hub data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Address to serve on, overriding hub.toml (port 0: any free port).
        #[arg(long, env = "FERRY_LISTEN", value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Create the data directory first (as `ferry hub init` would) if it
        /// does not hold a hub yet; an existing hub is used as it is.
        #[arg(long)]
        init: bool,
    },
    /// Show the signed metadata (each role's version and expiry, whether the
    /// root key is online) and what the catalog holds. Safe while the hub runs.
    Status {
        /// Hub data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove content no published version references, now (the running hub
    /// also does this every `gc.interval`; stop it first).
    Gc {
        /// Hub data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Also drop uploaded chunks no publish used that are older than
        /// this (default: `gc.staged_max_age` of hub.toml). `0s` reclaims
        /// the space of every unfinished upload, e.g. when the disk is full.
        #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
        staged_older_than: Option<Duration>,
    },
    /// Replace a TUF signing key (stop the hub first). Clients move to the new
    /// root metadata on their next update; see docs/security.md.
    RotateKey {
        /// Hub data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The role whose key is replaced: root, targets, snapshot or
        /// timestamp, or control (the key that signs revocation lists and
        /// tasks; also adds one to a hub created without it).
        #[arg(long, value_parser = ["root", "targets", "snapshot", "timestamp", "control"])]
        role: String,
    },
    /// List enrolled clients.
    Clients {
        /// Hub data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show agents' reports the hub received (directly or through relays),
    /// newest first. Safe while the hub runs.
    Reports {
        /// Hub data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Only this agent's.
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an enrolled client: its certificate is refused from now on.
    Revoke {
        /// Hub data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The client id (see `ferry hub clients`).
        client: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a one-time enrollment token.
    Create(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Hub data directory.
    #[arg(long, value_name = "HUB_DIR")]
    data: PathBuf,
    /// Role the token enrolls: publisher, relay or agent.
    #[arg(long)]
    role: Role,
    /// Site the client belongs to (required for relay and agent).
    #[arg(long)]
    site: Option<String>,
    /// How long the token stays valid, e.g. 30m, 24h, 7d.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    expires: Duration,
    /// Print JSON instead of the bare token.
    #[arg(long)]
    json: bool,
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn run_hub(cmd: HubCommand) -> anyhow::Result<()> {
    match cmd {
        HubCommand::Init {
            data,
            names,
            listen,
        } => {
            let summary = init::init(&data, init::InitOptions { names, listen }).await?;
            println!("created hub in {}", summary.data.display());
            println!("  listen          {}", summary.listen);
            println!("  certificate for {}", summary.names.join(", "));
            println!("  CA fingerprint  {}", summary.ca_fingerprint);
            println!(
                "  root key        {}",
                HubLayout::new(&summary.data)
                    .tuf()
                    .join("keys/root.der")
                    .display()
            );
            println!();
            println!("Move the root key offline once the hub runs (see docs/security.md).");
            println!("Next: ferry hub run --data {}", summary.data.display());
            Ok(())
        }
        HubCommand::Run { data, listen, init } => {
            if init && !HubLayout::new(&data).config().exists() {
                let summary = init::init(
                    &data,
                    init::InitOptions {
                        names: Vec::new(),
                        listen,
                    },
                )
                .await?;
                println!("created hub in {}", summary.data.display());
                println!("  CA fingerprint  {}", summary.ca_fingerprint);
            }
            run::run(
                &data,
                run::RunOptions { listen },
                |addr| {
                    println!("ferry hub listening on https://{addr}");
                    print_next_steps(&data, addr);
                    let _ = std::io::stdout().flush();
                },
                shutdown_signal(),
            )
            .await?;
            Ok(())
        }
        HubCommand::RotateKey { data, role } => {
            let version = ferry_hub::keys::rotate(&data, &role).await?;
            println!("replaced the {role} key; root metadata is now version {version}");
            if role == "root" {
                println!("Move the new tuf/keys/root.der offline again (see docs/security.md).");
            }
            Ok(())
        }
        HubCommand::Status { data, json } => status(&data, json),
        HubCommand::Gc {
            data,
            staged_older_than,
        } => {
            let _lock = ferry_hub::lock::lock(&data)?;
            let state = HubState::open(&data)?;
            let age = staged_older_than.unwrap_or(state.config.gc.staged_max_age);
            let report = ferry_hub::gc::collect(&state, age).await?;
            println!(
                "removed {} object(s), {} expired staged chunk(s) and {} staged pack(s)",
                report.objects, report.staged_chunks, report.packs
            );
            Ok(())
        }
        HubCommand::Clients { data, json } => {
            let catalog = open_catalog(&data)?;
            let clients = catalog.list_clients()?;
            if json {
                return output::json(&clients);
            }
            let rows: Vec<Vec<String>> = clients
                .iter()
                .map(|c| {
                    vec![
                        c.id.clone(),
                        c.role.to_string(),
                        c.site.clone().unwrap_or_else(|| "-".into()),
                        crate::output::time(c.enrolled_at),
                        c.revoked_at
                            .map(crate::output::time)
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            output::table(&["ID", "ROLE", "SITE", "ENROLLED", "REVOKED"], &rows);
            Ok(())
        }
        HubCommand::Reports {
            data,
            agent,
            limit,
            json,
        } => {
            let catalog = open_catalog(&data)?;
            let reports = catalog.list_reports(agent.as_deref(), limit)?;
            if json {
                return output::json(&reports);
            }
            let rows: Vec<Vec<String>> = reports
                .iter()
                .map(|r| {
                    let body = r.body.to_string();
                    vec![
                        crate::output::time(r.created_at),
                        r.agent.clone(),
                        r.kind.clone(),
                        r.id.clone(),
                        body.chars().take(60).collect(),
                    ]
                })
                .collect();
            output::table(&["CREATED", "AGENT", "KIND", "ID", "BODY"], &rows);
            Ok(())
        }
        HubCommand::Revoke { data, client } => {
            let catalog = open_catalog(&data)?;
            if !catalog.revoke_client(&client, chrono::Utc::now().timestamp())? {
                anyhow::bail!(
                    "no active client {client:?}; see `ferry hub clients --data {}`",
                    data.display()
                );
            }
            println!("revoked {client}");
            Ok(())
        }
    }
}

/// `ferry hub status`.
fn status(data: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let layout = HubLayout::new(data);
    if !layout.config().exists() {
        anyhow::bail!(
            "{} is not a hub data directory (no hub.toml)",
            data.display()
        );
    }
    let config = ferry_hub::HubConfig::load(&layout.config())?;
    let tuf = ferry_trust::SigningRepository::open(&layout.tuf(), config.tuf)?;
    let state = tuf.state()?;
    let needs = tuf.needs_refresh()?;
    let root_online = tuf.root_key_online();
    let catalog = open_catalog(data)?;
    let versions = catalog.list_versions(None)?.len();
    let clients = catalog.list_clients()?;
    let active = clients.iter().filter(|c| c.revoked_at.is_none()).count();
    let l = config.tuf;
    let roles = [
        ("root", state.root_version, state.root_expires, l.root),
        ("targets", state.version, state.targets_expires, l.targets),
        (
            "snapshot",
            state.version,
            state.snapshot_expires,
            l.snapshot,
        ),
        (
            "timestamp",
            state.version,
            state.timestamp_expires,
            l.timestamp,
        ),
    ];
    let root_note = match (needs.root, root_online) {
        (true, false) => "RENEWAL DUE: root key offline (see docs/security.md)",
        (true, true) => "renewal due (the running hub renews it)",
        (false, true) => "ok (root key online)",
        (false, false) => "ok (root key offline)",
    };
    if json {
        let roles: Vec<_> = roles
            .iter()
            .map(|(role, version, expires, lifetime)| {
                serde_json::json!({
                    "role": role,
                    "version": version,
                    "expires": expires.to_string(),
                    "lifetime": humantime::format_duration(*lifetime).to_string(),
                })
            })
            .collect();
        return output::json(&serde_json::json!({
            "metadata": roles,
            "root_key_online": root_online,
            "root_renewal_due": needs.root,
            "metadata_renewal_due": needs.metadata,
            "versions": versions,
            "clients": active,
            "revoked_clients": clients.len() - active,
        }));
    }
    let rows: Vec<Vec<String>> = roles
        .iter()
        .map(|(role, version, expires, lifetime)| {
            let note = if *role == "root" {
                root_note.to_owned()
            } else if needs.metadata {
                "renewal due (the running hub renews it)".to_owned()
            } else {
                "ok".to_owned()
            };
            vec![
                role.to_string(),
                version.to_string(),
                expires.to_string(),
                humantime::format_duration(*lifetime).to_string(),
                note,
            ]
        })
        .collect();
    output::table(&["ROLE", "VERSION", "EXPIRES", "LIFETIME", "STATUS"], &rows);
    println!();
    println!("published versions  {versions}");
    println!(
        "clients             {active} active, {} revoked",
        clients.len() - active
    );
    Ok(())
}

/// What an admin does next, printed once the hub listens.
fn print_next_steps(data: &std::path::Path, addr: SocketAddr) {
    let data = data.display();
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    let url = match addr {
        SocketAddr::V6(_) if host.contains(':') => format!("https://[{host}]:{}", addr.port()),
        _ => format!("https://{host}:{}", addr.port()),
    };
    println!(
        "\nNext, in another terminal:\n  \
         ferry token create --data {data} --role publisher\n  \
         ferry enroll --server {url} --token TOKEN --data ./publisher\n  \
         ferry publish ./my-app --name my-app --version 1.0.0 --data ./publisher\n\
         Stop the hub with Ctrl-C."
    );
}

fn open_catalog(data: &std::path::Path) -> anyhow::Result<SqliteCatalog> {
    let layout = HubLayout::new(data);
    if !layout.config().exists() {
        anyhow::bail!("{} is not a hub data directory", data.display());
    }
    SqliteCatalog::open(&layout.catalog()).context("opening the hub catalog")
}

pub fn run_token(cmd: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create(args) = cmd;
    let created = tokens::create_token(&args.data, args.role, args.site, args.expires)?;
    if args.json {
        return output::json(&serde_json::json!({
            "token": created.token.to_string(),
            "role": created.role,
            "site": created.site,
            "expires_at": crate::output::time(created.expires_at),
        }));
    }
    eprintln!(
        "one-time {} token{}, valid until {}:",
        created.role,
        created
            .site
            .as_deref()
            .map(|s| format!(" for site {s}"))
            .unwrap_or_default(),
        crate::output::time(created.expires_at)
    );
    println!("{}", created.token);
    Ok(())
}
