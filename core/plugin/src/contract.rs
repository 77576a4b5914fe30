//! The contract version this node speaks, and the check that a plugin was
//! built against a compatible one.

use std::sync::LazyLock;

use semver::{Version, VersionReq};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::PluginError;
use crate::kind::Kind;

/// The version of `ferry:plugin` this node provides (see `sdk/wit`).
pub static VERSION: LazyLock<Version> = LazyLock::new(|| Version::new(0, 1, 0));

const PACKAGE: &str = "ferry:plugin/";

/// What an operator should do about a plugin needing `wanted`.
pub(crate) fn hint(wanted: &VersionReq) -> String {
    let newer = wanted
        .comparators
        .iter()
        .any(|c| Version::new(c.major, c.minor.unwrap_or(0), c.patch.unwrap_or(0)) > *VERSION);
    if newer {
        "upgrade Ferry on this node, or rebuild the plugin against this Ferry's contract \
         (the SDK `ferry plugin new` vendors)"
            .to_string()
    } else {
        format!(
            "rebuild the plugin against ferry:plugin@{major}.{minor} (the SDK `ferry plugin new` \
             vendors) and set contract = \"{major}.{minor}\" in its plugin.toml",
            major = VERSION.major,
            minor = VERSION.minor
        )
    }
}

/// The contract interfaces a component imports and exports, with the
/// version each was built against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interfaces {
    /// Imported interface names, e.g. `ferry:plugin/host@0.1.0`, `wasi:io/streams@0.2.6`.
    pub imports: Vec<String>,
    /// Exported interface names.
    pub exports: Vec<String>,
}

/// Lists a component's imports and exports.
pub fn interfaces(engine: &Engine, component: &Component) -> Interfaces {
    let ty = component.component_type();
    Interfaces {
        imports: ty.imports(engine).map(|(n, _)| n.to_string()).collect(),
        exports: ty.exports(engine).map(|(n, _)| n.to_string()).collect(),
    }
}

/// Checks that the component exports the interface of `kind` and that every
/// `ferry:plugin` interface it names was built against a version this node
/// provides: same major (same minor before 1.0) and no newer.
pub fn check(plugin: &str, kind: Kind, interfaces: &Interfaces) -> Result<(), PluginError> {
    let mut export_found = None;
    for name in interfaces.imports.iter().chain(&interfaces.exports) {
        let Some(rest) = name.strip_prefix(PACKAGE) else {
            continue;
        };
        let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let found = Version::parse(version).map_err(|_| PluginError::IncompatibleContract {
            plugin: plugin.to_string(),
            found: format!("{name} (no version)"),
            supported: VERSION.to_string(),
            hint: hint(&VersionReq::STAR),
        })?;
        let compatible = found.major == VERSION.major
            && (VERSION.major > 0 || found.minor == VERSION.minor)
            && found <= *VERSION
            && found.pre.is_empty();
        if !compatible {
            let wanted = VersionReq::parse(&format!("^{found}")).unwrap_or(VersionReq::STAR);
            return Err(PluginError::IncompatibleContract {
                plugin: plugin.to_string(),
                found: found.to_string(),
                supported: VERSION.to_string(),
                hint: hint(&wanted),
            });
        }
        if interfaces.exports.contains(name) && format!("{PACKAGE}{iface}") == kind.export() {
            export_found = Some(name);
        }
    }
    if export_found.is_none() {
        let exported: Vec<_> = interfaces.exports.iter().map(String::as_str).collect();
        return Err(PluginError::Invalid {
            plugin: plugin.to_string(),
            reason: format!(
                "plugin.toml says kind = \"{kind}\", so the component must export {}@{}, \
                 but it exports [{}]",
                kind.export(),
                *VERSION,
                exported.join(", ")
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifaces(version: &str, export: &str) -> Interfaces {
        Interfaces {
            imports: vec![
                format!("ferry:plugin/host@{version}"),
                "wasi:io/streams@0.2.6".into(),
            ],
            exports: vec![format!("ferry:plugin/{export}@{version}")],
        }
    }

    #[test]
    fn accepts_the_same_contract() {
        check("p", Kind::Election, &ifaces("0.1.0", "election")).unwrap();
    }

    #[test]
    fn refuses_newer_or_other_minor_versions_with_advice() {
        for v in ["0.2.0", "1.0.0", "0.1.1", "0.1.0-rc1"] {
            let err = check("p", Kind::Election, &ifaces(v, "election")).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, PluginError::IncompatibleContract { .. }),
                "{v}"
            );
            assert!(text.contains("0.1.0"), "{text}");
        }
        let text = check("p", Kind::Election, &ifaces("0.2.0", "election"))
            .unwrap_err()
            .to_string();
        assert!(text.contains("upgrade Ferry"), "{text}");
        let text = check("p", Kind::Election, &ifaces("0.1.1", "election"))
            .unwrap_err()
            .to_string();
        assert!(text.contains("upgrade Ferry"), "{text}");
        let text = check("p", Kind::Election, &ifaces("0.0.9", "election"))
            .unwrap_err()
            .to_string();
        assert!(text.contains("rebuild the plugin"), "{text}");
    }

    #[test]
    fn refuses_a_component_of_another_kind() {
        let err = check("p", Kind::Election, &ifaces("0.1.0", "schedule")).unwrap_err();
        assert!(err.to_string().contains("ferry:plugin/election"), "{err}");
    }
}
