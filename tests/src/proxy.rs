//! A plain TCP proxy on loopback for fault tests: it forwards every
//! connection to one address and, in the mode set while it runs, passes
//! the bytes through, cuts connections, trickles them, or refuses them.
//!
//! It sees only bytes: TLS passes through untouched, so the client still
//! talks to the real server (whose certificate covers `127.0.0.1`) and
//! notices only the faults. It counts the bytes it forwards each way, so a
//! test can tell how much crossed the "link" over many attempts.
//!
//! Every connection is served by two threads of its own (one per
//! direction); the proxy stops them all and joins them when dropped.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does to the connections it forwards. A change applies at
/// once, to open connections as well as new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Forward both directions unchanged.
    #[default]
    Pass,
    /// Forward, but end each connection once this many bytes went towards
    /// the client over it: the client gets exactly that many bytes, then
    /// the end of the stream (as from a link that broke); the server's side
    /// is closed.
    CutAfter(u64),
    /// Forward towards the client at this many bytes per second (the other
    /// direction unchanged), as a congested or failing link would.
    Trickle(u64),
    /// Accept new connections and close them at once, before forwarding
    /// anything; open connections are ended at their next forwarded piece.
    Refuse,
}

/// A running proxy; stopped, with every thread joined, when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    state: Mutex<State>,
    /// Signalled on every mode change and when the proxy stops, so trickling
    /// connections see either at once.
    changed: Condvar,
    stopping: AtomicBool,
    to_client: AtomicU64,
    to_server: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Both sockets of every open connection, so drop can end them.
    open: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct State {
    mode: Mode,
    /// Increases with every change, so a waiting connection notices one.
    generation: u64,
}

/// Bytes read from one side before they are forwarded to the other.
const BUFFER: usize = 16 << 10;

impl Proxy {
    /// Starts a proxy forwarding to `target`, in [`Mode::Pass`]. It accepts
    /// connections on its address (any free loopback port) as soon as this
    /// returns.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let addr = listener.local_addr().expect("the listener's address");
        let shared = Arc::new(Shared {
            target,
            state: Mutex::new(State {
                mode: Mode::Pass,
                generation: 0,
            }),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            to_client: AtomicU64::new(0),
            to_server: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
        });
        let accepting = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("proxy-{addr}"))
            .spawn(move || accept_loop(listener, accepting))
            .expect("proxy thread");
        Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://ADDR`: the proxy as an HTTPS server's URL (TLS goes through
    /// it to the target).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Changes what the proxy does, at once.
    pub fn set(&self, mode: Mode) {
        let mut state = self.shared.lock_state();
        state.mode = mode;
        state.generation += 1;
        self.shared.changed.notify_all();
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.lock_state().mode
    }

    /// Bytes forwarded towards the clients so far, over all connections:
    /// handed to the kernel, so they include what still sits in socket
    /// buffers (which grow to MiBs on loopback when a client reads slower
    /// than the proxy forwards; [`Mode::Trickle`] keeps the proxy the
    /// slower side).
    pub fn bytes_to_client(&self) -> u64 {
        self.shared.to_client.load(Ordering::SeqCst)
    }

    /// Bytes forwarded towards the target so far, over all connections.
    pub fn bytes_to_server(&self) -> u64 {
        self.shared.to_server.load(Ordering::SeqCst)
    }

    /// Connections accepted so far, refused ones included.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections closed at once in [`Mode::Refuse`] so far.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        {
            let _state = self.shared.lock_state();
            self.shared.changed.notify_all();
        }
        // Wake the blocking accept; the acceptor sees `stopping` and ends
        // without forwarding this connection.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // No new connection can open now: end the open ones, which wakes
        // their threads from any read or write.
        for (client, server) in lock(&self.shared.open).values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn mode(&self) -> (Mode, u64) {
        let state = self.lock_state();
        (state.mode, state.generation)
    }

    /// Waits until `until`, returning early (with false) if the mode
    /// changed since `generation` or the proxy is stopping.
    fn pause(&self, until: Instant, generation: u64) -> bool {
        let mut state = self.lock_state();
        loop {
            if self.stopping.load(Ordering::SeqCst) || state.generation != generation {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            state = self
                .changed
                .wait_timeout(state, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn spawn(&self, name: String, f: impl FnOnce() + Send + 'static) {
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(f)
            .expect("proxy thread");
        let mut threads = lock(&self.threads);
        // Join what already ended, so a long test does not pile them up.
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut *threads)
            .into_iter()
            .partition(|t| t.is_finished());
        *threads = running;
        threads.push(thread);
        drop(threads);
        for t in done {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.mode().0 == Mode::Refuse {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(shared.target) else {
            // The target is down: the client sees its connection closed.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        let id = next_id;
        next_id += 1;
        lock(&shared.open).insert(id, (c3, s3));
        // The connection leaves `open` when both of its threads ended.
        let done = Arc::new(Closed {
            id,
            shared: shared.clone(),
        });
        let (up, down) = (shared.clone(), shared.clone());
        let (up_done, down_done) = (done.clone(), done);
        shared.spawn(format!("proxy-up-{id}"), move || {
            towards_server(&up, client, server);
            drop(up_done);
        });
        shared.spawn(format!("proxy-down-{id}"), move || {
            towards_client(&down, s2, c2);
            drop(down_done);
        });
    }
}

/// Removes its connection from [`Shared::open`] when dropped.
struct Closed {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Closed {
    fn drop(&mut self) {
        lock(&self.shared.open).remove(&self.id);
    }
}

/// Client to server, unchanged. Once the server's side is gone (the
/// connection was cut), whatever the client still sends is read and
/// dropped until it closes, so it reads every byte it was sent before the
/// cut instead of losing them to a reset.
fn towards_server(shared: &Shared, mut client: TcpStream, mut server: TcpStream) {
    let mut buf = vec![0u8; BUFFER];
    let mut forwarding = true;
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if forwarding {
            if server.write_all(&buf[..n]).is_ok() {
                shared.to_server.fetch_add(n as u64, Ordering::SeqCst);
            } else {
                forwarding = false;
            }
        }
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Write);
}

/// Server to client, in the current mode.
fn towards_client(shared: &Shared, mut server: TcpStream, mut client: TcpStream) {
    let mut buf = vec![0u8; BUFFER];
    let mut sent = 0u64;
    // Whether the connection is cut (rather than ended by the server).
    let cut = 'read: loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break false,
            Ok(n) => n,
        };
        let mut piece = &buf[..n];
        while !piece.is_empty() {
            if shared.stopping.load(Ordering::SeqCst) {
                break 'read true;
            }
            let (mode, generation) = shared.mode();
            let n = match mode {
                Mode::Pass => piece.len(),
                Mode::Refuse => break 'read true,
                Mode::CutAfter(limit) => {
                    let left = limit.saturating_sub(sent);
                    if left == 0 {
                        break 'read true;
                    }
                    piece.len().min(left as usize)
                }
                Mode::Trickle(rate) => {
                    // A twentieth of a second's worth at a time, at least
                    // one byte, each after the time its bytes take.
                    let rate = rate.max(1);
                    let n = piece.len().min((rate as usize / 20).max(1));
                    let wait = Duration::from_secs_f64(n as f64 / rate as f64);
                    if !shared.pause(Instant::now() + wait, generation) {
                        // The mode changed or the proxy stops: look again.
                        continue;
                    }
                    n
                }
            };
            if client.write_all(&piece[..n]).is_err() {
                break 'read true;
            }
            shared.to_client.fetch_add(n as u64, Ordering::SeqCst);
            sent += n as u64;
            piece = &piece[n..];
            if let Mode::CutAfter(limit) = mode
                && sent >= limit
            {
                break 'read true;
            }
        }
    };
    // The client gets the end of the stream after what was sent. A cut
    // also closes the server's side, which ends `towards_server`'s
    // forwarding; a server that ended its answer may still read what the
    // client sends.
    let _ = client.shutdown(Shutdown::Write);
    if cut {
        let _ = server.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers each of `connections` connections with
    /// `payload` and closes it; returns its address and the bytes it was
    /// sent, once it served them all.
    fn server(payload: Vec<u8>, connections: usize) -> (SocketAddr, JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let mut received = Vec::new();
            for _ in 0..connections {
                let (mut stream, _) = listener.accept().unwrap();
                // A write the proxy cut off fails; that is the point.
                let _ = stream.write_all(&payload);
                let _ = stream.shutdown(Shutdown::Write);
                let _ = stream.read_to_end(&mut received);
            }
            received
        });
        (addr, thread)
    }

    fn read_all(stream: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn passes_cuts_trickles_and_refuses() {
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (target, served) = server(payload.clone(), 3);
        let proxy = Proxy::start(target);

        // Pass: everything both ways, counted.
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut c), payload);
        assert_eq!(proxy.bytes_to_client(), 100_000);

        // Cut: exactly N bytes, then the end of the stream.
        proxy.set(Mode::CutAfter(1_000));
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        assert_eq!(read_all(&mut c), payload[..1_000]);
        assert_eq!(proxy.bytes_to_client(), 101_000);

        // Trickle: 20 kB/s, so 10 kB take about half a second; back to
        // pass, the rest comes at once.
        proxy.set(Mode::Trickle(20_000));
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        let started = Instant::now();
        let mut head = vec![0u8; 10_000];
        c.read_exact(&mut head).unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(2),
            "{took:?}"
        );
        proxy.set(Mode::Pass);
        let rest = read_all(&mut c);
        assert_eq!([head, rest].concat(), payload);
        drop(c);

        // Refuse: accepted and closed at once, the target never reached.
        proxy.set(Mode::Refuse);
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        assert!(read_all(&mut c).is_empty());
        assert_eq!(proxy.refused(), 1);
        assert_eq!(proxy.connections(), 4);

        assert_eq!(served.join().unwrap(), b"hello");
        assert!(proxy.bytes_to_server() >= 5);
    }

    #[test]
    fn dropping_it_ends_open_and_trickling_connections() {
        let (target, _served) = server(vec![7u8; 1 << 20], 1);
        let proxy = Proxy::start(target);
        proxy.set(Mode::Trickle(10));
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        let mut first = [0u8; 1];
        c.read_exact(&mut first).unwrap();
        let started = Instant::now();
        drop(proxy);
        assert!(started.elapsed() < Duration::from_secs(5));
        // The client sees its connection end.
        read_all(&mut c);
    }
}
