//! Installer `copy`: copies every file of the staged package into a target
//! directory.
//!
//! Parameters (the install step's TOML):
//!
//! ```toml
//! target = "/opt/app"   # absolute; inside a directory the node grants
//! overwrite = false     # replace existing files the package does not own
//! ```
//!
//! Each file is written atomically and given the package's permission bits
//! (without setuid, setgid or sticky). Nothing is written unless every file
//! can be: a path that leaves the target, or that exists as something else,
//! fails the install first. A record at `<target>/.ferry/<package>.toml`
//! keeps each file's SHA-256, so `uninstall` removes exactly those files and
//! `verify` reports the ones missing or changed; an upgrade removes the files
//! the previous version had and this one does not.

use std::fs::File;
use std::path::Path;

use ferry_plugin_install_files::{
    EntryKind, Installation, RelPath, Target, uninstall_from, verify_in,
};
use ferry_plugin_sdk::installer::{
    InstallReport, InstallRequest, Installer, VerifyReport, progress,
};
use serde::Deserialize;

/// The install step's parameters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Params {
    /// The directory to copy into, absolute.
    pub target: String,
    /// Replace existing files the package does not own instead of refusing.
    #[serde(default)]
    pub overwrite: bool,
}

impl Params {
    /// Parses the request's parameters; the error names the key at fault.
    fn parse(request: &InstallRequest) -> Result<Params, String> {
        toml::from_str(&request.params).map_err(|e| format!("invalid install parameters: {e}"))
    }
}

/// The installer.
pub struct CopyInstaller;

impl Installer for CopyInstaller {
    fn install(request: InstallRequest) -> Result<InstallReport, String> {
        let params = Params::parse(&request)?;
        let target = Target::create(&params.target)?;
        let mut installation =
            Installation::begin(target, &request.package, &request.version, params.overwrite)?;
        let mut entries = Vec::with_capacity(request.files.len());
        for file in &request.files {
            let path = RelPath::parse(&file.path)
                .map_err(|e| format!("staged file {:?}: {e}", file.path))?;
            if path.is_empty() {
                return Err(format!("staged file {:?}: the path is empty", file.path));
            }
            entries.push((path, EntryKind::File));
        }
        installation.preflight(&entries)?;

        let total: u64 = request
            .files
            .iter()
            .map(|f| f.size)
            .fold(0, u64::saturating_add);
        let mut done = 0u64;
        let staged = Path::new(&request.staged_dir);
        for (file, (path, _)) in request.files.iter().zip(&entries) {
            progress(percent(done, total), &format!("copying {path}"));
            let copied = File::open(staged.join(path.to_string()))
                .map_err(|e| format!("staged file {path}: cannot read it: {e}"))
                .and_then(|mut source| installation.write_file(path, file.mode, &mut source));
            if let Err(e) = copied {
                return Err(installation.abandon(e));
            }
            done = done.saturating_add(file.size);
        }
        let report = installation.finish()?;
        progress(100, &report.message);
        Ok(report)
    }

    fn uninstall(request: InstallRequest) -> Result<InstallReport, String> {
        let params = Params::parse(&request)?;
        uninstall_from(&params.target, &request.package)
    }

    fn verify(request: InstallRequest) -> Result<VerifyReport, String> {
        let params = Params::parse(&request)?;
        verify_in(&params.target, &request.package)
    }
}

/// `done` out of `total` as a percentage short of 100, which is kept for
/// the end.
fn percent(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 0;
    }
    u8::try_from(u128::from(done) * 99 / u128::from(total)).unwrap_or(99)
}

ferry_plugin_sdk::export_installer!(CopyInstaller);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_plugin_sdk::installer::StagedFile;
    use ferry_plugin_sdk::testing;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A staged package with `files` (path, mode, contents) and a target
    /// inside one temporary directory.
    struct Setup {
        dir: tempfile::TempDir,
        files: Vec<StagedFile>,
    }

    impl Setup {
        fn new(files: &[(&str, u32, &str)]) -> Setup {
            let dir = tempfile::tempdir().unwrap();
            let mut staged = Vec::new();
            for (path, mode, contents) in files {
                let full = dir.path().join("staged").join(path);
                fs::create_dir_all(full.parent().unwrap()).unwrap();
                fs::write(&full, contents).unwrap();
                staged.push(StagedFile {
                    path: path.to_string(),
                    mode: *mode,
                    size: contents.len() as u64,
                });
            }
            fs::create_dir_all(dir.path().join("staged")).unwrap();
            Setup { dir, files: staged }
        }

        fn target(&self) -> std::path::PathBuf {
            self.dir.path().join("target")
        }

        fn request(&self, version: &str, extra: &str) -> InstallRequest {
            InstallRequest {
                package: "app".into(),
                version: version.into(),
                staged_dir: self.dir.path().join("staged").to_str().unwrap().into(),
                files: self.files.clone(),
                params: format!("target = {:?}\n{extra}", self.target().to_str().unwrap()),
                previous_version: None,
            }
        }

        fn read(&self, path: &str) -> Option<String> {
            fs::read_to_string(self.target().join(path)).ok()
        }
    }

    #[test]
    fn copies_every_file_with_its_mode_and_reports_progress() {
        let setup = Setup::new(&[
            ("bin/app", 0o755, "#!/bin/sh\n"),
            ("etc/app.conf", 0o640, "x=1\n"),
        ]);
        testing::take_progress();
        let report = CopyInstaller::install(setup.request("1.0", "")).unwrap();
        assert_eq!(report.files, ["bin/app", "etc/app.conf"]);
        assert!(report.message.contains("app 1.0"), "{}", report.message);
        assert_eq!(setup.read("bin/app").as_deref(), Some("#!/bin/sh\n"));
        let mode = |p: &str| {
            fs::metadata(setup.target().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("bin/app"), 0o755);
        assert_eq!(mode("etc/app.conf"), 0o640);
        let progress = testing::take_progress();
        assert_eq!(progress.first().map(|p| p.0), Some(0));
        assert_eq!(progress.last().map(|p| p.0), Some(100));
        assert!(
            progress.windows(2).all(|w| w[0].0 <= w[1].0),
            "{progress:?}"
        );

        let report = CopyInstaller::verify(setup.request("1.0", "")).unwrap();
        assert!(report.intact, "{:?}", report.problems);
    }

    #[test]
    fn verify_reports_missing_and_changed_files() {
        let setup = Setup::new(&[("a", 0o644, "a"), ("b", 0o644, "b"), ("c", 0o644, "c")]);
        CopyInstaller::install(setup.request("1.0", "")).unwrap();
        fs::write(setup.target().join("a"), "A").unwrap();
        fs::remove_file(setup.target().join("b")).unwrap();
        let report = CopyInstaller::verify(setup.request("1.0", "")).unwrap();
        assert!(!report.intact);
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(
            report.problems[0].starts_with("a: changed"),
            "{:?}",
            report.problems
        );
        assert!(
            report.problems[1].starts_with("b: missing"),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn uninstall_removes_the_files_and_the_record_only() {
        let setup = Setup::new(&[("bin/app", 0o755, "x"), ("share/doc", 0o644, "y")]);
        fs::create_dir_all(setup.target().join("bin")).unwrap();
        fs::write(setup.target().join("bin/other"), "someone else's").unwrap();
        CopyInstaller::install(setup.request("1.0", "")).unwrap();
        let report = CopyInstaller::uninstall(setup.request("1.0", "")).unwrap();
        assert_eq!(report.files, ["bin/app", "share/doc"]);
        assert_eq!(setup.read("bin/other").as_deref(), Some("someone else's"));
        assert!(!setup.target().join("share").exists());
        assert!(!setup.target().join(".ferry").exists());
        let report = CopyInstaller::verify(setup.request("1.0", "")).unwrap();
        assert!(!report.intact);
    }

    #[test]
    fn upgrade_replaces_and_removes_stale_files() {
        let setup = Setup::new(&[("bin/app", 0o755, "v1"), ("lib/old", 0o644, "old")]);
        CopyInstaller::install(setup.request("1.0", "")).unwrap();
        let setup2 = Setup {
            dir: setup.dir,
            files: Vec::new(),
        };
        fs::write(setup2.dir.path().join("staged/bin/app"), "v2").unwrap();
        let mut request = setup2.request("2.0", "");
        request.files = vec![StagedFile {
            path: "bin/app".into(),
            mode: 0o755,
            size: 2,
        }];
        let report = CopyInstaller::install(request.clone()).unwrap();
        assert_eq!(report.files, ["bin/app", "lib/old"]);
        assert_eq!(setup2.read("bin/app").as_deref(), Some("v2"));
        assert!(!setup2.target().join("lib").exists());
        assert!(CopyInstaller::verify(request).unwrap().intact);
    }

    #[test]
    fn existing_files_are_refused_unless_overwrite() {
        let setup = Setup::new(&[("new", 0o644, "n"), ("conf", 0o644, "package")]);
        fs::create_dir_all(setup.target()).unwrap();
        fs::write(setup.target().join("conf"), "operator").unwrap();
        let err = CopyInstaller::install(setup.request("1.0", "")).unwrap_err();
        assert!(
            err.contains("conf") && err.contains("overwrite = true"),
            "{err}"
        );
        assert_eq!(
            setup.read("new"),
            None,
            "nothing is written when a file is refused"
        );
        assert_eq!(setup.read("conf").as_deref(), Some("operator"));

        CopyInstaller::install(setup.request("1.0", "overwrite = true")).unwrap();
        assert_eq!(setup.read("conf").as_deref(), Some("package"));
    }

    #[test]
    fn paths_leaving_the_target_are_refused() {
        let setup = Setup::new(&[("ok", 0o644, "x")]);
        for (bad, why) in [
            ("../escape", ".."),
            ("/etc/passwd", "absolute"),
            ("a/../../b", ".."),
            (".ferry/app.toml", ".ferry"),
            ("./", "empty"),
        ] {
            let mut request = setup.request("1.0", "");
            request.files.push(StagedFile {
                path: bad.into(),
                mode: 0o644,
                size: 1,
            });
            let err = CopyInstaller::install(request).unwrap_err();
            assert!(
                err.contains(&format!("{bad:?}")) && err.contains(why),
                "{bad}: {err}"
            );
        }
        assert_eq!(setup.read("ok"), None);
        assert!(!setup.dir.path().join("escape").exists());
    }

    #[test]
    fn something_else_in_the_way_is_refused() {
        let setup = Setup::new(&[("data/file", 0o644, "x")]);
        fs::create_dir_all(setup.target()).unwrap();
        std::os::unix::fs::symlink(setup.dir.path(), setup.target().join("data")).unwrap();
        let err = CopyInstaller::install(setup.request("1.0", "overwrite = true")).unwrap_err();
        assert!(err.contains("data is a symbolic link"), "{err}");
        assert!(!setup.dir.path().join("file").exists());
    }

    #[test]
    fn a_missing_staged_file_fails_and_records_what_was_copied() {
        let mut setup = Setup::new(&[("a", 0o644, "a")]);
        setup.files.push(StagedFile {
            path: "not-staged".into(),
            mode: 0o644,
            size: 1,
        });
        let err = CopyInstaller::install(setup.request("1.0", "")).unwrap_err();
        assert!(err.contains("staged file not-staged"), "{err}");
        assert_eq!(setup.read("a").as_deref(), Some("a"));
        let report = CopyInstaller::uninstall(setup.request("1.0", "")).unwrap();
        assert_eq!(report.files, ["a"]);
    }

    #[test]
    fn bad_parameters_are_errors_naming_the_key() {
        let setup = Setup::new(&[("a", 0o644, "a")]);
        let mut request = setup.request("1.0", "");
        for (params, key) in [
            ("", "target"),
            ("target = \"relative\"", "target"),
            ("target = \"/x\"\noverwrite = \"yes\"", "overwrite"),
            ("target = \"/x\"\ntarget-dir = \"/y\"", "target-dir"),
        ] {
            request.params = params.into();
            let err = CopyInstaller::install(request.clone()).unwrap_err();
            assert!(err.contains(key), "{params}: {err}");
        }
    }

    #[test]
    fn uninstall_and_verify_without_target() {
        let setup = Setup::new(&[("a", 0o644, "a")]);
        let report = CopyInstaller::uninstall(setup.request("1.0", "")).unwrap();
        assert!(report.files.is_empty() && report.message.contains("does not exist"));
        let report = CopyInstaller::verify(setup.request("1.0", "")).unwrap();
        assert!(!report.intact);
        assert!(
            !setup.target().exists(),
            "uninstall and verify create nothing"
        );
    }
}
