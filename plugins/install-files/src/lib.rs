//! What Ferry's file installers (`copy`, `archive`) share: relative paths
//! that cannot leave the target directory, files written atomically, and the
//! record of what a package installed, which `uninstall` and `verify` work
//! from.
//!
//! An install goes in two passes. [`Installation::preflight`] checks every
//! entry against the target before anything is written, so an entry that is
//! refused (a path that would replace a directory, or a file the package does
//! not own) fails the install with nothing changed. The writes follow; each
//! file appears whole or not at all (written to a temporary file in the same
//! directory, then renamed over). If a write fails all the same (a full disk,
//! an archive that holds more than it declared), the record keeps every file
//! already written alongside the previous version's, so `uninstall` still
//! removes them and a retry may replace them.
//!
//! The record lives at `<target>/.ferry/<package>.toml`; packages may not
//! write under `.ferry` themselves. Paths read back from a record are checked
//! like any other, so a tampered record cannot make `uninstall` delete outside
//! the target.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ferry_plugin_sdk::installer::{InstallReport, VerifyReport, set_mode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The directory under the target holding the records.
const RECORD_DIR: &str = ".ferry";

/// Permission bits kept from a package: special bits (setuid, setgid,
/// sticky) are dropped, so a package cannot plant a setuid program.
const MODE_MASK: u32 = 0o777;

/// A path inside the target: `/`-separated, relative, without `..`, and not
/// under `.ferry`. `.` and empty components are dropped.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Vec<String>);

impl RelPath {
    /// Checks `path`; the error says what is wrong with it. The empty path
    /// (`.`, `./`) is the target itself.
    pub fn parse(path: &str) -> Result<RelPath, String> {
        if path.starts_with('/') {
            return Err(format!("{path:?} is an absolute path"));
        }
        if path.contains('\\') || path.contains('\0') {
            return Err(format!(
                "{path:?} contains a backslash or NUL, which the target's file system may read differently"
            ));
        }
        let mut components = Vec::new();
        for component in path.split('/') {
            match component {
                "" | "." => {}
                ".." => return Err(format!("{path:?} has a `..` component")),
                _ => components.push(component.to_string()),
            }
        }
        if components.first().is_some_and(|c| c == RECORD_DIR) {
            return Err(format!(
                "{path:?} is under {RECORD_DIR}/, where installers keep their records"
            ));
        }
        Ok(RelPath(components))
    }

    /// The target itself.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The path without its first `n` components; none if nothing is left.
    pub fn strip(&self, n: usize) -> Option<RelPath> {
        (self.0.len() > n).then(|| RelPath(self.0[n..].to_vec()))
    }

    /// Every proper prefix, shortest first: the directories above the path.
    fn parents(&self) -> impl Iterator<Item = RelPath> + '_ {
        (1..self.0.len()).map(|n| RelPath(self.0[..n].to_vec()))
    }

    /// The path under `root`.
    fn under(&self, root: &Path) -> PathBuf {
        self.0
            .iter()
            .fold(root.to_path_buf(), |path, c| path.join(c))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// Checks a symbolic link's target: relative and without `..`, so it points
/// inside the target directory from wherever it sits, whatever other links
/// it passes through (each of which, by the same rule, only goes down).
pub fn check_link(link: &str) -> Result<(), String> {
    if link.is_empty() {
        return Err("the link target is empty".to_string());
    }
    if link.starts_with('/') {
        return Err(format!(
            "the link points to {link:?}, an absolute path outside the target"
        ));
    }
    if link.contains('\\') || link.contains('\0') {
        return Err(format!(
            "the link target {link:?} contains a backslash or NUL"
        ));
    }
    if link.split('/').any(|c| c == "..") {
        return Err(format!(
            "the link points to {link:?}, which has a `..` component and may lead outside the target"
        ));
    }
    Ok(())
}

/// What an entry of a package is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link with this target, checked by [`check_link`].
    Symlink(String),
}

impl EntryKind {
    /// Names the kind in messages.
    fn noun(&self) -> &'static str {
        match self {
            EntryKind::File => "a file",
            EntryKind::Dir => "a directory",
            EntryKind::Symlink(_) => "a symbolic link",
        }
    }
}

/// The directory a package is installed into.
#[derive(Debug)]
pub struct Target {
    /// The directory.
    root: PathBuf,
}

impl Target {
    /// The `target` parameter for an install: an absolute path without
    /// `..`, created if missing. The node decides which directories the
    /// plugin may reach, so anything else fails here or at the first write.
    pub fn create(target: &str) -> Result<Target, String> {
        let root = Self::check(target)?;
        fs::create_dir_all(&root).map_err(|e| {
            format!("target = {target:?}: cannot create it ({e}); is it inside a directory the node grants this plugin?")
        })?;
        Self::find(target)?
            .ok_or_else(|| format!("target = {target:?} vanished after it was created"))
    }

    /// The `target` parameter for uninstall and verify: none if the
    /// directory does not exist, as then nothing is installed in it.
    pub fn find(target: &str) -> Result<Option<Target>, String> {
        let root = Self::check(target)?;
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(Some(Target { root })),
            Ok(_) => Err(format!("target = {target:?} is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("target = {target:?}: {e}")),
        }
    }

    /// Checks the `target` parameter is absolute and without `..`.
    fn check(target: &str) -> Result<PathBuf, String> {
        if !target.starts_with('/') {
            return Err(format!("target = {target:?} must be an absolute path"));
        }
        if target.split('/').any(|c| c == "..") {
            return Err(format!("target = {target:?} must not contain `..`"));
        }
        Ok(PathBuf::from(target))
    }

    /// What is at `path`, without following a final symbolic link; none if
    /// nothing is. Every directory above it must be a real directory, not a
    /// link: following one could lead out of the target.
    fn existing(&self, path: &RelPath) -> Result<Option<fs::Metadata>, String> {
        for parent in path.parents() {
            match self.lstat(&parent)? {
                None => return Ok(None),
                Some(m) if m.is_dir() => {}
                Some(m) => {
                    return Err(format!(
                        "{path}: {parent} is {}, not a directory",
                        describe(&m)
                    ));
                }
            }
        }
        self.lstat(path)
    }

    /// `symlink_metadata` of `path`, none if it does not exist.
    fn lstat(&self, path: &RelPath) -> Result<Option<fs::Metadata>, String> {
        match fs::symlink_metadata(path.under(&self.root)) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }

    /// The path of `package`'s record, after checking the name is one file
    /// name.
    fn record_path(&self, package: &str) -> Result<PathBuf, String> {
        if package.is_empty()
            || package == "."
            || package == ".."
            || package.contains(['/', '\\', '\0'])
        {
            return Err(format!(
                "package name {package:?} cannot name a record file"
            ));
        }
        Ok(self.root.join(RECORD_DIR).join(format!("{package}.toml")))
    }

    /// `package`'s record, if it was installed here. A record with a path
    /// that could leave the target is refused.
    fn load_record(&self, package: &str) -> Result<Option<Record>, String> {
        let path = self.record_path(package)?;
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("record {}: {e}", path.display())),
        };
        let record: Record =
            toml::from_str(&text).map_err(|e| format!("record {}: {e}", path.display()))?;
        for file in &record.files {
            RelPath::parse(&file.path)
                .and_then(|_| file.link.as_deref().map_or(Ok(()), check_link))
                .map_err(|e| format!("record {}: {e}", path.display()))?;
        }
        for dir in &record.dirs {
            RelPath::parse(dir).map_err(|e| format!("record {}: {e}", path.display()))?;
        }
        Ok(Some(record))
    }

    /// Writes `record` atomically, creating `.ferry` if needed.
    fn save_record(&self, record: &Record) -> Result<(), String> {
        let path = self.record_path(&record.package)?;
        let dir = self.root.join(RECORD_DIR);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                return Err(format!(
                    "{} is {}, not a directory",
                    dir.display(),
                    describe(&m)
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
        let text =
            toml::to_string(record).map_err(|e| format!("record {}: {e}", path.display()))?;
        write_atomically(&path, 0o644, &mut text.as_bytes())
            .map(|_| ())
            .map_err(|e| format!("record {}: {e}", path.display()))
    }
}

/// Names what metadata describes, for messages.
fn describe(metadata: &fs::Metadata) -> &'static str {
    if metadata.is_dir() {
        "a directory"
    } else if metadata.is_symlink() {
        "a symbolic link"
    } else if metadata.is_file() {
        "a file"
    } else {
        "a special file"
    }
}

/// What a package installed, kept at `<target>/.ferry/<package>.toml`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Record {
    /// The package.
    package: String,
    /// Its version.
    version: String,
    /// Directories the package created, removed when empty on uninstall.
    #[serde(default)]
    dirs: Vec<String>,
    /// Files and links.
    #[serde(default, rename = "file")]
    files: Vec<RecordedFile>,
}

/// One installed file or link.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RecordedFile {
    /// Path under the target.
    path: String,
    /// SHA-256 of a file's contents, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    /// A link's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<String>,
}

/// An install under way.
pub struct Installation {
    /// Where to.
    target: Target,
    /// The package.
    package: String,
    /// The version being installed.
    version: String,
    /// Replace existing files the package does not own.
    overwrite: bool,
    /// The record of the version installed before, if any.
    previous: Option<Record>,
    /// What this install wrote, by path.
    written: BTreeMap<RelPath, RecordedFile>,
    /// Directories this install created.
    created: BTreeSet<RelPath>,
}

impl Installation {
    /// Starts installing `version` of `package` into `target`. With
    /// `overwrite`, existing files the package does not own are replaced
    /// instead of refused.
    pub fn begin(
        target: Target,
        package: &str,
        version: &str,
        overwrite: bool,
    ) -> Result<Installation, String> {
        let previous = target.load_record(package)?;
        Ok(Installation {
            target,
            package: package.to_string(),
            version: version.to_string(),
            overwrite,
            previous,
            written: BTreeMap::new(),
            created: BTreeSet::new(),
        })
    }

    /// Whether `path` belongs to the package: installed by the previous
    /// version or by this install.
    fn owns(&self, path: &RelPath) -> bool {
        self.written.contains_key(path)
            || self.previous.as_ref().is_some_and(|record| {
                let path = path.to_string();
                record.files.iter().any(|f| f.path == path)
            })
    }

    /// Checks every entry, before anything is written, against the target
    /// and against each other; the error names the first entry refused.
    /// Entries may repeat a path with the same kind (the last one wins, as
    /// when unpacking an archive appended to).
    pub fn preflight(&self, entries: &[(RelPath, EntryKind)]) -> Result<(), String> {
        let mut planned: BTreeMap<&RelPath, &EntryKind> = BTreeMap::new();
        for (path, kind) in entries {
            if let EntryKind::Symlink(link) = kind {
                check_link(link).map_err(|e| format!("{path}: {e}"))?;
            }
            if let Some(previous) = planned.insert(path, kind)
                && previous != kind
                && !matches!(
                    (previous, kind),
                    (EntryKind::Symlink(_), EntryKind::Symlink(_))
                )
            {
                return Err(format!(
                    "{path} appears both as {} and as {}",
                    previous.noun(),
                    kind.noun()
                ));
            }
        }
        for (path, kind) in &planned {
            for parent in path.parents() {
                if let Some(other) = planned.get(&parent)
                    && **other != EntryKind::Dir
                {
                    return Err(format!(
                        "{path}: {parent} is {} in the package, not a directory",
                        other.noun()
                    ));
                }
            }
            self.check_free(path, kind)?;
        }
        Ok(())
    }

    /// Checks that `kind` may be put at `path`: every directory above it is a
    /// real directory or absent, and whatever is there may be replaced.
    fn check_free(&self, path: &RelPath, kind: &EntryKind) -> Result<(), String> {
        let Some(existing) = self.target.existing(path)? else {
            return Ok(());
        };
        // A rename replaces a file or a link itself, never what a link points
        // to, so the package's own files and links may turn into each other;
        // anything else it replaces only with `overwrite`, and in kind.
        let replaceable = match kind {
            EntryKind::Dir => existing.is_dir(),
            EntryKind::File | EntryKind::Symlink(_) if self.owns(path) => {
                existing.is_file() || existing.is_symlink()
            }
            EntryKind::File => existing.is_file() && self.overwrite,
            EntryKind::Symlink(_) => existing.is_symlink() && self.overwrite,
        };
        if replaceable {
            return Ok(());
        }
        let what = describe(&existing);
        if what == kind.noun() {
            Err(format!(
                "{path} already exists and was not installed by this package; set overwrite = true to replace it"
            ))
        } else {
            Err(format!(
                "{path} already exists as {what}; the package has {} there",
                kind.noun()
            ))
        }
    }

    /// Creates the directories above `path` that are missing, checking the
    /// others are real directories.
    fn make_parents(&mut self, path: &RelPath) -> Result<(), String> {
        for parent in path.parents() {
            self.make_dir_once(&parent)?;
        }
        Ok(())
    }

    /// Creates `path` as a directory if it is missing; true if it did.
    fn make_dir_once(&mut self, path: &RelPath) -> Result<bool, String> {
        match self.target.existing(path)? {
            Some(m) if m.is_dir() => Ok(false),
            Some(m) => Err(format!(
                "{path} already exists as {}, not a directory",
                describe(&m)
            )),
            None => {
                fs::create_dir(path.under(&self.target.root))
                    .map_err(|e| format!("{path}: cannot create the directory: {e}"))?;
                self.created.insert(path.clone());
                Ok(true)
            }
        }
    }

    /// Creates the directory `path` (and those above it) if missing; one
    /// this install created gets `mode`, with the owner's bits added.
    pub fn make_dir(&mut self, path: &RelPath, mode: u32) -> Result<(), String> {
        if path.is_empty() {
            return Ok(());
        }
        self.make_parents(path)?;
        if self.make_dir_once(path)? {
            // The owner keeps the right to enter it, or nothing could be
            // installed inside.
            set_mode(
                &path_text(&path.under(&self.target.root))?,
                (mode & MODE_MASK) | 0o700,
            )
            .map_err(|e| format!("{path}: cannot set its mode: {e}"))?;
        }
        Ok(())
    }

    /// Writes `contents` to `path` atomically with permission bits `mode`,
    /// and records its hash.
    pub fn write_file(
        &mut self,
        path: &RelPath,
        mode: u32,
        contents: &mut dyn Read,
    ) -> Result<(), String> {
        self.check_free(path, &EntryKind::File)?;
        self.make_parents(path)?;
        let sha256 = write_atomically(&path.under(&self.target.root), mode, contents)
            .map_err(|e| format!("{path}: {e}"))?;
        self.written.insert(
            path.clone(),
            RecordedFile {
                path: path.to_string(),
                sha256: Some(sha256),
                link: None,
            },
        );
        Ok(())
    }

    /// Writes a copy of `from`, a file this install wrote, to `path`: what
    /// a hard link in an archive means, without sharing the inode.
    pub fn copy_written(
        &mut self,
        path: &RelPath,
        from: &RelPath,
        mode: u32,
    ) -> Result<(), String> {
        if self
            .written
            .get(from)
            .is_none_or(|file| file.sha256.is_none())
        {
            return Err(format!(
                "{path}: a hard link to {from}, which is not a file unpacked before it"
            ));
        }
        let mut source = fs::File::open(from.under(&self.target.root))
            .map_err(|e| format!("{path}: cannot read {from}: {e}"))?;
        self.write_file(path, mode, &mut source)
    }

    /// Creates a symbolic link at `path` pointing to `link`, atomically.
    pub fn symlink(&mut self, path: &RelPath, link: &str) -> Result<(), String> {
        check_link(link).map_err(|e| format!("{path}: {e}"))?;
        self.check_free(path, &EntryKind::Symlink(link.to_string()))?;
        self.make_parents(path)?;
        let destination = path.under(&self.target.root);
        let temp = temp_path(&destination, |temp| platform::symlink(link, temp))
            .map_err(|e| format!("{path}: cannot create the link: {e}"))?;
        fs::rename(&temp, &destination).map_err(|e| {
            let _ = fs::remove_file(&temp);
            format!("{path}: cannot create the link: {e}")
        })?;
        self.written.insert(
            path.clone(),
            RecordedFile {
                path: path.to_string(),
                sha256: None,
                link: Some(link.to_string()),
            },
        );
        Ok(())
    }

    /// Completes the install: removes what the previous version installed
    /// and this one does not, and saves the record. The report lists the
    /// files written, then those removed.
    pub fn finish(mut self) -> Result<InstallReport, String> {
        let mut removed = Vec::new();
        let mut kept_dirs: BTreeSet<RelPath> = self.created.clone();
        if let Some(previous) = self.previous.take() {
            for file in &previous.files {
                let path = RelPath::parse(&file.path)?;
                if !self.written.contains_key(&path) && remove_entry(&self.target, &path)? {
                    removed.push(path.to_string());
                }
            }
            let mut dirs = previous
                .dirs
                .iter()
                .map(|d| RelPath::parse(d))
                .collect::<Result<Vec<_>, _>>()?;
            // Deepest first, so a directory emptied by removing another is
            // removed too.
            dirs.sort_by(|a, b| b.cmp(a));
            for dir in dirs {
                if self.needs_dir(&dir) || !remove_empty_dir(&self.target, &dir) {
                    kept_dirs.insert(dir);
                }
            }
        }
        let written: Vec<String> = self.written.keys().map(|p| p.to_string()).collect();
        let record = Record {
            package: self.package.clone(),
            version: self.version.clone(),
            dirs: kept_dirs.iter().map(|d| d.to_string()).collect(),
            files: self.written.values().cloned().collect(),
        };
        self.target.save_record(&record)?;
        let message = format!(
            "installed {} {}: {} files written, {} left over from the previous version removed",
            self.package,
            self.version,
            written.len(),
            removed.len()
        );
        Ok(InstallReport {
            message,
            files: written.into_iter().chain(removed).collect(),
        })
    }

    /// Whether a path this install wrote lies under `dir`.
    fn needs_dir(&self, dir: &RelPath) -> bool {
        self.written
            .keys()
            .chain(&self.created)
            .any(|p| p.0.starts_with(&dir.0))
    }

    /// Gives up after `error`: records what this install wrote together with
    /// what the previous version installed, so `uninstall` finds all of it
    /// and a retry may replace it. Returns the error to report.
    pub fn abandon(mut self, error: String) -> String {
        if self.written.is_empty() && self.created.is_empty() {
            return error;
        }
        let previous = self.previous.take().unwrap_or_default();
        let mut files: BTreeMap<String, RecordedFile> = previous
            .files
            .into_iter()
            .map(|f| (f.path.clone(), f))
            .collect();
        files.extend(self.written.values().map(|f| (f.path.clone(), f.clone())));
        let mut dirs: BTreeSet<String> = previous.dirs.into_iter().collect();
        dirs.extend(self.created.iter().map(|d| d.to_string()));
        let record = Record {
            package: self.package.clone(),
            version: if previous.version.is_empty() {
                self.version.clone()
            } else {
                previous.version
            },
            dirs: dirs.into_iter().collect(),
            files: files.into_values().collect(),
        };
        match self.target.save_record(&record) {
            Ok(()) => format!(
                "{error} ({} files were written before it failed; they are recorded, and uninstall removes them)",
                self.written.len()
            ),
            Err(e) => format!(
                "{error} (and the record of the {} files written before it failed could not be saved: {e})",
                self.written.len()
            ),
        }
    }
}

/// Removes the file or link at `path` if it is one; false if nothing is
/// there. Something else there now (a directory) is left alone.
fn remove_entry(target: &Target, path: &RelPath) -> Result<bool, String> {
    match target.existing(path)? {
        Some(m) if m.is_file() || m.is_symlink() => {
            fs::remove_file(path.under(&target.root)).map_err(|e| format!("{path}: {e}"))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Removes `dir` if it is an empty directory (a real one, not a link);
/// true if it is gone.
fn remove_empty_dir(target: &Target, dir: &RelPath) -> bool {
    match target.existing(dir) {
        Ok(Some(m)) if m.is_dir() => fs::remove_dir(dir.under(&target.root)).is_ok(),
        Ok(None) => true,
        _ => false,
    }
}

/// Removes what `package` installed in the target directory named `target`
/// (an install step's parameter); nothing to do if it does not exist.
pub fn uninstall_from(target: &str, package: &str) -> Result<InstallReport, String> {
    match Target::find(target)? {
        Some(found) => uninstall(&found, package),
        None => Ok(InstallReport {
            message: format!("target {target} does not exist; {package} is not installed there"),
            files: Vec::new(),
        }),
    }
}

/// Checks what `package` installed in the target directory named `target`.
pub fn verify_in(target: &str, package: &str) -> Result<VerifyReport, String> {
    match Target::find(target)? {
        Some(found) => verify(&found, package),
        None => Ok(VerifyReport {
            intact: false,
            problems: vec![format!("target {target} does not exist")],
        }),
    }
}

/// Removes what `package` installed in `target`, then its record.
pub fn uninstall(target: &Target, package: &str) -> Result<InstallReport, String> {
    let Some(record) = target.load_record(package)? else {
        return Ok(InstallReport {
            message: format!("{package} is not installed in this target; nothing to remove"),
            files: Vec::new(),
        });
    };
    let mut removed = Vec::new();
    for file in &record.files {
        let path = RelPath::parse(&file.path)?;
        if remove_entry(target, &path)? {
            removed.push(path.to_string());
        }
    }
    let mut dirs = record
        .dirs
        .iter()
        .map(|d| RelPath::parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    dirs.sort_by(|a, b| b.cmp(a));
    let kept = dirs
        .iter()
        .filter(|dir| !remove_empty_dir(target, dir))
        .count();
    let record_path = target.record_path(package)?;
    fs::remove_file(&record_path).map_err(|e| format!("record {}: {e}", record_path.display()))?;
    // Other packages may keep records there; it goes only when empty.
    let _ = fs::remove_dir(target.root.join(RECORD_DIR));
    let missing = record.files.len() - removed.len();
    let mut message = format!(
        "removed {} {}: {} files",
        record.package,
        record.version,
        removed.len()
    );
    if missing > 0 {
        message.push_str(&format!(", {missing} already gone"));
    }
    if kept > 0 {
        message.push_str(&format!(
            ", {kept} directories kept as they hold other files"
        ));
    }
    Ok(InstallReport {
        message,
        files: removed,
    })
}

/// Checks that what `package` installed in `target` is still there,
/// unchanged.
pub fn verify(target: &Target, package: &str) -> Result<VerifyReport, String> {
    let Some(record) = target.load_record(package)? else {
        return Ok(VerifyReport {
            intact: false,
            problems: vec![format!(
                "{package} is not installed in this target: no record"
            )],
        });
    };
    let mut problems = Vec::new();
    for file in &record.files {
        let path = RelPath::parse(&file.path)?;
        if let Some(problem) = check_recorded(target, &path, file) {
            problems.push(problem);
        }
    }
    Ok(VerifyReport {
        intact: problems.is_empty(),
        problems,
    })
}

/// What is wrong with the recorded `file` at `path`, if anything.
fn check_recorded(target: &Target, path: &RelPath, file: &RecordedFile) -> Option<String> {
    let metadata = match target.existing(path) {
        Ok(Some(m)) => m,
        Ok(None) => return Some(format!("{path}: missing")),
        Err(e) => return Some(e),
    };
    let full = path.under(&target.root);
    match (&file.sha256, &file.link) {
        (Some(expected), _) => {
            if !metadata.is_file() {
                return Some(format!("{path}: now {}, not a file", describe(&metadata)));
            }
            match fs::File::open(&full).and_then(|mut f| hash(&mut f)) {
                Ok(actual) if &actual == expected => None,
                Ok(_) => Some(format!(
                    "{path}: changed (its SHA-256 differs from the one installed)"
                )),
                Err(e) => Some(format!("{path}: cannot read it: {e}")),
            }
        }
        (None, Some(expected)) => {
            if !metadata.is_symlink() {
                return Some(format!(
                    "{path}: now {}, not a symbolic link",
                    describe(&metadata)
                ));
            }
            match fs::read_link(&full) {
                Ok(actual) if actual == Path::new(expected) => None,
                Ok(actual) => Some(format!(
                    "{path}: changed (links to {}, not {expected})",
                    actual.display()
                )),
                Err(e) => Some(format!("{path}: cannot read the link: {e}")),
            }
        }
        (None, None) => Some(format!(
            "{path}: the record says neither its hash nor its link"
        )),
    }
}

/// `path` as the text the host functions take; every path here is built
/// from UTF-8 parts.
fn path_text(path: &Path) -> Result<String, String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{} is not valid UTF-8", path.display()))
}

/// Creates a fresh temporary entry next to `destination` with `create`,
/// trying another name while one is taken, and returns its path.
fn temp_path(
    destination: &Path,
    mut create: impl FnMut(&Path) -> io::Result<()>,
) -> io::Result<PathBuf> {
    let dir = destination.parent().unwrap_or(Path::new("/"));
    for n in 0..1000 {
        let temp = dir.join(format!(".ferry-{n}.tmp"));
        match create(&temp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            result => return result.map(|()| temp),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free temporary file name in {}", dir.display()),
    ))
}

/// Writes `contents` to `destination` through a temporary file in the same
/// directory, renamed over it once complete, synced and given `mode`, so
/// readers see the old file or the new one, never a part. Returns the
/// SHA-256 of what it wrote.
fn write_atomically(
    destination: &Path,
    mode: u32,
    contents: &mut dyn Read,
) -> Result<String, String> {
    let mut file = None;
    let temp = temp_path(destination, |temp| {
        file = Some(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(temp)?,
        );
        Ok(())
    })
    .map_err(|e| format!("cannot create a temporary file: {e}"))?;
    let result = (|| {
        let mut file = file.ok_or("the temporary file was not opened")?;
        let mut writer = HashingWriter {
            inner: &mut file,
            hasher: Sha256::new(),
        };
        io::copy(contents, &mut writer).map_err(|e| e.to_string())?;
        let sha256 = hex(&writer.hasher.finalize());
        file.sync_all().map_err(|e| e.to_string())?;
        drop(file);
        set_mode(&path_text(&temp)?, mode & MODE_MASK)
            .map_err(|e| format!("cannot set its mode: {e}"))?;
        fs::rename(&temp, destination).map_err(|e| e.to_string())?;
        Ok(sha256)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// A writer that hashes what goes through it.
struct HashingWriter<'a> {
    /// Where the bytes go.
    inner: &'a mut fs::File,
    /// Their hash so far.
    hasher: Sha256,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The SHA-256 of everything `reader` yields, in hex.
fn hash(reader: &mut dyn Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(reader, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// Bytes in lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creating symbolic links, which std offers per platform.
mod platform {
    use std::io;
    use std::path::Path;

    /// Creates a symbolic link at `path` pointing to `link`.
    #[cfg(unix)]
    pub(crate) fn symlink(link: &str, path: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(link, path)
    }

    /// Creates a symbolic link at `path` pointing to `link`, through
    /// wasi-libc, which std links into every WASI program but whose
    /// `symlink` std exposes only unstably.
    #[cfg(target_os = "wasi")]
    pub(crate) fn symlink(link: &str, path: &Path) -> io::Result<()> {
        use std::ffi::{CString, c_char, c_int};

        unsafe extern "C" {
            fn symlink(target: *const c_char, link_path: *const c_char) -> c_int;
        }
        let invalid = |_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL");
        let link = CString::new(link).map_err(invalid)?;
        let path = CString::new(
            path.to_str()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8"))?,
        )
        .map_err(invalid)?;
        // SAFETY: both arguments are NUL-terminated strings that outlive the
        // call, which reads them only.
        if unsafe { symlink(link.as_ptr(), path.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// No symbolic links elsewhere.
    #[cfg(not(any(unix, target_os = "wasi")))]
    pub(crate) fn symlink(_link: &str, _path: &Path) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "symbolic links are not supported on this platform",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(path: &str) -> RelPath {
        RelPath::parse(path).unwrap()
    }

    fn target(dir: &tempfile::TempDir) -> Target {
        Target::create(dir.path().join("target").to_str().unwrap()).unwrap()
    }

    /// Installs `files` (path, contents) as `version` of `pkg`.
    fn install(
        dir: &tempfile::TempDir,
        version: &str,
        files: &[(&str, &str)],
    ) -> Result<InstallReport, String> {
        let mut installation = Installation::begin(target(dir), "pkg", version, false)?;
        let entries: Vec<_> = files
            .iter()
            .map(|(p, _)| (rel(p), EntryKind::File))
            .collect();
        installation.preflight(&entries)?;
        for (path, contents) in files {
            installation.write_file(&rel(path), 0o644, &mut contents.as_bytes())?;
        }
        installation.finish()
    }

    fn read(dir: &tempfile::TempDir, path: &str) -> Option<String> {
        fs::read_to_string(dir.path().join("target").join(path)).ok()
    }

    #[test]
    fn paths_are_normalized_and_checked() {
        assert_eq!(rel("./a//b/./c/").to_string(), "a/b/c");
        assert!(rel("./").is_empty());
        assert_eq!(rel("a/b/c").strip(2), Some(rel("c")));
        assert_eq!(rel("a/b").strip(2), None);
        for (bad, why) in [
            ("/etc/passwd", "absolute"),
            ("a/../../b", ".."),
            ("..", ".."),
            ("a\\..\\b", "backslash"),
            (".ferry/other.toml", ".ferry"),
            ("./.ferry/x", ".ferry"),
        ] {
            let err = RelPath::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn links_must_stay_below_their_directory() {
        assert!(check_link("libfoo.so.1").is_ok());
        assert!(check_link("sub/dir/file").is_ok());
        assert!(check_link("/etc").unwrap_err().contains("absolute"));
        assert!(check_link("../x").unwrap_err().contains(".."));
        assert!(check_link("a/../../x").unwrap_err().contains(".."));
        assert!(check_link("").is_err());
    }

    #[test]
    fn target_must_be_absolute_and_a_directory() {
        assert!(
            Target::create("relative/dir")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(Target::find("/srv/../etc").unwrap_err().contains(".."));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        let err = Target::create(file.to_str().unwrap())
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains("target"), "{err}");
        let missing = dir.path().join("missing");
        assert!(Target::find(missing.to_str().unwrap()).unwrap().is_none());
        assert!(Target::create(missing.to_str().unwrap()).is_ok());
        assert!(missing.is_dir());
    }

    #[test]
    fn install_writes_files_and_a_record_and_verify_checks_them() {
        let dir = tempfile::tempdir().unwrap();
        let report = install(&dir, "1", &[("bin/app", "v1"), ("README", "hello")]).unwrap();
        assert_eq!(report.files, ["README", "bin/app"]);
        assert_eq!(read(&dir, "bin/app").as_deref(), Some("v1"));
        let record = read(&dir, ".ferry/pkg.toml").unwrap();
        assert!(
            record.contains("bin/app") && record.contains("version = \"1\""),
            "{record}"
        );
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("target/bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["app"]);

        let t = target(&dir);
        let report = verify(&t, "pkg").unwrap();
        assert!(report.intact, "{:?}", report.problems);

        fs::write(dir.path().join("target/bin/app"), "tampered").unwrap();
        fs::remove_file(dir.path().join("target/README")).unwrap();
        let report = verify(&t, "pkg").unwrap();
        assert!(!report.intact);
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.starts_with("bin/app: changed"))
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.starts_with("README: missing"))
        );

        let report = verify(&t, "other").unwrap();
        assert!(!report.intact && report.problems[0].contains("not installed"));
    }

    #[test]
    fn upgrade_replaces_own_files_and_removes_stale_ones() {
        let dir = tempfile::tempdir().unwrap();
        install(&dir, "1", &[("bin/app", "v1"), ("old/only-in-v1", "x")]).unwrap();
        let report = install(&dir, "2", &[("bin/app", "v2")]).unwrap();
        assert_eq!(report.files, ["bin/app", "old/only-in-v1"]);
        assert_eq!(read(&dir, "bin/app").as_deref(), Some("v2"));
        assert!(
            !dir.path().join("target/old").exists(),
            "the emptied directory is removed"
        );
        assert!(verify(&target(&dir), "pkg").unwrap().intact);
    }

    #[test]
    fn files_not_owned_are_refused_unless_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("target/etc")).unwrap();
        fs::write(dir.path().join("target/etc/conf"), "mine").unwrap();
        let err = install(&dir, "1", &[("new", "n"), ("etc/conf", "theirs")]).unwrap_err();
        assert!(
            err.contains("etc/conf") && err.contains("overwrite"),
            "{err}"
        );
        // Refused before anything was written.
        assert_eq!(read(&dir, "new"), None);
        assert_eq!(read(&dir, "etc/conf").as_deref(), Some("mine"));

        let mut installation = Installation::begin(target(&dir), "pkg", "1", true).unwrap();
        installation
            .preflight(&[(rel("etc/conf"), EntryKind::File)])
            .unwrap();
        installation
            .write_file(&rel("etc/conf"), 0o600, &mut "theirs".as_bytes())
            .unwrap();
        installation.finish().unwrap();
        assert_eq!(read(&dir, "etc/conf").as_deref(), Some("theirs"));
    }

    #[test]
    fn something_else_in_the_way_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("target/a-dir")).unwrap();
        fs::write(dir.path().join("target/a-file"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("target/a-link")).unwrap();

        let err = install(&dir, "1", &[("a-dir", "x")]).unwrap_err();
        assert!(err.contains("a-dir already exists as a directory"), "{err}");
        let err = install(&dir, "1", &[("a-file/x", "x")]).unwrap_err();
        assert!(err.contains("a-file is a file, not a directory"), "{err}");
        let err = install(&dir, "1", &[("a-link/passwd", "x")]).unwrap_err();
        assert!(err.contains("a-link is a symbolic link"), "{err}");
        let err = install(&dir, "1", &[("a", "x"), ("a/b", "y")]).unwrap_err();
        assert!(err.contains("a is a file in the package"), "{err}");
        assert_eq!(read(&dir, "a"), None);
    }

    #[test]
    fn modes_are_set_without_special_bits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut installation = Installation::begin(target(&dir), "pkg", "1", false).unwrap();
        installation
            .write_file(&rel("run"), 0o4755, &mut "#!".as_bytes())
            .unwrap();
        installation.make_dir(&rel("private/keys"), 0o000).unwrap();
        installation.finish().unwrap();
        let mode = |p: &str| {
            fs::metadata(dir.path().join("target").join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("run"), 0o755);
        assert_eq!(mode("private/keys"), 0o700);
    }

    #[test]
    fn symlinks_and_copies_of_written_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut installation = Installation::begin(target(&dir), "pkg", "1", false).unwrap();
        installation
            .write_file(&rel("lib/libx.so.1"), 0o644, &mut "elf".as_bytes())
            .unwrap();
        installation
            .symlink(&rel("lib/libx.so"), "libx.so.1")
            .unwrap();
        installation
            .copy_written(&rel("lib/copy"), &rel("lib/libx.so.1"), 0o644)
            .unwrap();
        let err = installation
            .copy_written(&rel("lib/bad"), &rel("lib/libx.so"), 0o644)
            .unwrap_err();
        assert!(err.contains("lib/bad"), "{err}");
        let err = installation.symlink(&rel("evil"), "/etc").unwrap_err();
        assert!(err.contains("evil") && err.contains("absolute"), "{err}");
        installation.finish().unwrap();
        assert_eq!(read(&dir, "lib/libx.so").as_deref(), Some("elf"));
        assert_eq!(read(&dir, "lib/copy").as_deref(), Some("elf"));
        assert!(!dir.path().join("target/evil").exists());

        let t = target(&dir);
        assert!(verify(&t, "pkg").unwrap().intact);
        let link = dir.path().join("target/lib/libx.so");
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("copy", &link).unwrap();
        let problems = verify(&t, "pkg").unwrap().problems;
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("lib/libx.so: changed"), "{problems:?}");
    }

    #[test]
    fn uninstall_removes_exactly_what_was_installed() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("target/shared")).unwrap();
        install(
            &dir,
            "1",
            &[
                ("shared/pkg.conf", "c"),
                ("pkg/bin/app", "a"),
                ("pkg/data", "d"),
            ],
        )
        .unwrap();
        fs::write(dir.path().join("target/shared/other"), "not ours").unwrap();
        fs::write(dir.path().join("target/pkg/user-file"), "not ours").unwrap();
        fs::remove_file(dir.path().join("target/pkg/data")).unwrap();

        let report = uninstall(&target(&dir), "pkg").unwrap();
        assert_eq!(report.files, ["pkg/bin/app", "shared/pkg.conf"]);
        assert!(
            report.message.contains("1 already gone"),
            "{}",
            report.message
        );
        assert_eq!(read(&dir, "shared/other").as_deref(), Some("not ours"));
        assert_eq!(read(&dir, "pkg/user-file").as_deref(), Some("not ours"));
        assert!(!dir.path().join("target/pkg/bin").exists());
        assert!(!dir.path().join("target/.ferry").exists());

        let report = uninstall(&target(&dir), "pkg").unwrap();
        assert!(
            report.message.contains("not installed"),
            "{}",
            report.message
        );
    }

    #[test]
    fn a_tampered_record_cannot_reach_outside_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "keep").unwrap();
        install(&dir, "1", &[("a", "x")]).unwrap();
        let record_path = dir.path().join("target/.ferry/pkg.toml");
        let record = fs::read_to_string(&record_path)
            .unwrap()
            .replace("path = \"a\"", "path = \"../outside\"");
        fs::write(&record_path, record).unwrap();
        let err = uninstall(&target(&dir), "pkg").unwrap_err();
        assert!(err.contains("..") && err.contains("record"), "{err}");
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
    }

    #[test]
    fn package_names_must_be_file_names() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "..", "a/b"] {
            let err = Installation::begin(target(&dir), bad, "1", false)
                .map(|_| ())
                .unwrap_err();
            assert!(err.contains("package name"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_failed_write_records_what_was_written() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut installation = Installation::begin(target(&dir), "pkg", "1", false).unwrap();
        installation
            .write_file(&rel("d/first"), 0o644, &mut "1".as_bytes())
            .unwrap();
        let err = installation
            .write_file(&rel("d/second"), 0o644, &mut Failing)
            .unwrap_err();
        assert!(
            err.contains("d/second") && err.contains("disk on fire"),
            "{err}"
        );
        let err = installation.abandon(err);
        assert!(err.contains("uninstall removes them"), "{err}");
        // No temporary file is left, and the record lets uninstall clean up.
        let names: Vec<_> = fs::read_dir(dir.path().join("target/d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["first"]);
        let report = uninstall(&target(&dir), "pkg").unwrap();
        assert_eq!(report.files, ["d/first"]);
        assert!(!dir.path().join("target/d").exists());
    }
}
