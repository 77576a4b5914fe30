//! A control group of its own for each command an installer runs, so that
//! everything the command starts, even a daemon that left its process group
//! and session with `setsid`, can be found and killed when the call ends.
//!
//! Uses the cgroup v2 hierarchy (or, on hosts that mount only v1, the `pids`
//! hierarchy) below the node's own cgroup; needs write access there (root,
//! or a delegated cgroup as systemd gives a service with `Delegate=yes`).
//! Where there is none, commands still run in a process group that is
//! killed, and a warning says what is not contained.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One command's cgroup, removed again by [`CommandCgroup::kill_all`].
pub(crate) struct CommandCgroup {
    dir: PathBuf,
    procs: CString,
}

impl CommandCgroup {
    /// Creates a fresh cgroup for one command, or `None` where this node
    /// cannot.
    pub(crate) fn create() -> Option<CommandCgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = base()?;
        let dir = base.join(format!(
            "ferry-command-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).ok()?;
        let procs = CString::new(
            dir.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .ok()?;
        Some(CommandCgroup { dir, procs })
    }

    /// What the child writes to join the cgroup (see [`join_from_child`]).
    pub(crate) fn procs_file(&self) -> CString {
        self.procs.clone()
    }

    /// Kills every process in the cgroup and removes it.
    pub(crate) fn kill_all(self) {
        // cgroup v2 (Linux 5.14+) kills the whole group in one write.
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = pids.lines().filter_map(|l| l.trim().parse().ok()).collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) sends a signal; no memory is involved.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            if Instant::now() > deadline {
                tracing::warn!(cgroup = %self.dir.display(), "processes of a command survive SIGKILL; leaving its cgroup");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Emptied cgroups go away with rmdir (a killed process may take a
        // moment to leave).
        for _ in 0..200 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::warn!(cgroup = %self.dir.display(), "cannot remove a command's cgroup");
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is
/// `procs`. Meant for the child between fork and exec: only
/// async-signal-safe calls, no allocation.
pub(crate) fn join_from_child(procs: &CString) -> std::io::Result<()> {
    // SAFETY: open, write and close on a path prepared before the fork; "0"
    // names the writing process.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if written != 1 {
            return Err(err);
        }
    }
    Ok(())
}

/// The directory new command cgroups go in: this process's own cgroup in
/// the v2 hierarchy, or else in the v1 `pids` hierarchy.
fn base() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let v2_mount = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    });
    let v2_path = own.lines().find_map(|l| l.strip_prefix("0::"));
    if let (Some(mount), Some(path)) = (v2_mount, v2_path) {
        return Some(join(&mount, path));
    }
    let v1_mount = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup") && f.get(3)?.split(',').any(|o| o == "pids"))
            .then(|| PathBuf::from(f[1]))
    })?;
    let v1_path = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == "pids").then_some(path)
    })?;
    Some(join(&v1_mount, v1_path))
}

fn join(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}
