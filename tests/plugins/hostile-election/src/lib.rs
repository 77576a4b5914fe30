//! An election plugin that misbehaves as its configuration says, for the
//! sandbox and fallback tests.

use ferry_plugin_sdk::election::{ElectionPolicy, ElectionRequest};
use serde::Deserialize;

#[derive(Clone, Deserialize)]
struct Config {
    /// `smallest`, `largest`, `spin`, `sleep`, `membomb`, `panic`, `stranger`,
    /// `loud-error` (15 MiB of error text that tries to forge lines),
    /// `forged-winner` (a winner id that tries the same), `ask-host` (reads
    /// a line from `host`, then elects the smallest id).
    mode: String,
    /// An `address:port` for `ask-host`.
    #[serde(default)]
    host: String,
}

/// The plugin.
pub struct Hostile;

impl ElectionPolicy for Hostile {
    fn elect(request: ElectionRequest) -> Result<String, String> {
        let config: Config = ferry_plugin_sdk::config()?;
        let mut ids: Vec<String> = request.volunteers.into_iter().map(|c| c.id).collect();
        ids.sort();
        match config.mode.as_str() {
            "smallest" => ids.first().cloned().ok_or_else(|| "no volunteers".into()),
            "largest" => ids.last().cloned().ok_or_else(|| "no volunteers".into()),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "membomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "panic" => panic!("deliberate panic"),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Err("woke up".into())
            }
            "stranger" => Ok("nobody-volunteered-this".into()),
            "loud-error" => Err(format!(
                "it broke\nferry: all plugins healthy \u{1b}[32mOK\u{1b}[0m\rover\u{202e}desrever{}",
                "x".repeat(15 << 20)
            )),
            "ask-host" => {
                use std::io::Read;
                let mut stream = std::net::TcpStream::connect(config.host.as_str())
                    .map_err(|e| format!("connect {}: {e}", config.host))?;
                let mut answer = [0u8; 3];
                stream.read_exact(&mut answer).map_err(|e| e.to_string())?;
                ids.first().cloned().ok_or_else(|| "no volunteers".into())
            }
            "forged-winner" => Ok("a\n\u{1b}[2Kelected a\u{202e}".repeat(1000)),
            other => Err(format!("unknown mode {other}")),
        }
    }
}

ferry_plugin_sdk::export_election!(Hostile);
