//! `ferry settings`: values set centrally for all agents, a site, a group
//! or one agent, which reach agents at their next check-in.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use clap::Subcommand;
use ferry_net::api::routes;
use ferry_net::settings::{KEYS, Scope, SettingsChange, SettingsView};

use crate::{ClientData, output};

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Set values in one scope (publisher role); agents take them at their
    /// next check-in, within seconds.
    ///
    /// Example: ferry settings set --scope site:berlin checkin-wait=10s multicast=true
    Set {
        /// Who the values apply to: global, site:NAME, group:NAME or
        /// agent:ID. The most specific scope wins.
        #[arg(long, value_name = "SCOPE", value_parser = parse_scope)]
        scope: Scope,
        /// KEY=VALUE pairs; `ferry settings keys` lists the keys.
        #[arg(value_name = "KEY=VALUE", required = true)]
        values: Vec<String>,
        #[command(flatten)]
        data: ClientData,
    },
    /// Remove values from one scope, so a less specific one (or the
    /// agent's own agent.toml) applies again.
    Unset {
        /// The scope: global, site:NAME, group:NAME or agent:ID.
        #[arg(long, value_name = "SCOPE", value_parser = parse_scope)]
        scope: Scope,
        /// Keys to remove.
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        data: ClientData,
    },
    /// Every scope's values, or what one agent resolves from them.
    List {
        /// Show the values agent ID takes and the scope each comes from
        /// (groups matched against its last reported inventory).
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: ClientData,
    },
    /// The keys agents understand, with their values.
    Keys,
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    text.parse()
}

fn print(view: &SettingsView) {
    if view.settings.scopes.is_empty() {
        println!(
            "no settings (version {}); agents use their agent.toml",
            view.version
        );
        return;
    }
    let rows: Vec<Vec<String>> = view
        .settings
        .scopes
        .iter()
        .flat_map(|s| {
            s.values
                .iter()
                .map(|(k, v)| vec![s.scope.to_string(), k.clone(), v.clone()])
        })
        .collect();
    output::table(&["SCOPE", "KEY", "VALUE"], &rows);
    println!(
        "version {}, signed until {}; the most specific scope wins (global < site < group < agent)",
        view.version,
        output::time(view.expires_at)
    );
}

pub async fn run_settings(cmd: SettingsCommand) -> anyhow::Result<()> {
    match cmd {
        SettingsCommand::Set {
            scope,
            values,
            data,
        } => {
            let mut set = BTreeMap::new();
            for pair in values {
                let (key, value) = pair
                    .split_once('=')
                    .with_context(|| format!("{pair:?} is not KEY=VALUE"))?;
                ferry_net::settings::check(key, value).map_err(anyhow::Error::msg)?;
                if set.insert(key.to_owned(), value.to_owned()).is_some() {
                    bail!("{key} is given twice");
                }
            }
            change(
                SettingsChange {
                    scope,
                    set,
                    unset: Vec::new(),
                },
                &data,
            )
            .await
        }
        SettingsCommand::Unset { scope, keys, data } => {
            change(
                SettingsChange {
                    scope,
                    set: BTreeMap::new(),
                    unset: keys,
                },
                &data,
            )
            .await
        }
        SettingsCommand::List { agent, json, data } => {
            let (_, client) = crate::client_cmds::connect(&data)?;
            let path = match &agent {
                Some(id) => format!(
                    "{}?agent={}",
                    routes::relative(routes::SETTINGS),
                    url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
                ),
                None => routes::relative(routes::SETTINGS).to_owned(),
            };
            let view: SettingsView = client.get_json(&path).await?;
            if json {
                return output::json(&view);
            }
            match (&agent, &view.resolved) {
                (Some(id), Some(resolved)) if resolved.is_empty() => {
                    println!("agent {id} takes no settings set centrally: its agent.toml applies")
                }
                (Some(id), Some(resolved)) => {
                    let rows: Vec<Vec<String>> = resolved
                        .iter()
                        .map(|(k, r)| vec![k.clone(), r.value.clone(), r.scope.to_string()])
                        .collect();
                    output::table(&["KEY", "VALUE", "FROM"], &rows);
                    println!(
                        "what agent {id} takes at its next check-in (version {})",
                        view.version
                    );
                }
                _ => print(&view),
            }
            Ok(())
        }
        SettingsCommand::Keys => {
            for key in KEYS {
                println!("{} ({})\n    {}", key.name, key.values, key.help);
            }
            Ok(())
        }
    }
}

async fn change(change: SettingsChange, data: &ClientData) -> anyhow::Result<()> {
    let (_, client) = crate::client_cmds::connect(data)?;
    let view: SettingsView = client
        .post_json(routes::relative(routes::SETTINGS), &change)
        .await?;
    print(&view);
    Ok(())
}
