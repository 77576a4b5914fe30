//! `ferry agent`: enroll an endpoint, run it, see what it did.

use std::path::PathBuf;

use clap::Subcommand;
use ferry_agent::{init, run, status};

use crate::output;

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once per process")]
pub enum AgentCommand {
    /// Enroll this machine as an agent and create its data directory.
    Init {
        /// The office's relay (or the hub, for a roaming machine), e.g.
        /// https://relay.berlin.example:8444
        #[arg(long)]
        server: url::Url,
        /// The hub, when --server is a relay: the fallback source.
        #[arg(long)]
        hub: Option<url::Url>,
        /// The one-time token from `ferry token create --role agent --site S`.
        #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
        token: String,
        /// Data directory to create (new or empty).
        #[arg(long)]
        data: PathBuf,
        /// Where installers may write; an install step's relative target
        /// goes under it.
        #[arg(long, default_value = "/opt/ferry")]
        install_root: PathBuf,
        /// A name for this machine in the hub's inventory (default: host name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Run the agent: check in, get and install tasks, report.
    Run {
        /// The agent's data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Show the agent's tasks, installed packages and check-ins.
    Status {
        /// The agent's data directory.
        #[arg(long)]
        data: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run_agent(cmd: AgentCommand) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Init {
            server,
            hub,
            token,
            data,
            install_root,
            name,
        } => {
            let summary = init::init(init::InitOptions {
                server: server.clone(),
                hub,
                token,
                data: data.clone(),
                install_root,
                name,
            })
            .await?;
            println!(
                "created agent {} (site {}) in {}",
                summary.id,
                summary.site.as_deref().unwrap_or("none"),
                data.display()
            );
            println!("  server  {server}");
            println!();
            println!("Edit agent.toml to change where installers may write, then:");
            println!("  ferry agent run --data {}", data.display());
            Ok(())
        }
        AgentCommand::Run { data } => {
            run::run(
                &data,
                run::RunOptions::default(),
                ferry_builtin_plugins::BUILTINS,
                crate::hub_cmds::shutdown_signal(),
            )
            .await?;
            Ok(())
        }
        AgentCommand::Status { data, json } => {
            let report = status::read(&data)?;
            if json {
                return output::json(&report);
            }
            let a = &report.agent;
            println!(
                "agent {} (site {}), server {} ({}){}",
                a.id,
                a.site.as_deref().unwrap_or("none"),
                a.server,
                if a.server_kind.is_empty() {
                    "not reached yet"
                } else {
                    &a.server_kind
                },
                match a.pid {
                    Some(pid) => format!(", running as pid {pid}"),
                    None => ", not running".into(),
                }
            );
            if let Some(at) = a.last_checkin_at {
                println!(
                    "  last check-in {}, task list version {}",
                    chrono::DateTime::from_timestamp(at, 0)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                    a.task_version
                );
            }
            println!("  reports waiting to be sent: {}", a.outbox_pending);
            for r in &a.refused {
                println!("  refused: {}", r.message);
            }
            if !a.policies.is_empty() {
                let policies: Vec<String> =
                    a.policies.iter().map(|(k, v)| format!("{k} {v}")).collect();
                println!("  policies: {}", policies.join(", "));
            }
            for (name, version) in &a.plugin_packages {
                println!("  plugin package {name} {version}");
            }
            if a.settings_version > 0 {
                println!("settings set centrally (version {}):", a.settings_version);
                for (key, r) in &a.settings {
                    println!("  {key} = {} (from {})", r.value, r.scope);
                }
            }
            for note in &a.settings_notes {
                println!("  settings: {note}");
            }
            if !report.installed.is_empty() {
                println!("installed:");
                for (name, version) in &report.installed {
                    println!("  {name} {version}");
                }
            }
            if report.tasks.is_empty() {
                println!("no tasks");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = report
                .tasks
                .iter()
                .map(|t| {
                    vec![
                        t.task.id.clone(),
                        format!("{} {}", t.task.package, t.task.version),
                        t.state.to_string(),
                        format!("{}%", t.percent),
                        t.reason.map(|r| r.to_string()).unwrap_or_default(),
                        t.message.clone(),
                    ]
                })
                .collect();
            output::table(
                &["TASK", "PACKAGE", "STATE", "%", "REASON", "MESSAGE"],
                &rows,
            );
            Ok(())
        }
    }
}
