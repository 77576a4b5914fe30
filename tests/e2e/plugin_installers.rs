//! The default installers, embedded in ferry, through the real host on real
//! files: copy, archive (with hostile archives) and command.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_e2e::plugins::{registry, system_program};
use ferry_plugin::{
    Grant, InstallAction, InstallJob, InstallRequest, PluginSettings, Registry, StagedFile,
};

/// A staged package and a granted target directory in a scratch directory.
struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    staged: PathBuf,
    target: PathBuf,
}

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let staged = root.join("staged");
        let target = root.join("target");
        std::fs::create_dir_all(&staged).unwrap();
        std::fs::create_dir_all(&target).unwrap();
        Site {
            _tmp: tmp,
            root,
            staged,
            target,
        }
    }

    fn stage(&self, path: &str, contents: &[u8], mode: u32) {
        let file = self.staged.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, contents).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Everything under the scratch root outside `staged/` and `target/`.
    fn outside(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "staged" && n != "target")
            .collect()
    }

    fn registry(&self, plugin: &str, commands: &[&str]) -> Registry {
        let mut settings = PluginSettings::default();
        settings.grants.insert(
            plugin.into(),
            Grant {
                directories: vec![self.target.clone()],
                commands: commands.iter().map(|c| system_program(c)).collect(),
                ..Grant::default()
            },
        );
        registry(settings)
    }

    fn job(&self, params: &str) -> InstallJob {
        let mut files = Vec::new();
        list(&self.staged, &self.staged, &mut files);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        InstallJob {
            staged_dir: self.staged.clone(),
            request: InstallRequest {
                package: "app".into(),
                version: "1.0.0".into(),
                staged_dir: String::new(),
                files,
                params: params.into(),
                previous_version: None,
            },
            progress: None,
        }
    }
}

fn list(root: &Path, dir: &Path, out: &mut Vec<StagedFile>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::metadata(&path).unwrap();
        if meta.is_dir() {
            list(root, &path, out);
        } else {
            out.push(StagedFile {
                path: path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                mode: meta.permissions().mode() & 0o777,
                size: meta.len(),
            });
        }
    }
}

fn any() -> semver::VersionReq {
    semver::VersionReq::STAR
}

#[test]
fn copy_installs_verifies_and_uninstalls_real_files() {
    let site = Site::new();
    site.stage("bin/tool", b"#!/bin/sh\necho tool\n", 0o755);
    site.stage("etc/app.conf", b"level = 3\n", 0o644);
    let registry = site.registry("copy", &[]);
    let params = format!("target = {:?}", site.target.display().to_string());
    let job = site.job(&params);

    let report = registry
        .install("copy", &any(), InstallAction::Install, &job)
        .unwrap();
    assert!(report.plugin.contains("copy"), "{}", report.plugin);
    let tool = site.target.join("bin/tool");
    assert_eq!(std::fs::read(&tool).unwrap(), b"#!/bin/sh\necho tool\n");
    assert_eq!(
        std::fs::metadata(&tool).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read(site.target.join("etc/app.conf")).unwrap(),
        b"level = 3\n"
    );

    let verified = registry.verify("copy", &any(), &job).unwrap().value;
    assert!(verified.intact, "{:?}", verified.problems);

    // Someone edits an installed file: verify names it.
    std::fs::write(site.target.join("etc/app.conf"), "level = 9\n").unwrap();
    let verified = registry.verify("copy", &any(), &job).unwrap().value;
    assert!(!verified.intact);
    assert!(
        verified.problems.iter().any(|p| p.contains("etc/app.conf")),
        "{:?}",
        verified.problems
    );

    registry
        .install("copy", &any(), InstallAction::Uninstall, &job)
        .unwrap();
    assert!(!tool.exists());
    assert!(!site.target.join("etc/app.conf").exists());

    // A target the node did not grant does not exist for the plugin.
    let elsewhere = site.root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let job = site.job(&format!("target = {:?}", elsewhere.display().to_string()));
    assert!(
        registry
            .install("copy", &any(), InstallAction::Install, &job)
            .is_err()
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    // A version requirement no installer meets is refused by name.
    let err = registry
        .install(
            "copy",
            &semver::VersionReq::parse(">=9").unwrap(),
            InstallAction::Install,
            &job,
        )
        .err()
        .unwrap();
    assert!(err.to_string().contains("matching >=9"), "{err}");
}

/// An archive entry: name, type, contents, link target.
type Entry<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);

/// Writes a tar.gz whose entries are given raw, so names like `../x` reach
/// the archive unchanged.
fn tar_gz(path: &Path, entries: &[Entry<'_>]) {
    let file = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (name, kind, data, link) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        // Raw name bytes: tar::Builder refuses `..` through set_path.
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn archive_unpacks_tar_gz_and_zip_and_refuses_escapes() {
    let site = Site::new();
    let registry = site.registry("archive", &[]);
    tar_gz(
        &site.staged.join("good.tar.gz"),
        &[
            ("app/", tar::EntryType::Directory, b"", None),
            ("app/readme.txt", tar::EntryType::Regular, b"hello", None),
            ("app/link", tar::EntryType::Symlink, b"", Some("readme.txt")),
        ],
    );
    let mut zip = zip::ZipWriter::new(std::fs::File::create(site.staged.join("good.zip")).unwrap());
    zip.start_file("docs/guide.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"guide").unwrap();
    zip.finish().unwrap();

    let evil: &[(&str, &[Entry<'_>])] = &[
        (
            "dotdot.tar.gz",
            &[("../escaped", tar::EntryType::Regular, b"x", None)],
        ),
        (
            "absolute.tar.gz",
            &[("/tmp/escaped-abs", tar::EntryType::Regular, b"x", None)],
        ),
        (
            "symlink.tar.gz",
            &[
                ("out", tar::EntryType::Symlink, b"", Some("../")),
                ("out/escaped", tar::EntryType::Regular, b"x", None),
            ],
        ),
        ("device.tar.gz", &[("dev", tar::EntryType::Char, b"", None)]),
    ];
    for (name, entries) in evil {
        tar_gz(&site.staged.join(name), entries);
    }

    let target = site.target.display().to_string();
    // Two packages: installing one package again replaces its files.
    for good in ["good.tar.gz", "good.zip"] {
        let mut job = site.job(&format!("archive = {good:?}\ntarget = {target:?}"));
        job.request.package = good.replace('.', "-");
        registry
            .install("archive", &any(), InstallAction::Install, &job)
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    assert_eq!(
        std::fs::read(site.target.join("app/readme.txt")).unwrap(),
        b"hello"
    );
    assert_eq!(
        std::fs::read(site.target.join("app/link")).unwrap(),
        b"hello"
    );
    assert_eq!(
        std::fs::read(site.target.join("docs/guide.txt")).unwrap(),
        b"guide"
    );

    let before: Vec<_> = walk(&site.target);
    for (name, _) in evil {
        let mut job = site.job(&format!("archive = {name:?}\ntarget = {target:?}"));
        job.request.package = format!("evil-{name}");
        let err = registry
            .install("archive", &any(), InstallAction::Install, &job)
            .err()
            .unwrap_or_else(|| panic!("{name} was unpacked"));
        assert!(err.to_string().contains("archive"), "{name}: {err}");
    }
    assert_eq!(
        walk(&site.target),
        before,
        "a refused archive changed the target"
    );
    assert_eq!(site.outside(), Vec::<String>::new());
    assert!(!Path::new("/tmp/escaped-abs").exists());
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        out.push(path.display().to_string());
        if path.is_dir() && !path.is_symlink() {
            out.extend(walk(&path));
        }
    }
    out.sort();
    out
}

#[test]
fn command_runs_granted_programs_and_kills_them_at_the_timeout() {
    let site = Site::new();
    site.stage("payload", b"x", 0o644);
    let registry = site.registry("command", &["sh"]);
    let marker = site.target.join("ran");

    let job = site.job(&format!(
        "program = \"sh\"\nargs = [\"-c\", \"echo installing {{package}} {{version}}; touch {}\"]",
        marker.display()
    ));
    let report = registry
        .install("command", &any(), InstallAction::Install, &job)
        .unwrap();
    assert!(marker.exists());
    assert!(
        report.value.message.contains("installing app 1.0.0"),
        "{}",
        report.value.message
    );

    // A failing command: its status and stderr are in the error.
    let job = site.job("program = \"sh\"\nargs = [\"-c\", \"echo broken config >&2; exit 3\"]");
    let err = registry
        .install("command", &any(), InstallAction::Install, &job)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains('3') && err.contains("broken config"), "{err}");

    // Not granted.
    let job = site.job("program = \"touch\"\nargs = [\"/tmp/never\"]");
    let err = registry
        .install("command", &any(), InstallAction::Install, &job)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("allow-list"), "{err}");

    // A command that outlives its timeout is killed with what it started,
    // even a child holding its output open.
    let job =
        site.job("program = \"sh\"\nargs = [\"-c\", \"sleep 30 & sleep 30\"]\ntimeout-ms = 300");
    let started = Instant::now();
    let err = registry
        .install("command", &any(), InstallAction::Install, &job)
        .err();
    assert!(err.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
