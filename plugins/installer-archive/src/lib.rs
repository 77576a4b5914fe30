//! Installer `archive`: unpacks a tar, tar.gz or zip archive of the staged
//! package into a target directory, safely.
//!
//! Parameters (the install step's TOML):
//!
//! ```toml
//! archive = "app.tar.gz"   # path in the staged package
//! target = "/opt/app"      # absolute; inside a directory the node grants
//! format = "tar.gz"        # "tar", "tar.gz" or "zip"; default: from the extension
//! strip-components = 1     # leading path components to drop, after `.`
//! overwrite = false        # replace existing files the package does not own
//! ```
//!
//! The archive is read twice. The first pass checks every entry and writes
//! nothing; any of these fails the whole install, naming the entry: an
//! absolute path, a `..` component, a device, FIFO or other special entry, a
//! symbolic link whose target is absolute or has a `..` component (so it
//! cannot point out of the target, even through other links), a hard link
//! to anything but a file unpacked before it, a path that exists in the
//! target as something else, and sizes adding up to more than the plugin's
//! `max-unpacked-bytes`. The second pass writes: each file atomically, hard
//! links as copies, and it counts the bytes actually unpacked against the
//! same limit, as an archive may declare less than it holds. The record of
//! installed files is kept as by the `copy` installer, for `uninstall` and
//! `verify`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use ferry_plugin_install_files::{
    EntryKind, Installation, RelPath, Target, check_link, uninstall_from, verify_in,
};
use ferry_plugin_sdk::installer::{
    InstallReport, InstallRequest, Installer, VerifyReport, progress,
};
use serde::Deserialize;

/// The plugin's configuration, the `[config]` table of its plugin.toml.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// The most bytes one archive may unpack to, against archive bombs.
    #[serde(default = "default_max_unpacked_bytes")]
    pub max_unpacked_bytes: u64,
}

fn default_max_unpacked_bytes() -> u64 {
    4 << 30
}

/// The install step's parameters.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Params {
    /// The archive's path in the staged package.
    pub archive: String,
    /// The directory to unpack into, absolute.
    pub target: String,
    /// The archive's format; absent: from its extension.
    #[serde(default)]
    pub format: Option<Format>,
    /// Leading path components dropped from every entry; entries with no
    /// more are skipped, as by `tar --strip-components`.
    #[serde(default)]
    pub strip_components: usize,
    /// Replace existing files the package does not own instead of refusing.
    #[serde(default)]
    pub overwrite: bool,
}

/// An archive format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Format {
    /// An uncompressed tar archive.
    #[serde(rename = "tar")]
    Tar,
    /// A gzip-compressed tar archive.
    #[serde(rename = "tar.gz")]
    TarGz,
    /// A zip archive.
    #[serde(rename = "zip")]
    Zip,
}

impl Params {
    /// Parses the request's parameters; the error names the key at fault.
    fn parse(request: &InstallRequest) -> Result<Params, String> {
        toml::from_str(&request.params).map_err(|e| format!("invalid install parameters: {e}"))
    }

    /// The format given, or the one the archive's extension names.
    fn format(&self) -> Result<Format, String> {
        if let Some(format) = self.format {
            return Ok(format);
        }
        let name = self.archive.to_ascii_lowercase();
        if name.ends_with(".tar") {
            Ok(Format::Tar)
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Ok(Format::TarGz)
        } else if name.ends_with(".zip") {
            Ok(Format::Zip)
        } else {
            Err(format!(
                "archive = {:?}: cannot tell its format from the extension; set format = \"tar\", \"tar.gz\" or \"zip\"",
                self.archive
            ))
        }
    }
}

/// What an entry becomes in the target.
#[derive(Clone, Debug)]
enum Action {
    /// A file with these permission bits.
    File(u32),
    /// A directory with these permission bits.
    Dir(u32),
    /// A symbolic link to this target.
    Symlink(String),
    /// A copy of this earlier file, with its permission bits: a hard link
    /// is the same file under another name.
    HardLink(RelPath, u32),
}

/// An entry to unpack.
#[derive(Clone, Debug)]
struct Planned {
    /// Where, after stripping.
    path: RelPath,
    /// As what.
    action: Action,
}

/// One entry as an archive reader presents it.
struct RawEntry<'a> {
    /// Its name, as stored.
    name: &'a [u8],
    /// What kind of entry it is.
    kind: RawKind,
    /// Permission bits, file type bits included for zip.
    mode: u32,
    /// The size it declares.
    size: u64,
    /// A link's target, as stored.
    link: Option<&'a [u8]>,
}

/// The kinds of entries the formats have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RawKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A hard link.
    HardLink,
    /// Nothing to unpack (a pax global header).
    Ignored,
    /// A device, FIFO or socket.
    Special,
    /// A type this installer does not know.
    Unknown,
}

/// Turns entries into a plan, checking each as it goes.
struct Planner {
    /// The `strip-components` parameter.
    strip: usize,
    /// The configured limit.
    max: u64,
    /// Bytes declared so far.
    declared: u64,
    /// Files planned so far, with their declared sizes and modes, for hard
    /// links.
    files: HashMap<RelPath, (u64, u32)>,
}

impl Planner {
    /// The plan for one entry; none if it is skipped. The error names the
    /// entry.
    fn plan(&mut self, entry: &RawEntry) -> Result<Option<Planned>, String> {
        let name = String::from_utf8_lossy(entry.name);
        let refuse = |why: String| format!("entry {name:?}: {why}");
        if entry.kind == RawKind::Ignored {
            return Ok(None);
        }
        let text = std::str::from_utf8(entry.name)
            .map_err(|_| refuse("the name is not UTF-8".to_string()))?;
        let full = RelPath::parse(text).map_err(refuse)?;
        let Some(path) = full.strip(self.strip) else {
            return Ok(None);
        };
        let mode = entry.mode & 0o7777;
        let (action, size) = match entry.kind {
            RawKind::File => (Action::File(mode), entry.size),
            RawKind::Dir => (Action::Dir(mode), 0),
            RawKind::Symlink => {
                let link = entry
                    .link
                    .ok_or_else(|| refuse("a symbolic link without a target".to_string()))?;
                let link = std::str::from_utf8(link)
                    .map_err(|_| refuse("the link target is not UTF-8".to_string()))?;
                check_link(link).map_err(refuse)?;
                (Action::Symlink(link.to_string()), 0)
            }
            RawKind::HardLink => {
                let link = entry
                    .link
                    .and_then(|l| std::str::from_utf8(l).ok())
                    .ok_or_else(|| refuse("a hard link without a UTF-8 target".to_string()))?;
                let from = RelPath::parse(link)
                    .map_err(|e| refuse(format!("a hard link to {e}")))?
                    .strip(self.strip);
                let source = from.as_ref().and_then(|f| self.files.get(f)).copied();
                match (from, source) {
                    (Some(from), Some((size, mode))) => (Action::HardLink(from, mode), size),
                    _ => {
                        return Err(refuse(format!(
                            "a hard link to {link:?}, which is not a file unpacked before it"
                        )));
                    }
                }
            }
            RawKind::Special => {
                return Err(refuse("a device, FIFO or socket; refused".to_string()));
            }
            RawKind::Ignored | RawKind::Unknown => {
                return Err(refuse(
                    "an entry type this installer does not unpack".to_string(),
                ));
            }
        };
        if path.is_empty() {
            // `./` is the target itself, there already.
            return match action {
                Action::Dir(_) => Ok(None),
                _ => Err(refuse("the path names the target itself".to_string())),
            };
        }
        self.declared = self.declared.saturating_add(size);
        if self.declared > self.max {
            return Err(format!(
                "the archive unpacks to more than max-unpacked-bytes = {} bytes (at entry {name:?})",
                self.max
            ));
        }
        if let Action::File(mode) | Action::HardLink(_, mode) = action {
            self.files.insert(path.clone(), (size, mode));
        }
        Ok(Some(Planned { path, action }))
    }
}

/// The count of bytes unpacked so far, against the limit.
struct Budget {
    /// The limit.
    max: u64,
    /// Bytes unpacked so far.
    used: u64,
}

impl Budget {
    /// Counts `n` more bytes; an error once past the limit.
    fn charge(&mut self, n: u64) -> io::Result<()> {
        self.used = self.used.saturating_add(n);
        if self.used > self.max {
            return Err(io::Error::other(format!(
                "the archive unpacks to more than max-unpacked-bytes = {} bytes",
                self.max
            )));
        }
        Ok(())
    }
}

/// A reader that charges what it reads to a budget.
struct Counted<'a, R> {
    /// Where the bytes come from.
    inner: R,
    /// Where they are counted.
    budget: &'a mut Budget,
    /// Bytes read through this reader.
    read: u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.budget.charge(n as u64)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// The longest link target read from a zip entry's contents.
const MAX_LINK_BYTES: u64 = 4096;

/// An archive being unpacked.
struct Unpacker<'a> {
    /// The installation the entries go to.
    installation: &'a mut Installation,
    /// Bytes actually unpacked.
    budget: Budget,
    /// Bytes actually written per file, for hard links.
    sizes: HashMap<RelPath, u64>,
    /// Bytes declared in all, for progress.
    total: u64,
}

impl Unpacker<'_> {
    /// Unpacks one planned entry, reading a file's contents from `data`.
    fn unpack(&mut self, entry: &Planned, data: &mut dyn Read) -> Result<(), String> {
        progress(
            percent(self.budget.used, self.total),
            &format!("unpacking {}", entry.path),
        );
        match &entry.action {
            Action::File(mode) => {
                let mut counted = Counted {
                    inner: data,
                    budget: &mut self.budget,
                    read: 0,
                };
                self.installation
                    .write_file(&entry.path, *mode, &mut counted)?;
                let read = counted.read;
                self.sizes.insert(entry.path.clone(), read);
            }
            Action::Dir(mode) => self.installation.make_dir(&entry.path, *mode)?,
            Action::Symlink(link) => self.installation.symlink(&entry.path, link)?,
            Action::HardLink(from, mode) => {
                let size = self.sizes.get(from).copied().unwrap_or(0);
                self.budget
                    .charge(size)
                    .map_err(|e| format!("{}: {e}", entry.path))?;
                self.installation.copy_written(&entry.path, from, *mode)?;
                self.sizes.insert(entry.path.clone(), size);
            }
        }
        Ok(())
    }
}

/// `done` out of `total` as a percentage short of 100, which is kept for
/// the end.
fn percent(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 0;
    }
    u8::try_from(u128::from(done.min(total)) * 99 / u128::from(total)).unwrap_or(99)
}

/// A tar entry's kind.
fn tar_kind(entry_type: tar::EntryType) -> RawKind {
    use tar::EntryType;
    match entry_type {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => RawKind::File,
        EntryType::Directory => RawKind::Dir,
        EntryType::Symlink => RawKind::Symlink,
        EntryType::Link => RawKind::HardLink,
        EntryType::XGlobalHeader => RawKind::Ignored,
        EntryType::Char | EntryType::Block | EntryType::Fifo => RawKind::Special,
        _ => RawKind::Unknown,
    }
}

/// A zip entry's kind, from the file type bits a Unix zip stores.
fn zip_kind<R: Read>(file: &zip::read::ZipFile<'_, R>) -> RawKind {
    const TYPE_MASK: u32 = 0o170000;
    match file.unix_mode().map(|m| m & TYPE_MASK) {
        Some(0o120000) => RawKind::Symlink,
        Some(0o040000) => RawKind::Dir,
        Some(0o100000) => RawKind::File,
        // No type bits: a zip made elsewhere, where the name says it.
        Some(0) | None if file.is_dir() => RawKind::Dir,
        Some(0) | None => RawKind::File,
        Some(_) => RawKind::Special,
    }
}

/// Opens the archive for a pass over it.
fn open(path: &Path, name: &str) -> Result<BufReader<File>, String> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| format!("archive = {name:?}: cannot open it: {e}"))
}

/// Runs `each` on every entry of a tar archive read from `reader`, in order.
fn for_each_tar_entry(
    reader: impl Read,
    name: &str,
    mut each: impl FnMut(&RawEntry, &mut dyn Read) -> Result<(), String>,
) -> Result<(), String> {
    let bad = |e: io::Error| format!("archive = {name:?}: {e}");
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let header = entry.header();
        let kind = tar_kind(header.entry_type());
        let entry_name = entry.path_bytes().into_owned();
        let mode = header.mode().map_err(|e| {
            format!(
                "entry {:?}: unreadable mode: {e}",
                String::from_utf8_lossy(&entry_name)
            )
        })?;
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let raw = RawEntry {
            name: &entry_name,
            kind,
            mode,
            size: entry.size(),
            link: link.as_deref(),
        };
        each(&raw, &mut entry)?;
    }
    Ok(())
}

/// Runs `each` on every entry of a zip archive read from `reader`, in order.
fn for_each_zip_entry(
    reader: BufReader<File>,
    name: &str,
    mut each: impl FnMut(&RawEntry, &mut dyn Read) -> Result<(), String>,
) -> Result<(), String> {
    let bad = |e: zip::result::ZipError| format!("archive = {name:?}: {e}");
    let mut archive = zip::ZipArchive::new(reader).map_err(bad)?;
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).map_err(bad)?;
        // Decoded as the entry's flags say: UTF-8 or code page 437.
        let entry_name = file.name().map_err(bad)?.into_owned().into_bytes();
        let kind = zip_kind(&file);
        if file.encrypted() {
            return Err(format!(
                "entry {:?}: encrypted; refused",
                String::from_utf8_lossy(&entry_name)
            ));
        }
        // A zip link keeps its target as its contents.
        let link = if kind == RawKind::Symlink {
            let mut link = Vec::new();
            (&mut file)
                .take(MAX_LINK_BYTES)
                .read_to_end(&mut link)
                .map_err(|e| {
                    format!(
                        "entry {:?}: cannot read the link: {e}",
                        String::from_utf8_lossy(&entry_name)
                    )
                })?;
            Some(link)
        } else {
            None
        };
        let raw = RawEntry {
            name: &entry_name,
            kind,
            // Without permission bits (a zip made without Unix modes), the
            // usual defaults rather than a file no one may read.
            mode: file
                .unix_mode()
                .filter(|mode| mode & 0o777 != 0)
                .unwrap_or(if kind == RawKind::Dir { 0o755 } else { 0o644 }),
            size: file.size(),
            link: link.as_deref(),
        };
        each(&raw, &mut file)?;
    }
    Ok(())
}

/// Runs `each` on every entry of the archive at `path`, in order.
fn for_each_entry(
    format: Format,
    path: &Path,
    name: &str,
    each: impl FnMut(&RawEntry, &mut dyn Read) -> Result<(), String>,
) -> Result<(), String> {
    let reader = open(path, name)?;
    match format {
        Format::Tar => for_each_tar_entry(reader, name, each),
        Format::TarGz => for_each_tar_entry(flate2::read::MultiGzDecoder::new(reader), name, each),
        Format::Zip => for_each_zip_entry(reader, name, each),
    }
}

/// The installer.
pub struct Archive;

impl Installer for Archive {
    fn install(request: InstallRequest) -> Result<InstallReport, String> {
        let config: Config = ferry_plugin_sdk::config()?;
        let params = Params::parse(&request)?;
        let format = params.format()?;
        let archive = RelPath::parse(&params.archive)
            .map_err(|e| format!("archive = {:?}: {e}", params.archive))?;
        if archive.is_empty() {
            return Err("archive = \"\": names no file".to_string());
        }
        let archive_path = Path::new(&request.staged_dir).join(archive.to_string());

        // First pass: check every entry, write nothing.
        let mut planner = Planner {
            strip: params.strip_components,
            max: config.max_unpacked_bytes,
            declared: 0,
            files: HashMap::new(),
        };
        let mut plan = Vec::new();
        for_each_entry(format, &archive_path, &params.archive, |entry, _| {
            plan.push(planner.plan(entry)?);
            Ok(())
        })?;
        let target = Target::create(&params.target)?;
        let mut installation =
            Installation::begin(target, &request.package, &request.version, params.overwrite)?;
        let entries: Vec<(RelPath, EntryKind)> = plan
            .iter()
            .flatten()
            .map(|p| {
                let kind = match &p.action {
                    Action::File(_) | Action::HardLink(..) => EntryKind::File,
                    Action::Dir(_) => EntryKind::Dir,
                    Action::Symlink(link) => EntryKind::Symlink(link.clone()),
                };
                (p.path.clone(), kind)
            })
            .collect();
        installation.preflight(&entries)?;

        // Second pass: the same entries, in the same order, written.
        let mut unpacker = Unpacker {
            installation: &mut installation,
            budget: Budget {
                max: config.max_unpacked_bytes,
                used: 0,
            },
            sizes: HashMap::new(),
            total: planner.declared,
        };
        let mut planned = plan.iter();
        let unpacked =
            for_each_entry(
                format,
                &archive_path,
                &params.archive,
                |entry, data| match planned.next() {
                    Some(Some(p)) => unpacker.unpack(p, data),
                    Some(None) => Ok(()),
                    None => Err(format!(
                        "archive = {:?}: entry {:?} was not there when it was checked",
                        params.archive,
                        String::from_utf8_lossy(entry.name)
                    )),
                },
            );
        if let Err(e) = unpacked {
            return Err(installation.abandon(e));
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

ferry_plugin_sdk::export_installer!(Archive);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_plugin_sdk::installer::StagedFile;
    use ferry_plugin_sdk::testing;
    use std::fs;
    use std::io::{Cursor, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use tar::{EntryType, Header};

    /// A tar entry to build, its name and link written as given, unchecked.
    struct T<'a> {
        name: &'a str,
        kind: EntryType,
        mode: u32,
        data: &'a [u8],
        link: Option<&'a str>,
    }

    fn file<'a>(name: &'a str, data: &'a [u8]) -> T<'a> {
        T {
            name,
            kind: EntryType::Regular,
            mode: 0o644,
            data,
            link: None,
        }
    }

    fn dir(name: &str) -> T<'_> {
        T {
            name,
            kind: EntryType::Directory,
            mode: 0o755,
            data: b"",
            link: None,
        }
    }

    fn link<'a>(name: &'a str, kind: EntryType, to: &'a str) -> T<'a> {
        T {
            name,
            kind,
            mode: 0o777,
            data: b"",
            link: Some(to),
        }
    }

    fn special(name: &str, kind: EntryType) -> T<'_> {
        T {
            name,
            kind,
            mode: 0o644,
            data: b"",
            link: None,
        }
    }

    /// A tar archive of `entries`, with names the tar crate's own checks
    /// would refuse to write.
    fn tar(entries: &[T]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            let mut header = Header::new_gnu();
            let name = entry.name.as_bytes();
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_entry_type(entry.kind);
            header.set_mode(entry.mode);
            header.set_size(entry.data.len() as u64);
            if let Some(link) = entry.link {
                header.set_link_name_literal(link).unwrap();
            }
            header.set_cksum();
            builder.append(&header, entry.data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// A zip entry: name, contents, unix mode (file type bits included).
    fn zip(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data, mode) in entries {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .external_attributes(mode << 16);
            writer.start_file(*name, options).unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    /// A staged package holding one archive, and a target, side by side in
    /// one temporary directory.
    struct Setup {
        dir: tempfile::TempDir,
        archive: String,
    }

    impl Setup {
        fn new(archive: &str, bytes: &[u8]) -> Setup {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("staged")).unwrap();
            fs::write(dir.path().join("staged").join(archive), bytes).unwrap();
            testing::set_config("");
            Setup {
                dir,
                archive: archive.to_string(),
            }
        }

        fn target(&self) -> PathBuf {
            self.dir.path().join("target")
        }

        fn request(&self, extra: &str) -> InstallRequest {
            InstallRequest {
                package: "app".into(),
                version: "1.0".into(),
                staged_dir: self.dir.path().join("staged").to_str().unwrap().into(),
                files: vec![StagedFile {
                    path: self.archive.clone(),
                    mode: 0o644,
                    size: 0,
                }],
                params: format!(
                    "archive = {:?}\ntarget = {:?}\n{extra}",
                    self.archive,
                    self.target().to_str().unwrap()
                ),
                previous_version: None,
            }
        }

        fn install(&self, extra: &str) -> Result<InstallReport, String> {
            Archive::install(self.request(extra))
        }

        fn read(&self, path: &str) -> Option<String> {
            fs::read_to_string(self.target().join(path)).ok()
        }

        /// Every path in the temporary directory but the staged archive.
        fn written(&self) -> Vec<String> {
            fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
                for entry in fs::read_dir(dir).unwrap() {
                    let path = entry.unwrap().path();
                    out.push(path.strip_prefix(root).unwrap().display().to_string());
                    if path.is_dir() && !path.is_symlink() {
                        walk(&path, root, out);
                    }
                }
            }
            let mut out = Vec::new();
            walk(self.dir.path(), self.dir.path(), &mut out);
            out.retain(|p| p != "staged" && !p.starts_with("staged/"));
            out.sort();
            out
        }

        /// Installing fails with an error containing each of `expected`,
        /// and writes nothing anywhere (the target may exist, empty).
        fn assert_refused(&self, extra: &str, expected: &[&str]) {
            let err = self.install(extra).unwrap_err();
            for e in expected {
                assert!(err.contains(e), "expected {e:?} in: {err}");
            }
            let written = self.written();
            assert!(
                written.is_empty() || written == ["target"],
                "written: {written:?}"
            );
        }
    }

    #[test]
    fn unpacks_a_tar_gz_with_links_and_modes() {
        let archive = gzip(&tar(&[
            dir("./"),
            dir("app-1.0/"),
            T {
                mode: 0o755,
                ..file("app-1.0/bin/app", b"#!/bin/sh\n")
            },
            file("app-1.0/lib/libx.so.1", b"elf"),
            link("app-1.0/lib/libx.so", EntryType::Symlink, "libx.so.1"),
            T {
                mode: 0o600,
                ..link("app-1.0/bin/app-copy", EntryType::Link, "app-1.0/bin/app")
            },
            T {
                mode: 0o700,
                ..dir("app-1.0/private/")
            },
            file("top-level-only", b"skipped by strip-components"),
        ]));
        let setup = Setup::new("app.tar.gz", &archive);
        testing::take_progress();
        let report = setup.install("strip-components = 1").unwrap();
        assert_eq!(
            report.files,
            ["bin/app", "bin/app-copy", "lib/libx.so", "lib/libx.so.1"]
        );
        assert_eq!(setup.read("bin/app-copy").as_deref(), Some("#!/bin/sh\n"));
        assert_eq!(setup.read("lib/libx.so").as_deref(), Some("elf"));
        assert_eq!(
            fs::read_link(setup.target().join("lib/libx.so")).unwrap(),
            Path::new("libx.so.1")
        );
        let mode = |p: &str| {
            fs::metadata(setup.target().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("bin/app"), 0o755);
        assert_eq!(
            mode("bin/app-copy"),
            0o755,
            "a hard link has its file's mode"
        );
        assert_eq!(mode("lib/libx.so.1"), 0o644);
        assert_eq!(mode("private"), 0o700);
        assert_eq!(setup.read("top-level-only"), None);
        let progress = testing::take_progress();
        assert_eq!(progress.last().map(|p| p.0), Some(100));

        assert!(Archive::verify(setup.request("")).unwrap().intact);
        fs::write(setup.target().join("lib/libx.so.1"), "patched").unwrap();
        let problems = Archive::verify(setup.request("")).unwrap().problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("lib/libx.so.1: changed"),
            "{problems:?}"
        );

        let report = Archive::uninstall(setup.request("")).unwrap();
        assert_eq!(report.files.len(), 4);
        assert_eq!(setup.written(), ["target"]);
    }

    #[test]
    fn unpacks_a_plain_tar_and_a_zip() {
        let setup = Setup::new("a.tar", &tar(&[file("x/y", b"tar")]));
        setup.install("").unwrap();
        assert_eq!(setup.read("x/y").as_deref(), Some("tar"));

        let archive = zip(&[
            ("dir/", b"", 0o040755),
            ("dir/file", b"zipped", 0o100600),
            ("dir/link", b"file", 0o120777),
            ("plain", b"no unix mode", 0),
            ("no-permissions", b"type bits only", 0o100000),
        ]);
        let setup = Setup::new("a.zip", &archive);
        let report = setup.install("").unwrap();
        assert_eq!(
            report.files,
            ["dir/file", "dir/link", "no-permissions", "plain"]
        );
        assert_eq!(setup.read("dir/link").as_deref(), Some("zipped"));
        assert!(
            fs::symlink_metadata(setup.target().join("dir/link"))
                .unwrap()
                .is_symlink()
        );
        let mode = fs::metadata(setup.target().join("dir/file"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(Archive::verify(setup.request("")).unwrap().intact);
    }

    #[test]
    fn format_comes_from_the_parameter_or_the_extension() {
        let setup = Setup::new("archive.bin", &gzip(&tar(&[file("f", b"1")])));
        setup.assert_refused("", &["archive.bin", "format"]);
        setup.install("format = \"tar.gz\"").unwrap();
        assert_eq!(setup.read("f").as_deref(), Some("1"));

        let setup = Setup::new("a.tgz", &tar(&[file("f", b"1")]));
        let err = setup.install("").unwrap_err();
        assert!(err.contains("a.tgz"), "a plain tar is not gzip: {err}");
        setup.install("format = \"tar\"").unwrap();
    }

    #[test]
    fn refuses_parent_components() {
        let setup = Setup::new("a.tar", &tar(&[file("ok", b"1"), file("../evil", b"x")]));
        setup.assert_refused("", &["entry \"../evil\"", ".."]);
        let setup = Setup::new("a.tar", &tar(&[file("a/../../evil", b"x")]));
        setup.assert_refused("", &["entry \"a/../../evil\"", ".."]);
        let setup = Setup::new(
            "a.zip",
            &zip(&[("ok", b"1", 0o100644), ("../evil", b"x", 0o100644)]),
        );
        setup.assert_refused("", &["entry \"../evil\"", ".."]);
    }

    #[test]
    fn refuses_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let evil = dir.path().join("evil");
        let name = evil.to_str().unwrap();
        let setup = Setup::new("a.tar", &tar(&[file("ok", b"1"), file(name, b"x")]));
        setup.assert_refused("", &[name, "absolute"]);
        let setup = Setup::new("a.zip", &zip(&[(name, b"x", 0o100644)]));
        setup.assert_refused("", &[name, "absolute"]);
        assert!(!evil.exists());
    }

    #[test]
    fn refuses_a_symlink_out_and_a_file_through_it() {
        let outside = tempfile::tempdir().unwrap();
        let out = outside.path().to_str().unwrap();
        let setup = Setup::new(
            "a.tar",
            &tar(&[
                link("etc", EntryType::Symlink, out),
                file("etc/passwd", b"owned"),
            ]),
        );
        setup.assert_refused("", &["entry \"etc\"", "absolute"]);
        let setup = Setup::new(
            "a.tar",
            &tar(&[
                link("up", EntryType::Symlink, "../.."),
                file("up/x", b"owned"),
            ]),
        );
        setup.assert_refused("", &["entry \"up\"", ".."]);
        let setup = Setup::new(
            "a.zip",
            &zip(&[
                ("etc", out.as_bytes(), 0o120777),
                ("etc/passwd", b"owned", 0o100644),
            ]),
        );
        setup.assert_refused("", &["entry \"etc\"", "absolute"]);
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_a_file_through_an_inner_symlink() {
        // The link itself stays inside, but a file written through it would
        // land wherever it points; the path must be a real directory.
        let setup = Setup::new(
            "a.tar",
            &tar(&[
                dir("real/"),
                link("alias", EntryType::Symlink, "real"),
                file("alias/x", b"1"),
            ]),
        );
        setup.assert_refused("", &["alias/x", "alias is a symbolic link in the package"]);
    }

    #[test]
    fn refuses_hard_links_except_to_earlier_files() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        fs::write(&secret, "secret").unwrap();
        for to in [secret.to_str().unwrap(), "../secret", "later", "missing"] {
            let setup = Setup::new(
                "a.tar",
                &tar(&[link("hl", EntryType::Link, to), file("later", b"1")]),
            );
            setup.assert_refused("", &["entry \"hl\"", "hard link"]);
        }
        let setup = Setup::new(
            "a.tar",
            &tar(&[dir("d/"), link("hl", EntryType::Link, "d")]),
        );
        setup.assert_refused("", &["entry \"hl\"", "not a file"]);
        assert_eq!(fs::read_to_string(&secret).unwrap(), "secret");
    }

    #[test]
    fn refuses_devices_and_fifos() {
        for kind in [EntryType::Char, EntryType::Block, EntryType::Fifo] {
            let setup = Setup::new("a.tar", &tar(&[file("ok", b"1"), special("dev", kind)]));
            setup.assert_refused("", &["entry \"dev\"", "device"]);
        }
        let setup = Setup::new("a.zip", &zip(&[("fifo", b"", 0o010644)]));
        setup.assert_refused("", &["entry \"fifo\"", "device"]);
    }

    #[test]
    fn refuses_archives_unpacking_to_more_than_the_limit() {
        let zeros = vec![0u8; 600];
        let setup = Setup::new(
            "a.tar.gz",
            &gzip(&tar(&[file("a", &zeros), file("b", &zeros)])),
        );
        testing::set_config("max-unpacked-bytes = 1000");
        setup.assert_refused("", &["max-unpacked-bytes = 1000", "entry \"b\""]);

        // Hard links are copies, so they count too.
        let setup = Setup::new(
            "a.tar",
            &tar(&[file("a", &zeros), link("b", EntryType::Link, "a")]),
        );
        testing::set_config("max-unpacked-bytes = 1000");
        setup.assert_refused("", &["max-unpacked-bytes = 1000", "entry \"b\""]);

        let setup = Setup::new(
            "a.zip",
            &zip(&[("a", &zeros, 0o100644), ("b", &zeros, 0o100644)]),
        );
        testing::set_config("max-unpacked-bytes = 1000");
        setup.assert_refused("", &["max-unpacked-bytes = 1000"]);

        testing::set_config("max-unpacked-bytes = 1200");
        setup.install("").unwrap();
    }

    #[test]
    fn counts_the_bytes_actually_unpacked() {
        // An archive may declare less than it holds; the second pass counts
        // what it reads, and stops at the limit.
        let dir = tempfile::tempdir().unwrap();
        let target = Target::create(dir.path().join("t").to_str().unwrap()).unwrap();
        let mut installation = Installation::begin(target, "app", "1", false).unwrap();
        let mut unpacker = Unpacker {
            installation: &mut installation,
            budget: Budget { max: 100, used: 0 },
            sizes: HashMap::new(),
            total: 10,
        };
        let planned = Planned {
            path: RelPath::parse("big").unwrap(),
            action: Action::File(0o644),
        };
        let err = unpacker
            .unpack(&planned, &mut io::repeat(0).take(1000))
            .unwrap_err();
        assert!(
            err.contains("big") && err.contains("max-unpacked-bytes = 100"),
            "{err}"
        );
        assert_eq!(fs::read_dir(dir.path().join("t")).unwrap().count(), 0);
    }

    #[test]
    fn refuses_to_replace_what_is_not_the_packages() {
        let setup = Setup::new(
            "a.tar",
            &tar(&[file("new", b"n"), file("conf", b"package")]),
        );
        fs::create_dir_all(setup.target()).unwrap();
        fs::write(setup.target().join("conf"), "operator").unwrap();
        let err = setup.install("").unwrap_err();
        assert!(err.contains("conf") && err.contains("overwrite"), "{err}");
        assert_eq!(setup.read("new"), None);
        setup.install("overwrite = true").unwrap();
        assert_eq!(setup.read("conf").as_deref(), Some("package"));
    }

    #[test]
    fn bad_parameters_are_errors_naming_the_key() {
        let setup = Setup::new("a.tar", &tar(&[file("f", b"1")]));
        for (params, key) in [
            ("target = \"/x\"", "archive"),
            ("archive = \"a.tar\"", "target"),
            ("archive = \"../a.tar\"\ntarget = \"/x\"", "archive"),
            (
                "archive = \"a.tar\"\ntarget = \"/x\"\nformat = \"rar\"",
                "format",
            ),
            (
                "archive = \"a.tar\"\ntarget = \"/x\"\nstrip-components = -1",
                "strip-components",
            ),
            ("archive = \"missing.tar\"\ntarget = \"/x\"", "missing.tar"),
        ] {
            let mut request = setup.request("");
            request.params = params.into();
            let err = Archive::install(request).unwrap_err();
            assert!(err.contains(key), "{params}: {err}");
        }
        assert!(setup.written().is_empty());
    }

    #[test]
    fn a_corrupt_archive_is_an_error_naming_it() {
        let mut bytes = gzip(&tar(&[file("f", &[7u8; 5000])]));
        let len = bytes.len();
        bytes.truncate(len / 2);
        let setup = Setup::new("a.tar.gz", &bytes);
        setup.assert_refused("", &["a.tar.gz"]);
        let setup = Setup::new("a.zip", b"not a zip");
        setup.assert_refused("", &["a.zip"]);
    }
}
