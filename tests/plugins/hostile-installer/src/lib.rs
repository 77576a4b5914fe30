//! An installer that tries to leave its sandbox in the way its parameters
//! say, for the sandbox tests. Each attack returns Ok only if it worked.

use ferry_plugin_sdk::installer::{
    InstallReport, InstallRequest, Installer, VerifyReport, progress, run_command, set_mode,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    /// `dotdot`, `absolute`, `symlink`, `read-outside`, `command`,
    /// `set-mode-outside`, `write-granted`, `read-staged`, `connect` (to
    /// `outside`, an address:port), `progress-flood` (a million progress
    /// reports in one call), `read-fifo` (reads `granted/fifo`), `daemon`
    /// (`sh` starts a process in a new session that keeps the output pipe
    /// and writes its pid to `granted/daemon.pid`), `plant-symlink`
    /// (`granted/p-shadow` pointing at /etc/shadow through `..`),
    /// `inner-symlink` (`granted/current` pointing at `inside`, in the grant),
    /// `fill-disk` (256 files of 1 MiB), `fill-inodes` (100,000 empty files).
    attack: String,
    /// A granted directory, as the plugin sees it.
    granted: String,
    /// A path outside every grant.
    outside: String,
}

/// The plugin.
pub struct Hostile;

// wasi-libc's symlink(2); Rust's own wrapper for WASI is unstable.
unsafe extern "C" {
    #[link_name = "symlink"]
    fn wasi_symlink(target: *const core::ffi::c_char, link: *const core::ffi::c_char) -> i32;
}

/// Creates `link` pointing at `target`.
fn symlink(target: &str, link: &str) -> Result<InstallReport, String> {
    let (t, l) = (
        std::ffi::CString::new(target).map_err(|e| e.to_string())?,
        std::ffi::CString::new(link).map_err(|e| e.to_string())?,
    );
    // SAFETY: two valid NUL-terminated strings.
    if unsafe { wasi_symlink(t.as_ptr(), l.as_ptr()) } != 0 {
        return Err(format!(
            "symlink {link}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(report(format!("linked {link} -> {target}")))
}

fn report(message: String) -> InstallReport {
    InstallReport {
        message,
        files: Vec::new(),
    }
}

impl Installer for Hostile {
    fn install(request: InstallRequest) -> Result<InstallReport, String> {
        let p: Params = toml::from_str(&request.params).map_err(|e| e.to_string())?;
        let write = |path: &str| {
            std::fs::write(path, b"escaped")
                .map(|_| report(format!("wrote {path}")))
                .map_err(|e| format!("{path}: {e}"))
        };
        match p.attack.as_str() {
            "dotdot" => write(&format!("{}/../escaped-dotdot", p.granted)),
            "absolute" => write(&format!("{}/escaped-absolute", p.outside)),
            "symlink" => write(&format!("{}/link-out/escaped-symlink", p.granted)),
            "read-outside" => std::fs::read_to_string(&p.outside)
                .map(|t| report(format!("read {} bytes", t.len())))
                .map_err(|e| format!("{}: {e}", p.outside)),
            "command" => run_command("touch", &[format!("{}/escaped-command", p.outside)], 5000)
                .map(|o| report(format!("ran, status {}", o.status))),
            "set-mode-outside" => set_mode(&format!("{}/link-out/victim", p.granted), 0o777)
                .map(|_| report("mode set".into())),
            "connect" => {
                use std::io::Write;
                let mut stream = std::net::TcpStream::connect(p.outside.as_str())
                    .map_err(|e| format!("connect {}: {e}", p.outside))?;
                stream
                    .write_all(b"hello from the plugin")
                    .map_err(|e| e.to_string())?;
                Ok(report(format!("connected to {}", p.outside)))
            }
            "fill-disk" => {
                let chunk = vec![7u8; 1 << 20];
                for i in 0..256 {
                    std::fs::write(format!("{}/fill-{i}", p.granted), &chunk)
                        .map_err(|e| format!("fill-{i}: {e}"))?;
                }
                Ok(report("wrote 256 MiB".into()))
            }
            "fill-by-command" => {
                let script = format!("head -c 300000000 /dev/zero > {}/big", p.granted);
                run_command("sh", &["-c".into(), script], 60_000)
                    .map(|o| report(format!("status {}", o.status)))
            }
            "fill-inodes" => {
                for i in 0..100_000 {
                    std::fs::write(format!("{}/inode-{i}", p.granted), b"")
                        .map_err(|e| format!("inode-{i}: {e}"))?;
                }
                Ok(report("made 100000 files".into()))
            }
            "plant-symlink" => symlink(
                "../../../../../../../../etc/shadow",
                &format!("{}/p-shadow", p.granted),
            ),
            "inner-symlink" => symlink("inside", &format!("{}/current", p.granted)),
            "daemon" => {
                let script = format!(
                    "setsid sh -c 'echo $$ > {g}/daemon.pid; exec sleep 300' & \
                     while [ ! -s {g}/daemon.pid ]; do sleep 0.01; done; echo started",
                    g = p.granted
                );
                let out = run_command("sh", &["-c".into(), script], 10_000)?;
                Ok(report(
                    String::from_utf8_lossy(&out.stdout).trim().to_string(),
                ))
            }
            "read-fifo" => std::fs::read(format!("{}/fifo", p.granted))
                .map(|b| report(format!("read {} bytes from the fifo", b.len())))
                .map_err(|e| format!("fifo: {e}")),
            "progress-flood" => {
                for i in 0..1_000_000u32 {
                    progress((i % 101) as u8, "flooding\nfake line");
                }
                Ok(report("flooded".into()))
            }
            "write-granted" => write(&format!("{}/inside", p.granted)),
            "read-staged" => {
                let first = request.files.first().ok_or("no files")?;
                std::fs::read(format!("{}/{}", request.staged_dir, first.path))
                    .map(|b| report(format!("read {} bytes", b.len())))
                    .map_err(|e| e.to_string())
            }
            other => Err(format!("unknown attack {other}")),
        }
    }

    fn uninstall(_request: InstallRequest) -> Result<InstallReport, String> {
        Ok(report("nothing".into()))
    }

    fn verify(_request: InstallRequest) -> Result<VerifyReport, String> {
        Ok(VerifyReport {
            intact: true,
            problems: Vec::new(),
        })
    }
}

ferry_plugin_sdk::export_installer!(Hostile);
