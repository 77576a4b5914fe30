//! What an installer call may add to the disks of its granted directories.
//!
//! WASI gives the host no hook on each write, so the node watches the
//! filesystems that hold the grants instead: their free space and free
//! inodes are read when the call starts and every few milliseconds while it
//! runs (while the plugin itself writes, and while a command it started
//! runs); a call that used more than its budget is abandoned, or its command
//! killed, and fails. What the filesystem loses to other writers during the
//! call counts too, so budgets want headroom.

use std::ffi::CString;
use std::path::PathBuf;
use std::time::Duration;

/// How often the filesystems are looked at while an installer runs.
const EVERY: Duration = Duration::from_millis(20);

/// Free space and inodes of one filesystem.
#[derive(Debug, Clone, Copy)]
struct Free {
    fsid: u64,
    bytes: u64,
    inodes: u64,
}

fn free(path: &CString) -> Option<Free> {
    // SAFETY: statvfs fills the zeroed struct it is given; the path is a
    // valid NUL-terminated string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some(Free {
            fsid: st.f_fsid as u64,
            bytes: (st.f_bfree as u64).saturating_mul(st.f_frsize as u64),
            inodes: st.f_ffree as u64,
        })
    }
}

/// The budget of one call and the filesystems it is counted on.
pub(crate) struct DiskBudget {
    at_start: Vec<(CString, Free)>,
    bytes: u64,
    files: u64,
}

impl DiskBudget {
    /// Reads the filesystems of `dirs` now; the call may then use `mib`
    /// and `files` of them.
    pub(crate) fn start(dirs: &[PathBuf], mib: u64, files: u64) -> DiskBudget {
        let mut at_start: Vec<(CString, Free)> = Vec::new();
        for dir in dirs {
            let Ok(path) = CString::new(dir.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            if let Some(f) = free(&path)
                && !at_start.iter().any(|(_, seen)| seen.fsid == f.fsid)
            {
                at_start.push((path, f));
            }
        }
        DiskBudget {
            at_start,
            bytes: mib.saturating_mul(1 << 20),
            files,
        }
    }

    /// Why the call is over its budget, if it is.
    pub(crate) fn exceeded(&self) -> Option<String> {
        let (mut bytes, mut inodes) = (0u64, 0u64);
        for (path, start) in &self.at_start {
            let now = free(path)?;
            bytes += start.bytes.saturating_sub(now.bytes);
            inodes += start.inodes.saturating_sub(now.inodes);
        }
        if bytes > self.bytes {
            Some(format!(
                "wrote {} MiB to the disks of its granted directories, over its budget of {} MiB",
                bytes >> 20,
                self.bytes >> 20
            ))
        } else if inodes > self.files {
            Some(format!(
                "created {inodes} files in its granted directories, over its budget of {}",
                self.files
            ))
        } else {
            None
        }
    }

    /// Returns once the call is over its budget (never, if it stays within).
    pub(crate) async fn watch(&self) -> String {
        if self.at_start.is_empty() || (self.bytes == u64::MAX && self.files == u64::MAX) {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(EVERY).await;
            if let Some(reason) = self.exceeded() {
                return reason;
            }
        }
    }
}
