//! Groups of agents: named sets of selectors (agent ids, sites, inventory
//! attributes) that tasks target.

use std::collections::HashMap;

use ferry_catalog::{ClientRecord, Role};
use ferry_net::tasks::{GroupChange, GroupInfo, GroupSpec, Inventory, Selector};

use crate::state::blocking;
use crate::tasks::TaskRefusal;
use crate::{HubError, HubState};

/// Most selectors in one group.
const MAX_SELECTORS: usize = 1000;

fn parse(selectors: &[String]) -> Result<Vec<Selector>, TaskRefusal> {
    if selectors.len() > MAX_SELECTORS {
        return Err(TaskRefusal::Invalid(format!(
            "a group holds at most {MAX_SELECTORS} selectors"
        )));
    }
    selectors
        .iter()
        .map(|s| s.parse().map_err(TaskRefusal::Invalid))
        .collect()
}

fn stored(selectors: &[Selector]) -> String {
    let text: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
    serde_json::Value::from(text).to_string()
}

fn load(text: &str) -> Vec<Selector> {
    serde_json::from_str::<Vec<String>>(text)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The enrolled agents (not revoked) `selectors` take in now.
pub(crate) fn members(
    selectors: &[Selector],
    clients: &[ClientRecord],
    inventories: &HashMap<String, Inventory>,
) -> Vec<String> {
    clients
        .iter()
        .filter(|c| c.role == Role::Agent && c.revoked_at.is_none())
        .filter(|c| {
            selectors
                .iter()
                .any(|s| s.matches(&c.id, c.site.as_deref(), inventories.get(&c.id)))
        })
        .map(|c| c.id.clone())
        .collect()
}

/// Everything needed to resolve groups, read at once. Blocks.
pub(crate) struct Directory {
    pub(crate) groups: HashMap<String, Vec<Selector>>,
    pub(crate) clients: Vec<ClientRecord>,
    pub(crate) inventories: HashMap<String, Inventory>,
}

impl Directory {
    pub(crate) fn read(catalog: &dyn ferry_catalog::HubCatalog) -> Result<Directory, HubError> {
        let groups = catalog
            .groups()?
            .into_iter()
            .map(|(name, selectors)| (name, load(&selectors)))
            .collect();
        let inventories = catalog
            .inventories()?
            .into_iter()
            .filter_map(|(agent, body)| Some((agent, serde_json::from_value(body).ok()?)))
            .collect();
        Ok(Directory {
            groups,
            clients: catalog.list_clients()?,
            inventories,
        })
    }

    fn info(&self, name: &str, selectors: &[Selector]) -> GroupInfo {
        GroupInfo {
            name: name.to_owned(),
            selectors: selectors.iter().map(|s| s.to_string()).collect(),
            members: members(selectors, &self.clients, &self.inventories),
        }
    }
}

impl HubState {
    /// Creates a group.
    pub async fn create_group(
        &self,
        spec: GroupSpec,
    ) -> Result<Result<GroupInfo, TaskRefusal>, HubError> {
        if crate::tokens::validate_site(&spec.name).is_err() {
            return Ok(Err(TaskRefusal::Invalid(format!(
                "invalid group name {:?}: use 1-64 characters of a-z, 0-9, '-', '_' or '.'",
                spec.name
            ))));
        }
        let selectors = match parse(&spec.selectors) {
            Ok(s) => s,
            Err(r) => return Ok(Err(r)),
        };
        let catalog = self.catalog.clone();
        let name = spec.name.clone();
        let text = stored(&selectors);
        blocking(move || {
            if !catalog.create_group(&name, &text, chrono::Utc::now().timestamp())? {
                return Ok(Err(TaskRefusal::Invalid(format!(
                    "group {name} exists already; change it with `ferry group add` or `ferry group remove`"
                ))));
            }
            Ok(Ok(Directory::read(catalog.as_ref())?.info(&name, &selectors)))
        })
        .await?
    }

    /// Adds and removes selectors of a group.
    pub async fn change_group(
        &self,
        name: &str,
        change: GroupChange,
    ) -> Result<Result<GroupInfo, TaskRefusal>, HubError> {
        let (add, remove) = match (parse(&change.add), parse(&change.remove)) {
            (Ok(a), Ok(r)) => (a, r),
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        };
        let catalog = self.catalog.clone();
        let name = name.to_owned();
        // One change at a time, so two admins' edits do not lose either.
        let _serial = self.task_lock.lock().await;
        let changed = blocking(
            move || -> Result<Result<GroupInfo, TaskRefusal>, HubError> {
                let directory = Directory::read(catalog.as_ref())?;
                let Some(current) = directory.groups.get(&name) else {
                    return Ok(Err(TaskRefusal::NotFound(format!(
                        "no group {name}; create it with `ferry group create {name}`"
                    ))));
                };
                let mut selectors: Vec<Selector> = current
                    .iter()
                    .filter(|s| !remove.contains(s))
                    .cloned()
                    .collect();
                for s in add {
                    if !selectors.contains(&s) {
                        selectors.push(s);
                    }
                }
                if let Err(e) = parse(&selectors.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                {
                    return Ok(Err(e));
                }
                catalog.set_group(&name, &stored(&selectors))?;
                Ok(Ok(directory.info(&name, &selectors)))
            },
        )
        .await??;
        // Settings for the group carry its selectors: they are signed again.
        if let Ok(info) = &changed {
            self.resign_settings(&format!("group {} changed", info.name), Some(&info.name))
                .await?;
        }
        Ok(changed)
    }

    /// Every group with its members now.
    pub async fn groups(&self) -> Result<Vec<GroupInfo>, HubError> {
        let catalog = self.catalog.clone();
        blocking(move || {
            let directory = Directory::read(catalog.as_ref())?;
            let mut names: Vec<&String> = directory.groups.keys().collect();
            names.sort();
            Ok(names
                .into_iter()
                .map(|n| directory.info(n, &directory.groups[n]))
                .collect())
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, site: &str, role: Role, revoked: bool) -> ClientRecord {
        ClientRecord {
            id: id.into(),
            role,
            site: Some(site.into()),
            cert_sha256: [0; 32],
            enrolled_at: 0,
            revoked_at: revoked.then_some(1),
        }
    }

    #[test]
    fn members_are_enrolled_agents_any_selector_takes_in() {
        let clients = vec![
            client("pc-1", "berlin", Role::Agent, false),
            client("pc-2", "paris", Role::Agent, false),
            client("pc-3", "paris", Role::Agent, true),
            client("relay", "paris", Role::Relay, false),
        ];
        let mut inventories = HashMap::new();
        inventories.insert(
            "pc-2".to_owned(),
            Inventory {
                os: "windows".into(),
                ..Inventory::default()
            },
        );
        let sel = |t: &str| t.parse::<Selector>().unwrap();
        assert_eq!(
            members(&[sel("site:paris")], &clients, &inventories),
            ["pc-2"]
        );
        assert_eq!(
            members(
                &[sel("os:windows"), sel("agent:pc-1")],
                &clients,
                &inventories
            ),
            ["pc-1", "pc-2"]
        );
        assert!(
            members(&[sel("agent:pc-3")], &clients, &inventories).is_empty(),
            "revoked"
        );
        assert!(
            members(&[sel("agent:relay")], &clients, &inventories).is_empty(),
            "not an agent"
        );
        assert!(members(&[], &clients, &inventories).is_empty());
    }
}
