//! `ferry task`: deploy a package to sites or agents, and follow it.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_net::api::routes;
use ferry_net::tasks::{
    SourceKind, Task, TaskCreated, TaskDetail, TaskSpec, TaskState, TaskSummary,
};

use crate::{ClientData, output};

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Deploy a package version to sites or agents (publisher role).
    Create(CreateArgs),
    /// List tasks with their targets counted by state.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: ClientData,
    },
    /// Show one task: each target's state, source, bytes and reason.
    Show {
        /// The task id (from `ferry task list`).
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Redraw every second until every target is done (Ctrl-C stops).
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        data: ClientData,
    },
    /// Cancel a task: agents stop it and report it cancelled.
    Cancel {
        /// The task id.
        id: String,
        #[command(flatten)]
        data: ClientData,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The package and a version requirement; the newest signed version
    /// matching it is deployed (printed).
    #[arg(long, value_name = "NAME[@REQ]")]
    package: String,
    /// Who gets it: `site:NAME`, `agent:ID` or `group:NAME` (repeatable).
    #[arg(
        long = "target",
        value_name = "site:S|agent:ID|group:G",
        required = true
    )]
    targets: Vec<String>,
    /// Agents do not start before this time: RFC 3339
    /// (`2026-12-02T22:00:00Z`) or a delay from now (`30m`, `2h`).
    #[arg(long, value_name = "TIME")]
    not_before: Option<String>,
    /// It must be done by then; agents refuse it afterwards. Same forms.
    #[arg(long, value_name = "TIME")]
    deadline: Option<String>,
    /// Allow subnet multicast. Without this or --no-multicast, the
    /// `multicast` setting decides (`ferry settings`; off if unset).
    #[arg(long, conflicts_with = "no_multicast")]
    multicast: bool,
    /// Forbid subnet multicast, whatever the settings say.
    #[arg(long)]
    no_multicast: bool,
    /// How long a subnet waits for agents to join a multicast session;
    /// without it, the `multicast-delay` setting decides.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "no_multicast")]
    multicast_delay: Option<Duration>,
    /// Download and keep only; a later task installs from the cache.
    #[arg(long)]
    precache_only: bool,
    /// When installs may start, in each agent's local time: a daily range
    /// (`22:00-06:00`) or a cron expression for the window's starts and its
    /// length (`0 22 * * 1-5 for 8h`). Agents download ahead and wait for
    /// it.
    #[arg(long, value_name = "CRON-OR-RANGE")]
    install_window: Option<String>,
    /// Download ahead; from --not-before on, and inside the install window,
    /// install only what is cached and never download.
    #[arg(long)]
    install_from_cache_only: bool,
    /// An install-step parameter laid over the package's own (repeatable);
    /// values are read as TOML when they parse, else as strings.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: ClientData,
}

fn when(text: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp());
    }
    let delay = humantime::parse_duration(text).with_context(|| {
        format!("{text:?} is neither an RFC 3339 time (2026-12-02T22:00:00Z) nor a delay (30m)")
    })?;
    i64::try_from(delay.as_secs())
        .ok()
        .and_then(|d| chrono::Utc::now().timestamp().checked_add(d))
        .with_context(|| format!("{text:?} is too far in the future"))
}

fn params(list: &[String]) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    let mut out = BTreeMap::new();
    for p in list {
        let Some((key, value)) = p.split_once('=') else {
            bail!("--param {p:?} is not KEY=VALUE");
        };
        if key.is_empty() {
            bail!("--param {p:?} has an empty key");
        }
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        let json = serde_json::to_value(parsed).context("a parameter value")?;
        if out.insert(key.to_owned(), json).is_some() {
            bail!("--param {key} is given twice");
        }
    }
    Ok(out)
}

pub async fn run_task(cmd: TaskCommand) -> anyhow::Result<()> {
    match cmd {
        TaskCommand::Create(args) => create(args).await,
        TaskCommand::List { json, data } => {
            let (_, client) = crate::client_cmds::connect(&data)?;
            let tasks: Vec<TaskSummary> = client.get_json(routes::relative(routes::TASKS)).await?;
            if json {
                return output::json(&tasks);
            }
            if tasks.is_empty() {
                eprintln!("no tasks; create one with `ferry task create`");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = tasks.iter().map(list_row).collect();
            output::table(
                &[
                    "ID",
                    "PACKAGE",
                    "TARGETS",
                    "STATES",
                    "FROM RELAY",
                    "FROM HUB",
                    "CREATED",
                ],
                &rows,
            );
            Ok(())
        }
        TaskCommand::Show {
            id,
            json,
            watch,
            data,
        } => {
            let (_, client) = crate::client_cmds::connect(&data)?;
            let path = routes::task(&id);
            loop {
                let detail: TaskDetail = client.get_json(&path).await?;
                if json {
                    output::json(&detail)?;
                } else {
                    if watch {
                        print!("\x1b[2J\x1b[H");
                    }
                    print_detail(&detail);
                }
                let _ = std::io::stdout().flush();
                let done = detail.targets.iter().all(|t| {
                    t.progress.as_ref().is_some_and(|p| {
                        p.state.is_final()
                            || (detail.summary.task.precache_only
                                && p.state == TaskState::Downloaded)
                    })
                });
                if !watch || done || detail.summary.task.cancelled {
                    return Ok(());
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = crate::hub_cmds::shutdown_signal() => return Ok(()),
                }
            }
        }
        TaskCommand::Cancel { id, data } => {
            let (_, client) = crate::client_cmds::connect(&data)?;
            let url = client.url(&routes::task(&id))?;
            client.delete(&url).await?;
            println!("cancelled {id}; agents stop it as soon as they hear (within seconds)");
            Ok(())
        }
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let (name, req) = match args.package.split_once('@') {
        Some((n, r)) => (n.to_owned(), r.to_owned()),
        None => (args.package.clone(), "*".to_owned()),
    };
    let spec = TaskSpec {
        package: name,
        requirement: req,
        targets: args.targets,
        not_before: args.not_before.as_deref().map(when).transpose()?,
        deadline: args.deadline.as_deref().map(when).transpose()?,
        multicast: match (args.multicast, args.no_multicast) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        multicast_delay_s: args
            .multicast_delay
            .map(|d| d.as_secs().min(u32::MAX as u64) as u32),
        precache_only: args.precache_only,
        install_from_cache_only: args.install_from_cache_only,
        install_window: args.install_window,
        params: params(&args.params)?,
    };
    let (_, client) = crate::client_cmds::connect(&args.data)?;
    let created: TaskCreated = client
        .post_json(routes::relative(routes::TASKS), &spec)
        .await?;
    if args.json {
        return output::json(&created);
    }
    println!(
        "created task {}: {} {} (resolved from {}), valid until {}",
        created.id,
        spec.package,
        created.version,
        spec.requirement,
        crate::output::time(created.expires_at)
    );
    println!("follow it with: ferry task show {} --watch", created.id);
    Ok(())
}

fn states(s: &BTreeMap<TaskState, u64>) -> String {
    s.iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn targets(t: &Task) -> String {
    if !t.groups.is_empty() {
        // The groups the admin named say more than their members.
        let mut named: Vec<String> = t.groups.iter().map(|g| format!("group:{g}")).collect();
        named.push(format!(
            "({} site(s), {} agent(s))",
            t.sites.len(),
            t.agents.len()
        ));
        return named.join(" ");
    }
    t.sites
        .iter()
        .map(|s| format!("site:{s}"))
        .chain(t.agents.iter().map(|a| format!("agent:{a}")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn list_row(t: &TaskSummary) -> Vec<String> {
    let b = |k| output::short_bytes(t.bytes.get(&k).copied().unwrap_or(0));
    vec![
        format!(
            "{}{}",
            t.task.id,
            if t.task.cancelled { " (cancelled)" } else { "" }
        ),
        format!("{} {}", t.task.package, t.task.version),
        targets(&t.task),
        states(&t.states),
        b(SourceKind::Relay),
        b(SourceKind::Hub),
        crate::output::time(t.task.created_at),
    ]
}

fn print_detail(d: &TaskDetail) {
    let t = &d.summary.task;
    println!(
        "task {}: {} {} (requirement {}) to {}{}",
        t.id,
        t.package,
        t.version,
        t.requirement,
        targets(t),
        if t.cancelled { " - CANCELLED" } else { "" }
    );
    let mut options = Vec::new();
    if let Some(nb) = t.not_before {
        options.push(format!("not before {}", crate::output::time(nb)));
    }
    if let Some(dl) = t.deadline {
        options.push(format!("deadline {}", crate::output::time(dl)));
    }
    let delay = match t.multicast_delay_s {
        Some(s) => format!("delay {s}s"),
        None => "delay per settings".into(),
    };
    match t.multicast_choice() {
        Some(true) => options.push(format!("multicast allowed ({delay})")),
        Some(false) => options.push("multicast forbidden".into()),
        None => options.push(format!("multicast per settings ({delay})")),
    }
    if t.precache_only {
        options.push("pre-cache only".into());
    }
    if let Some(window) = &t.install_window {
        options.push(format!("install window {window} (agents' local time)"));
    }
    if t.install_from_cache_only {
        options.push("install from cache only".into());
    }
    if !options.is_empty() {
        println!("  {}", options.join(", "));
    }
    println!("  states: {}", states(&d.summary.states));
    let sum = |k| d.summary.bytes.get(&k).copied().unwrap_or(0);
    println!(
        "  bytes by source: multicast {}, peers {}, relay {}, hub {}, mirrors {}, already local {}",
        output::short_bytes(sum(SourceKind::Multicast)),
        output::short_bytes(sum(SourceKind::Peer)),
        output::short_bytes(sum(SourceKind::Relay)),
        output::short_bytes(sum(SourceKind::Hub)),
        output::short_bytes(sum(SourceKind::Mirror)),
        output::short_bytes(sum(SourceKind::Local)),
    );
    println!();
    let rows: Vec<Vec<String>> = d
        .targets
        .iter()
        .map(|target| {
            let p = target.progress.as_ref();
            let b = |k| output::short_bytes(p.and_then(|p| p.bytes.get(&k).copied()).unwrap_or(0));
            let reason = p
                .and_then(|p| p.reason.map(|r| r.to_string()))
                .or_else(|| {
                    // A fallback that worked still says why.
                    p.and_then(|p| p.incidents.last().map(|i| format!("({})", i.reason)))
                })
                .unwrap_or_default();
            vec![
                target.agent.clone(),
                target.site.clone().unwrap_or_default(),
                p.map_or("pending".into(), |p| p.state.to_string()),
                p.map_or(String::new(), |p| format!("{}%", p.percent)),
                p.and_then(|p| p.source.map(|s| s.as_str().to_owned()))
                    .unwrap_or_default(),
                b(SourceKind::Relay),
                b(SourceKind::Hub),
                reason,
                p.map_or(String::new(), |p| p.message.clone()),
            ]
        })
        .collect();
    output::table(
        &[
            "AGENT", "SITE", "STATE", "%", "SOURCE", "RELAY", "HUB", "REASON", "MESSAGE",
        ],
        &rows,
    );
}
