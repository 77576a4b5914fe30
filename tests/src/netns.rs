//! Real links for tests: a network namespace joined to this one by a veth
//! pair, optionally shaped with `tc tbf` like a WAN link. Needs root (CI
//! runs as root); everything is removed when the value drops, also when
//! the test fails.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace and the veth pair that joins it to the test's namespace.
pub struct Netns {
    /// The namespace's name.
    pub name: String,
    /// The veth end in the test's namespace.
    pub outer: String,
    /// Address of the outer end (the test's side).
    pub outer_ip: String,
    /// Address of the inner end (inside the namespace).
    pub inner_ip: String,
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// Whether this process may create namespaces (it runs as root).
    pub fn available() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// Creates a namespace joined by a veth pair on its own /30 subnet.
    /// Panics with the failing command if anything cannot be set up.
    pub fn new() -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{}{n}", pid % 100_000);
        // A /30 per namespace: unique per process and per namespace in it.
        let block = (pid % 60) * 4 + 16 + (n / 64);
        let host = (n % 64) * 4;
        let ns = Netns {
            name: format!("ferry-t{tag}"),
            outer: format!("fo{tag}"),
            outer_ip: format!("10.{block}.{}.{}", host / 256, host % 256 + 1),
            inner_ip: format!("10.{block}.{}.{}", host / 256, host % 256 + 2),
        };
        let inner = format!("fi{tag}");
        let setup = || -> Result<(), String> {
            run("ip", &["netns", "add", &ns.name])?;
            run(
                "ip",
                &[
                    "link", "add", &ns.outer, "type", "veth", "peer", "name", &inner,
                ],
            )?;
            run("ip", &["link", "set", &inner, "netns", &ns.name])?;
            run(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{}/30", ns.outer_ip),
                    "dev",
                    &ns.outer,
                ],
            )?;
            run("ip", &["link", "set", &ns.outer, "up"])?;
            let exec = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns.name];
                all.extend_from_slice(args);
                run("ip", &all)
            };
            exec(&[
                "ip",
                "addr",
                "add",
                &format!("{}/30", ns.inner_ip),
                "dev",
                &inner,
            ])?;
            exec(&["ip", "link", "set", &inner, "up"])?;
            exec(&["ip", "link", "set", "lo", "up"])
        };
        if let Err(e) = setup() {
            drop(ns);
            panic!("cannot set up a network namespace: {e}");
        }
        ns
    }

    /// Shapes traffic leaving the test's side towards the namespace with a
    /// token bucket filter of `mbit` Mbit/s, as a WAN link.
    pub fn shape(&self, mbit: u32) {
        let rate = format!("{mbit}mbit");
        run(
            "tc",
            &[
                "qdisc",
                "add",
                "dev",
                &self.outer,
                "root",
                "tbf",
                "rate",
                &rate,
                "burst",
                "64kb",
                "latency",
                "100ms",
            ],
        )
        .unwrap_or_else(|e| panic!("cannot shape the link: {e}"));
    }

    /// Bytes sent into and received from the namespace over the veth so
    /// far (everything on the wire: TCP, TLS and HTTP included).
    pub fn traffic(&self) -> (u64, u64) {
        let read = |what: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{}/statistics/{what}", self.outer))
                .expect("veth statistics")
                .trim()
                .parse::<u64>()
                .expect("a number")
        };
        (read("tx_bytes"), read("rx_bytes"))
    }

    /// The launcher that runs a command inside the namespace.
    pub fn launcher(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes the veth pair and its qdisc.
        let _ = run("ip", &["netns", "del", &self.name]);
        let _ = run("ip", &["link", "del", &self.outer]);
    }
}
