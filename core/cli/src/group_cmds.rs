//! `ferry group`: named sets of agents that tasks target.

use anyhow::bail;
use clap::Subcommand;
use ferry_net::api::routes;
use ferry_net::tasks::{GroupChange, GroupInfo, GroupSpec};

use crate::{ClientData, output};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group (publisher role). Members are agents any selector
    /// takes in: agent:ID, site:NAME (also agents enrolled later),
    /// os:NAME, arch:NAME, subnet:ADDR/LEN (from agents' inventory).
    Create {
        /// The group's name.
        name: String,
        /// Selectors (repeatable).
        #[arg(value_name = "SELECTOR")]
        selectors: Vec<String>,
        #[command(flatten)]
        data: ClientData,
    },
    /// Add selectors to a group.
    Add {
        /// The group's name.
        name: String,
        /// Selectors to add.
        #[arg(value_name = "SELECTOR", required = true)]
        selectors: Vec<String>,
        #[command(flatten)]
        data: ClientData,
    },
    /// Remove selectors from a group.
    Remove {
        /// The group's name.
        name: String,
        /// Selectors to remove, as `ferry group list` shows them.
        #[arg(value_name = "SELECTOR", required = true)]
        selectors: Vec<String>,
        #[command(flatten)]
        data: ClientData,
    },
    /// List groups with the agents they select now.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: ClientData,
    },
}

fn print(info: &GroupInfo) {
    println!(
        "group {}: {} selector(s), {} agent(s) now: {}",
        info.name,
        info.selectors.len(),
        info.members.len(),
        info.members.join(", ")
    );
}

fn check(selectors: &[String]) -> anyhow::Result<()> {
    for s in selectors {
        if let Err(e) = s.parse::<ferry_net::tasks::Selector>() {
            bail!(e);
        }
    }
    Ok(())
}

pub async fn run_group(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::Create {
            name,
            selectors,
            data,
        } => {
            check(&selectors)?;
            let (_, client) = crate::client_cmds::connect(&data)?;
            let info: GroupInfo = client
                .post_json(
                    routes::relative(routes::GROUPS),
                    &GroupSpec { name, selectors },
                )
                .await?;
            print(&info);
            Ok(())
        }
        GroupCommand::Add {
            name,
            selectors,
            data,
        } => {
            let add = GroupChange {
                add: selectors,
                ..GroupChange::default()
            };
            change(&name, add, &data).await
        }
        GroupCommand::Remove {
            name,
            selectors,
            data,
        } => {
            let remove = GroupChange {
                remove: selectors,
                ..GroupChange::default()
            };
            change(&name, remove, &data).await
        }
        GroupCommand::List { json, data } => {
            let (_, client) = crate::client_cmds::connect(&data)?;
            let groups: Vec<GroupInfo> = client.get_json(routes::relative(routes::GROUPS)).await?;
            if json {
                return output::json(&groups);
            }
            if groups.is_empty() {
                eprintln!("no groups; create one with `ferry group create NAME SELECTOR...`");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = groups
                .iter()
                .map(|g| {
                    vec![
                        g.name.clone(),
                        g.selectors.join(" "),
                        g.members.len().to_string(),
                    ]
                })
                .collect();
            output::table(&["GROUP", "SELECTORS", "AGENTS NOW"], &rows);
            Ok(())
        }
    }
}

async fn change(name: &str, change: GroupChange, data: &ClientData) -> anyhow::Result<()> {
    // The name goes into the request's path.
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        bail!("invalid group name {name:?}; see `ferry group list`");
    }
    check(&change.add)?;
    check(&change.remove)?;
    let (_, client) = crate::client_cmds::connect(data)?;
    let info: GroupInfo = client.post_json(&routes::group(name), &change).await?;
    print(&info);
    Ok(())
}
