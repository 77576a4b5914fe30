//! `ferry`: one binary for every role. This crate only parses arguments,
//! calls into a role or a client, and prints.

mod agent_cmds;
mod client_cmds;
mod demo;
mod group_cmds;
mod hub_cmds;
mod output;
mod plugin;
mod relay_cmds;
mod settings_cmds;
mod task_cmds;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Ferry moves software packages from a central hub to every endpoint, across
/// slow WAN links, with every byte verified against hub-signed metadata.
#[derive(Debug, Parser)]
#[command(name = "ferry", version)]
#[command(after_help = "Quick start (one machine):\n  \
    ferry hub init --data ./hub && ferry hub run --data ./hub --listen 127.0.0.1:8443\n  \
    ferry token create --data ./hub --role publisher\n  \
    ferry enroll --server https://127.0.0.1:8443 --token TOKEN --data ./publisher\n  \
    ferry publish ./my-app --name my-app --version 1.0.0 --data ./publisher")]
struct Cli {
    /// Log filter for diagnostics on stderr (e.g. `info`, `ferry_hub=debug`);
    /// also read from FERRY_LOG.
    #[arg(long, global = true, env = "FERRY_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// See Ferry work on this machine: a hub, relays behind WAN budgets and
    /// agents deploy a sample package; then everything is removed.
    Demo(demo::DemoArgs),
    /// Run and administer a hub (the central server).
    #[command(subcommand)]
    Hub(hub_cmds::HubCommand),
    /// Run and inspect a relay (a branch office's distribution server).
    #[command(subcommand)]
    Relay(relay_cmds::RelayCommand),
    /// Enroll, run and inspect an agent (an endpoint that installs tasks).
    #[command(subcommand)]
    Agent(agent_cmds::AgentCommand),
    /// Deploy packages to sites and agents, and follow them.
    #[command(subcommand)]
    Task(task_cmds::TaskCommand),
    /// Name sets of agents (by id, site or inventory) for tasks to target.
    #[command(subcommand)]
    Group(group_cmds::GroupCommand),
    /// Set agents' settings centrally: for all, a site, a group or one agent.
    #[command(subcommand)]
    Settings(settings_cmds::SettingsCommand),
    /// Create enrollment tokens (run on the hub's machine).
    #[command(subcommand)]
    Token(hub_cmds::TokenCommand),
    /// Enroll this machine with a hub using a one-time token.
    Enroll(client_cmds::EnrollArgs),
    /// Publish a directory as a new package version (publisher role).
    Publish(client_cmds::PublishArgs),
    /// List published packages and versions.
    Packages(client_cmds::PackagesArgs),
    /// Download a package version, verifying every byte, into a new directory.
    Fetch(client_cmds::FetchArgs),
    /// Withdraw a published version (publisher role).
    Unpublish(client_cmds::UnpublishArgs),
    /// Write, inspect and try WebAssembly policy and installer plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

/// Where a client keeps its credentials: `--data`, then `FERRY_DATA`, then
/// the per-user data directory.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientData {
    /// Client data directory (credentials, pinned hub identity, caches).
    /// Default: $FERRY_DATA, else the per-user data directory + /ferry.
    #[arg(long, env = "FERRY_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
}

impl ClientData {
    fn dir(&self) -> anyhow::Result<PathBuf> {
        match &self.data {
            Some(d) => Ok(d.clone()),
            None => dirs::data_dir().map(|d| d.join("ferry")).ok_or_else(|| {
                anyhow::anyhow!(
                    "no per-user data directory on this system; pass --data DIR or set FERRY_DATA"
                )
            }),
        }
    }
}

impl Command {
    /// Whether the command is a long-running server (or the demo, which
    /// runs servers): a peer closing its socket must never end it.
    fn serves(&self) -> bool {
        matches!(
            self,
            Command::Demo(_)
                | Command::Hub(hub_cmds::HubCommand::Run { .. })
                | Command::Relay(relay_cmds::RelayCommand::Run { .. })
                | Command::Agent(agent_cmds::AgentCommand::Run { .. })
        )
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A command's output piped into `head` ends quietly when the reader
    // goes away, as other command-line tools do, instead of failing on the
    // broken pipe. Servers keep SIGPIPE ignored: with its default action, a
    // client resetting its connection while a response is written would
    // kill the hub, relay or agent (bench/scale found it).
    if !cli.command.serves() {
        // SAFETY: setting a signal's disposition to its default, before
        // any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Hub(cmd) => hub_cmds::run_hub(cmd).await,
            Command::Relay(cmd) => relay_cmds::run_relay(cmd).await,
            Command::Agent(cmd) => agent_cmds::run_agent(cmd).await,
            Command::Task(cmd) => task_cmds::run_task(cmd).await,
            Command::Group(cmd) => group_cmds::run_group(cmd).await,
            Command::Settings(cmd) => settings_cmds::run_settings(cmd).await,
            Command::Token(cmd) => hub_cmds::run_token(cmd),
            Command::Enroll(args) => client_cmds::enroll(args).await,
            Command::Publish(args) => client_cmds::publish(args).await,
            Command::Packages(args) => client_cmds::packages(args).await,
            Command::Fetch(args) => client_cmds::fetch(args).await,
            Command::Unpublish(args) => client_cmds::unpublish(args).await,
            // Plugin calls block, and WASI's synchronous calls drive their
            // own futures: run them off the async threads.
            Command::Plugin(cmd) => tokio::task::spawn_blocking(move || plugin::run(cmd)).await?,
        }
    });
    exit(result)
}

fn exit(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
