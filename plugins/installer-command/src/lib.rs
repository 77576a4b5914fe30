//! Installer `command`: installing a package means running a program, such
//! as `systemctl restart app` or a package manager on a staged file.
//!
//! Parameters (the install step's TOML):
//!
//! ```toml
//! program = "dpkg"
//! args = ["--install", "/var/cache/app/app_{version}.deb"]
//! timeout-ms = 60000        # the node kills the program after this long
//!
//! [uninstall]               # optional; without it, uninstall does nothing
//! program = "dpkg"
//! args = ["--remove", "{package}"]
//!
//! [verify]                  # optional; exit status 0 means intact
//! program = "dpkg"
//! args = ["--verify", "{package}"]
//! ```
//!
//! In the arguments, `{package}`, `{version}` and `{previous-version}` (empty
//! without one) stand for the request's values. There is no placeholder for
//! the staged directory: the plugin sees it at a path of its own sandbox,
//! which means nothing to a program the node runs.
//! Programs run without a shell, and only those the node's allow-list grants
//! this plugin. A non-zero exit fails the step with the exit status and the
//! end of what the program wrote to standard error.

use ferry_plugin_sdk::installer::{
    CommandOutput, InstallReport, InstallRequest, Installer, VerifyReport, progress, run_command,
};
use serde::Deserialize;

/// The install step's parameters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Params {
    /// The program to run to install.
    pub program: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Milliseconds before the node kills it.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// What to run to uninstall; absent: nothing.
    #[serde(default)]
    pub uninstall: Option<Step>,
    /// What to run to verify; absent: nothing, and the package counts as
    /// intact.
    #[serde(default)]
    pub verify: Option<Step>,
}

/// The `[uninstall]` or `[verify]` table.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Step {
    /// The program to run.
    pub program: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Milliseconds before the node kills it; absent: the install's.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
}

fn default_timeout_ms() -> u32 {
    60_000
}

/// Lines of a program's output quoted in messages.
const TAIL_LINES: usize = 5;

/// Characters of a program's output quoted in messages, at most.
const TAIL_CHARS: usize = 400;

/// A program to run, its arguments filled in.
struct Command {
    /// The program.
    program: String,
    /// Its arguments.
    args: Vec<String>,
    /// Milliseconds before the node kills it.
    timeout_ms: u32,
}

impl Params {
    /// Parses and checks the request's parameters; the error names the key
    /// at fault.
    fn parse(request: &InstallRequest) -> Result<Params, String> {
        let params: Params = toml::from_str(&request.params)
            .map_err(|e| format!("invalid install parameters: {e}"))?;
        let steps = [
            ("", Some(&params.program), Some(params.timeout_ms)),
            (
                "uninstall.",
                params.uninstall.as_ref().map(|s| &s.program),
                params.uninstall.as_ref().and_then(|s| s.timeout_ms),
            ),
            (
                "verify.",
                params.verify.as_ref().map(|s| &s.program),
                params.verify.as_ref().and_then(|s| s.timeout_ms),
            ),
        ];
        for (prefix, program, timeout_ms) in steps {
            if program.is_some_and(|p| p.trim().is_empty()) {
                return Err(format!(
                    "invalid install parameters: {prefix}program must name a program"
                ));
            }
            if timeout_ms == Some(0) {
                return Err(format!(
                    "invalid install parameters: {prefix}timeout-ms must be at least 1"
                ));
            }
        }
        Ok(params)
    }

    /// The install command.
    fn install(&self, request: &InstallRequest) -> Command {
        Command {
            program: self.program.clone(),
            args: fill(&self.args, request),
            timeout_ms: self.timeout_ms,
        }
    }

    /// The command of `step`, if configured.
    fn step(&self, step: Option<&Step>, request: &InstallRequest) -> Option<Command> {
        step.map(|step| Command {
            program: step.program.clone(),
            args: fill(&step.args, request),
            timeout_ms: step.timeout_ms.unwrap_or(self.timeout_ms),
        })
    }
}

/// `args` with the placeholders replaced by the request's values.
fn fill(args: &[String], request: &InstallRequest) -> Vec<String> {
    let previous = request.previous_version.as_deref().unwrap_or("");
    args.iter()
        .map(|arg| {
            arg.replace("{package}", &request.package)
                .replace("{version}", &request.version)
                .replace("{previous-version}", previous)
        })
        .collect()
}

impl Command {
    /// The command line, for messages.
    fn line(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs it; the output, whatever the exit status. An error if the node
    /// did not run it.
    fn run(&self) -> Result<CommandOutput, String> {
        run_command(&self.program, &self.args, self.timeout_ms)
            .map_err(|e| format!("`{}` did not run: {e}", self.line()))
    }

    /// Why `output` is a failure, if it is: the exit status and the end of
    /// standard error.
    fn failure(&self, output: &CommandOutput) -> Option<String> {
        let how = match output.status {
            0 => return None,
            -1 => format!(
                "was killed (a timeout after {} ms, or a signal)",
                self.timeout_ms
            ),
            status => format!("exited with status {status}"),
        };
        let stderr = tail(&output.stderr);
        Some(if stderr.is_empty() {
            format!("`{}` {how}", self.line())
        } else {
            format!("`{}` {how}; stderr: {stderr}", self.line())
        })
    }

    /// Runs it as a step that must succeed; the report quotes the end of
    /// standard output.
    fn run_step(&self) -> Result<InstallReport, String> {
        progress(0, &format!("running `{}`", self.line()));
        let output = self.run()?;
        if let Some(failure) = self.failure(&output) {
            return Err(failure);
        }
        let stdout = tail(&output.stdout);
        let message = if stdout.is_empty() {
            format!("ran `{}`", self.line())
        } else {
            format!("ran `{}`; stdout: {stdout}", self.line())
        };
        progress(100, &message);
        Ok(InstallReport {
            message,
            files: Vec::new(),
        })
    }
}

/// The last lines of `output`, as text on one line, shortened to
/// [`TAIL_CHARS`].
fn tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ");
    let count = joined.chars().count();
    if count <= TAIL_CHARS {
        joined
    } else {
        let kept: String = joined.chars().skip(count - TAIL_CHARS).collect();
        format!("…{kept}")
    }
}

/// The installer.
pub struct RunCommand;

impl Installer for RunCommand {
    fn install(request: InstallRequest) -> Result<InstallReport, String> {
        let params = Params::parse(&request)?;
        params.install(&request).run_step()
    }

    fn uninstall(request: InstallRequest) -> Result<InstallReport, String> {
        let params = Params::parse(&request)?;
        match params.step(params.uninstall.as_ref(), &request) {
            Some(command) => command.run_step(),
            None => Ok(InstallReport {
                message: "no [uninstall] command configured; nothing to do".to_string(),
                files: Vec::new(),
            }),
        }
    }

    fn verify(request: InstallRequest) -> Result<VerifyReport, String> {
        let params = Params::parse(&request)?;
        let Some(command) = params.step(params.verify.as_ref(), &request) else {
            // Nothing to check with: the installer cannot tell anything is
            // wrong, and the contract has no "unknown".
            return Ok(VerifyReport {
                intact: true,
                problems: Vec::new(),
            });
        };
        let output = command.run()?;
        let problems: Vec<String> = command.failure(&output).into_iter().collect();
        Ok(VerifyReport {
            intact: problems.is_empty(),
            problems,
        })
    }
}

ferry_plugin_sdk::export_installer!(RunCommand);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_plugin_sdk::testing;

    fn request(params: &str) -> InstallRequest {
        InstallRequest {
            package: "app".into(),
            version: "2.0".into(),
            staged_dir: "/staged/app-2.0".into(),
            files: Vec::new(),
            params: params.into(),
            previous_version: Some("1.0".into()),
        }
    }

    fn output(status: i32, stdout: &str, stderr: &str) -> CommandOutput {
        CommandOutput {
            status,
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    /// Answers every command with `answer` and forgets earlier commands.
    fn answer(answer: CommandOutput) {
        testing::take_commands();
        testing::on_command(move |_, _| Ok(answer.clone()));
    }

    const PARAMS: &str = r#"
        program = "dpkg"
        args = ["--install", "/cache/{package}_{version}.deb", "--from={previous-version}", "{staged-dir}"]
        [uninstall]
        program = "dpkg"
        args = ["--remove", "{package}"]
        timeout-ms = 5
        [verify]
        program = "dpkg"
        args = ["--verify", "{package}"]
    "#;

    #[test]
    fn install_runs_the_program_with_placeholders_filled() {
        answer(output(
            0,
            "Selecting app\nUnpacking app (2.0)\nSetting up app\n",
            "",
        ));
        let report = RunCommand::install(request(PARAMS)).unwrap();
        let commands = testing::take_commands();
        assert_eq!(
            commands,
            [(
                "dpkg".to_string(),
                vec![
                    "--install".to_string(),
                    "/cache/app_2.0.deb".to_string(),
                    "--from=1.0".to_string(),
                    "{staged-dir}".to_string()
                ]
            )]
        );
        assert!(
            report.message.contains("Setting up app"),
            "{}",
            report.message
        );
        assert!(
            report.message.contains("dpkg --install"),
            "{}",
            report.message
        );
        assert!(report.files.is_empty());
        let progress = testing::take_progress();
        assert_eq!(progress.last().map(|p| p.0), Some(100));
    }

    #[test]
    fn non_zero_exit_fails_with_status_and_stderr_tail() {
        let stderr: String = (1..=20).map(|n| format!("line {n}\n")).collect();
        answer(output(2, "", &stderr));
        let err = RunCommand::install(request(PARAMS)).unwrap_err();
        assert!(err.contains("exited with status 2"), "{err}");
        assert!(err.contains("line 20") && err.contains("line 16"), "{err}");
        assert!(!err.contains("line 15"), "only the tail: {err}");
    }

    #[test]
    fn killed_program_says_so() {
        answer(output(-1, "", ""));
        let err = RunCommand::install(request(PARAMS)).unwrap_err();
        assert!(err.contains("killed") && err.contains("60000 ms"), "{err}");
    }

    #[test]
    fn refused_program_is_an_error() {
        testing::on_command(|program, _| Err(format!("{program} is not on the allow-list")));
        let err = RunCommand::install(request(PARAMS)).unwrap_err();
        assert!(
            err.contains("did not run") && err.contains("allow-list"),
            "{err}"
        );
    }

    #[test]
    fn uninstall_runs_its_own_command_with_its_timeout() {
        answer(output(0, "", ""));
        let report = RunCommand::uninstall(request(PARAMS)).unwrap();
        assert_eq!(
            testing::take_commands(),
            [(
                "dpkg".to_string(),
                vec!["--remove".to_string(), "app".to_string()]
            )]
        );
        assert!(
            report.message.contains("dpkg --remove app"),
            "{}",
            report.message
        );

        answer(output(-1, "", ""));
        let err = RunCommand::uninstall(request(PARAMS)).unwrap_err();
        assert!(err.contains("5 ms"), "{err}");
    }

    #[test]
    fn without_uninstall_or_verify_nothing_runs() {
        answer(output(1, "", ""));
        let params = "program = \"systemctl\"\nargs = [\"restart\", \"app\"]";
        let report = RunCommand::uninstall(request(params)).unwrap();
        assert!(report.message.contains("nothing to do"));
        let report = RunCommand::verify(request(params)).unwrap();
        assert!(report.intact && report.problems.is_empty());
        assert!(testing::take_commands().is_empty());
    }

    #[test]
    fn verify_reports_a_failing_check_as_not_intact() {
        answer(output(0, "ok", ""));
        let report = RunCommand::verify(request(PARAMS)).unwrap();
        assert!(report.intact);
        assert_eq!(testing::take_commands()[0].1, ["--verify", "app"]);

        answer(output(1, "", "??5?????? /usr/bin/app\n"));
        let report = RunCommand::verify(request(PARAMS)).unwrap();
        assert!(!report.intact);
        assert!(
            report.problems[0].contains("status 1") && report.problems[0].contains("/usr/bin/app"),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn tail_keeps_the_end_of_long_output() {
        assert_eq!(tail(b""), "");
        assert_eq!(tail(b"a\n\nb  \n"), "a | b");
        let long = "x".repeat(1000) + "END";
        let tailed = tail(long.as_bytes());
        assert!(tailed.starts_with('…') && tailed.ends_with("END"));
        assert_eq!(tailed.chars().count(), TAIL_CHARS + 1);
        assert_eq!(tail(&[0xff, b'o', b'k']), "\u{fffd}ok");
    }

    #[test]
    fn bad_parameters_are_errors_naming_the_key() {
        for (params, key) in [
            ("args = []", "program"),
            ("program = \"\"", "program"),
            ("program = \"x\"\ntimeout-ms = 0", "timeout-ms"),
            ("program = \"x\"\ntimeout-ms = -5", "timeout-ms"),
            ("program = \"x\"\nargs = \"a b\"", "args"),
            (
                "program = \"x\"\n[verify]\nprogram = \" \"",
                "verify.program",
            ),
            (
                "program = \"x\"\n[uninstall]\nprogram = \"y\"\ntimeout-ms = 0",
                "uninstall.timeout-ms",
            ),
            ("program = \"x\"\nshell = true", "shell"),
        ] {
            let err = RunCommand::install(request(params)).unwrap_err();
            assert!(err.contains(key), "{params}: {err}");
        }
    }
}
