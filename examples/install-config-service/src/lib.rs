//! An integrator's install step: renders the `[settings]` of the package's
//! install parameters into a service's `key=value` configuration file, puts
//! it in place atomically, and restarts the service through a command the
//! node allows.
//!
//! ```toml
//! [params]                  # the install step's parameters
//! dir = "/etc/myapp"        # absolute; the node must grant it
//! file = "myapp.conf"
//! mode = 0o640              # optional, default 0o644
//! restart = ["systemctl", "restart", "myapp"]   # optional; the node must grant the program
//! [params.settings]
//! port = 8080
//! log-level = "info"
//! ```
//!
//! - install: writes the file (unless it already holds exactly these
//!   settings: then nothing is written and nothing restarted), then runs
//!   `restart`. If the restart fails, the previous file is put back, so the
//!   service never keeps a configuration it could not be restarted with.
//! - uninstall: removes the file. It does not restart: a service usually
//!   cannot start without its configuration; removing the service is the
//!   job of the step that installed it.
//! - verify: the file exists and holds exactly what install would write.

use std::io::{ErrorKind, Write};

use ferry_plugin_sdk::installer::{
    InstallReport, InstallRequest, Installer, VerifyReport, progress, run_command, set_mode,
};
use serde::Deserialize;

/// The install step's parameters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Params {
    /// The directory the file goes in: absolute, as the node grants it.
    dir: String,
    /// The file's name in `dir`.
    file: String,
    /// Its permission bits; configuration often holds secrets.
    #[serde(default = "default_mode")]
    mode: u32,
    /// The program and arguments that make the service read the file anew;
    /// empty: none.
    #[serde(default)]
    restart: Vec<String>,
    /// How long the restart may take.
    #[serde(default = "default_restart_timeout")]
    restart_timeout_ms: u32,
    /// What the file says, one `key=value` line each.
    #[serde(default)]
    settings: toml::Table,
}

fn default_mode() -> u32 {
    0o644
}

fn default_restart_timeout() -> u32 {
    60_000
}

impl Params {
    fn of(request: &InstallRequest) -> Result<Params, String> {
        let params: Params =
            toml::from_str(&request.params).map_err(|e| format!("install parameters: {e}"))?;
        // The node maps granted directories at their own absolute paths.
        if !params.dir.starts_with('/') {
            return Err(format!(
                "install parameters: dir {:?} must be an absolute path the node grants",
                params.dir
            ));
        }
        if params.file.is_empty()
            || params.file.contains('/')
            || params.file == "."
            || params.file == ".."
        {
            return Err(format!(
                "install parameters: file {:?} must be a plain file name",
                params.file
            ));
        }
        if params.mode > 0o777 {
            return Err(format!(
                "install parameters: mode {:o} has more than permission bits",
                params.mode
            ));
        }
        Ok(params)
    }

    fn path(&self) -> String {
        format!("{}/{}", self.dir.trim_end_matches('/'), self.file)
    }

    /// Where the new file is written before it replaces the old one: in the
    /// same directory, so the rename is atomic.
    fn temporary_path(&self) -> String {
        format!(
            "{}/.{}.ferry-new",
            self.dir.trim_end_matches('/'),
            self.file
        )
    }
}

/// The file's text: a header, then `key=value` lines sorted by key.
fn render(request: &InstallRequest, settings: &toml::Table) -> Result<String, String> {
    let mut text = format!(
        "# {} {}: written by ferry; edits are lost at the next install.\n",
        request.package, request.version
    );
    for (key, value) in settings {
        if key.is_empty() || key.contains(['=', '\n', '\r']) {
            return Err(format!(
                "settings: key {key:?} cannot be written as key=value"
            ));
        }
        let value = match value {
            toml::Value::String(s) if s.contains(['\n', '\r']) => {
                return Err(format!("settings.{key}: a value must fit on one line"));
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            toml::Value::Array(_) | toml::Value::Table(_) => {
                return Err(format!(
                    "settings.{key}: only strings, numbers, booleans and dates fit a key=value file"
                ));
            }
        };
        text.push_str(&format!("{key}={value}\n"));
    }
    Ok(text)
}

/// The file's current content, or `None` if there is none.
fn read(path: &str) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// Replaces the file at once: readers see the old content or the new, never
/// a part, also if the machine stops half-way.
fn write_atomically(params: &Params, bytes: &[u8]) -> Result<(), String> {
    let path = params.path();
    let tmp = params.temporary_path();
    let written = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(|e| match e.kind() {
            // Outside the granted directories the plugin sees no file system.
            ErrorKind::NotFound => format!(
                "{tmp}: {e}; does {} exist, and does the node grant it to this plugin?",
                params.dir
            ),
            _ => format!("{tmp}: {e}"),
        })?;
        file.write_all(bytes).map_err(|e| format!("{tmp}: {e}"))?;
        file.sync_all().map_err(|e| format!("{tmp}: {e}"))?;
        // Before the rename, so the file never appears with wider bits.
        set_mode(&tmp, params.mode)?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{path}: {e}"))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Puts back what the file held before `install` changed it.
fn restore(params: &Params, previous: Option<&[u8]>) -> Result<(), String> {
    match previous {
        Some(bytes) => write_atomically(params, bytes),
        None => std::fs::remove_file(params.path()).map_err(|e| format!("{}: {e}", params.path())),
    }
}

/// Runs the restart command, if any; returns it as one line.
fn restart(params: &Params) -> Result<Option<String>, String> {
    let Some((program, args)) = params.restart.split_first() else {
        return Ok(None);
    };
    let line = params.restart.join(" ");
    let output = run_command(program, args, params.restart_timeout_ms)?;
    if output.status != 0 {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "`{line}` exited with status {}: {}",
            output.status,
            stderr.trim()
        ));
    }
    Ok(Some(line))
}

/// The install step. Public, as natively (where nothing exports it) the
/// compiler would otherwise take it for dead code.
pub struct ConfigService;

impl Installer for ConfigService {
    fn install(request: InstallRequest) -> Result<InstallReport, String> {
        let params = Params::of(&request)?;
        let text = render(&request, &params.settings)?;
        let path = params.path();
        let previous = read(&path)?;
        if previous.as_deref() == Some(text.as_bytes()) {
            return Ok(InstallReport {
                message: format!("{path} is up to date; nothing restarted"),
                files: Vec::new(),
            });
        }
        write_atomically(&params, text.as_bytes())?;
        progress(50, &format!("wrote {path}"));
        let restarted = match restart(&params) {
            Ok(restarted) => restarted,
            Err(e) => {
                return Err(match restore(&params, previous.as_deref()) {
                    Ok(()) => format!("{e}; {path} is back as it was"),
                    Err(undo) => format!("{e}; and {path} could not be put back: {undo}"),
                });
            }
        };
        progress(100, "done");
        let settings = params.settings.len();
        let message = match restarted {
            Some(line) => format!("wrote {path} ({settings} settings), then ran `{line}`"),
            None => format!("wrote {path} ({settings} settings)"),
        };
        Ok(InstallReport {
            message,
            files: vec![path],
        })
    }

    fn uninstall(request: InstallRequest) -> Result<InstallReport, String> {
        let params = Params::of(&request)?;
        let path = params.path();
        // A write the machine stopped in the middle of may have left it.
        let _ = std::fs::remove_file(params.temporary_path());
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(InstallReport {
                message: format!("removed {path}"),
                files: vec![path],
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(InstallReport {
                message: format!("{path} was already gone"),
                files: Vec::new(),
            }),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }

    fn verify(request: InstallRequest) -> Result<VerifyReport, String> {
        let params = Params::of(&request)?;
        let expected = render(&request, &params.settings)?;
        let path = params.path();
        let problems = match read(&path)? {
            None => vec![format!("{path} is missing")],
            Some(found) if found != expected.as_bytes() => vec![format!(
                "{path} differs from the settings of {} {}",
                request.package, request.version
            )],
            Some(_) => Vec::new(),
        };
        Ok(VerifyReport {
            intact: problems.is_empty(),
            problems,
        })
    }
}

ferry_plugin_sdk::export_installer!(ConfigService);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_plugin_sdk::installer::CommandOutput;
    use ferry_plugin_sdk::testing;

    fn request(dir: &std::path::Path, extra: &str) -> InstallRequest {
        InstallRequest {
            package: "myapp-config".into(),
            version: "1.2.0".into(),
            staged_dir: "/ferry/staged".into(),
            files: Vec::new(),
            params: format!(
                "dir = {:?}\nfile = \"myapp.conf\"\nmode = 0o640\n{extra}\n\
                 [settings]\nport = 8080\nlog-level = \"info\"\ncache = true\n",
                dir.display().to_string()
            ),
            previous_version: None,
        }
    }

    const RESTART: &str = r#"restart = ["systemctl", "restart", "myapp"]"#;

    fn succeed() -> Result<CommandOutput, String> {
        Ok(CommandOutput {
            status: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
        })
    }

    #[test]
    fn install_writes_the_file_then_restarts() {
        let dir = tempfile::tempdir().unwrap();
        testing::on_command(|_, _| succeed());
        testing::take_commands();
        let report = ConfigService::install(request(dir.path(), RESTART)).unwrap();
        let path = dir.path().join("myapp.conf");
        assert_eq!(report.files, vec![path.display().to_string()]);
        assert!(
            report.message.contains("systemctl restart myapp"),
            "{}",
            report.message
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# myapp-config 1.2.0: written by ferry; edits are lost at the next install.\n\
             cache=true\nlog-level=info\nport=8080\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o640);
        }
        let commands = testing::take_commands();
        assert_eq!(
            commands,
            vec![(
                "systemctl".to_string(),
                vec!["restart".to_string(), "myapp".to_string()]
            )]
        );
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn installing_the_same_settings_again_restarts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        testing::on_command(|_, _| succeed());
        ConfigService::install(request(dir.path(), RESTART)).unwrap();
        testing::take_commands();
        let report = ConfigService::install(request(dir.path(), RESTART)).unwrap();
        assert!(report.message.contains("up to date"), "{}", report.message);
        assert!(report.files.is_empty());
        assert!(testing::take_commands().is_empty());
    }

    #[test]
    fn a_failed_restart_puts_the_previous_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("myapp.conf");
        std::fs::write(&path, "port=1\n").unwrap();
        testing::on_command(|_, _| {
            Ok(CommandOutput {
                status: 5,
                stdout: Vec::new(),
                stderr: b"Unit myapp.service not found.\n".to_vec(),
            })
        });
        let err = ConfigService::install(request(dir.path(), RESTART)).unwrap_err();
        assert!(err.contains("exited with status 5"), "{err}");
        assert!(err.contains("Unit myapp.service not found."), "{err}");
        assert!(err.contains("is back as it was"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "port=1\n");
    }

    #[test]
    fn a_refused_restart_leaves_no_new_file() {
        let dir = tempfile::tempdir().unwrap();
        // No handler: refused, as the node refuses a program it did not grant.
        let err =
            ConfigService::install(request(dir.path(), r#"restart = ["reboot"]"#)).unwrap_err();
        assert!(err.contains("not granted"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn verify_finds_a_changed_or_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let report = ConfigService::verify(request(dir.path(), "")).unwrap();
        assert!(!report.intact);
        assert!(
            report.problems[0].contains("is missing"),
            "{:?}",
            report.problems
        );
        ConfigService::install(request(dir.path(), "")).unwrap();
        assert!(
            ConfigService::verify(request(dir.path(), ""))
                .unwrap()
                .intact
        );
        std::fs::write(dir.path().join("myapp.conf"), "port=9\n").unwrap();
        let report = ConfigService::verify(request(dir.path(), "")).unwrap();
        assert!(!report.intact);
        assert!(
            report.problems[0].contains("differs"),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn uninstall_removes_the_file_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        ConfigService::install(request(dir.path(), "")).unwrap();
        let report = ConfigService::uninstall(request(dir.path(), "")).unwrap();
        assert_eq!(report.files.len(), 1);
        assert!(!dir.path().join("myapp.conf").exists());
        let report = ConfigService::uninstall(request(dir.path(), "")).unwrap();
        assert!(
            report.message.contains("already gone"),
            "{}",
            report.message
        );
    }

    #[test]
    fn a_directory_it_cannot_see_is_named_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let err = ConfigService::install(request(&dir.path().join("absent"), "")).unwrap_err();
        assert!(err.contains("does the node grant it"), "{err}");
    }

    #[test]
    fn refuses_parameters_it_cannot_honour() {
        let bad = |params: &str| {
            let request = InstallRequest {
                params: params.into(),
                ..request(std::path::Path::new("/x"), "")
            };
            ConfigService::install(request).unwrap_err()
        };
        assert!(bad("dir = \"etc\"\nfile = \"a\"").contains("absolute"));
        assert!(bad("dir = \"/etc\"\nfile = \"../passwd\"").contains("plain file name"));
        assert!(bad("dir = \"/x\"\nfile = \"a\"\n[settings]\nk = \"a\\nb\"").contains("one line"));
        assert!(bad("dir = \"/x\"\nfile = \"a\"\n[settings.nested]\nk = 1").contains("key=value"));
        assert!(bad("dir = \"/x\"\nfile = \"a\"\nunknown = 1").contains("unknown"));
    }
}
