//! Ports for the processes the tests start: free ones, never handed out twice by one test
//! process; waiting until something listens; starting again when a chosen port was taken
//! between choosing and binding it.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Port blocks handed out by this test process, so that parallel tests never share one.
static RESERVED: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());

fn overlaps_reserved(start: u16, len: u16) -> bool {
    let end = start as u32 + len as u32;
    RESERVED.lock().unwrap().iter().any(|&(s, l)| (start as u32) < s as u32 + l as u32 && (s as u32) < end)
}

fn reserve(start: u16, len: u16) {
    RESERVED.lock().unwrap().push((start, len));
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A free loopback port chosen by the kernel (bind 127.0.0.1:0), not used by another helper of
/// this process.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        if !overlaps_reserved(port, 1) {
            reserve(port, 1);
            return port;
        }
    }
    panic!("no free loopback port found");
}

/// A base port such that `base..base + span` are all free on 127.0.0.1 and not handed out before
/// by this process. Bases are drawn at random in 20000..60000, avoiding the kernel's ephemeral
/// range (where outgoing connections take their ports) when it leaves room.
pub fn free_port_base(span: u16) -> u16 {
    assert!(span > 0 && span < 10_000, "unreasonable port span {span}");
    let (lo, hi) = candidate_range(span);
    for _ in 0..500 {
        let base = lo + (random_u64() % (hi - lo) as u64) as u16;
        if overlaps_reserved(base, span) {
            continue;
        }
        if (base..base + span).all(port_is_free) {
            reserve(base, span);
            return base;
        }
    }
    panic!("no block of {span} free ports found in {lo}..{hi}");
}

/// Bases to draw from: 20000..(60000 - span), minus the ephemeral range if it leaves enough room.
fn candidate_range(span: u16) -> (u16, u16) {
    let (lo, hi) = (20_000u16, 60_000 - span);
    let ephemeral = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok().and_then(|s| {
        let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
        Some((it.next()??, it.next()??))
    });
    match ephemeral {
        Some((eph_lo, _)) if eph_lo > lo + span + 1_000 => (lo, hi.min(eph_lo - span)),
        _ => (lo, hi),
    }
}

/// Whether `addr` accepts a TCP connection within 200 ms.
pub fn accepts(addr: &str) -> bool {
    let sock: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("bad address {addr}: {e}"));
    TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_ok()
}

/// Waits until `addr` accepts a TCP connection; false on timeout.
pub fn wait_for_port(addr: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if accepts(addr) {
            return true;
        }
        thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Whether a socket listens on `127.0.0.1:port` (or any IPv4 address), per `/proc/net/tcp`:
/// without connecting, so that the listener logs no probe connection.
pub fn listening(port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return wait_for_port(&format!("127.0.0.1:{port}"), Duration::from_millis(100));
    };
    let wanted = [format!("0100007F:{port:04X}"), format!("00000000:{port:04X}")];
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3 && fields[3] == "0A" && wanted.iter().any(|w| w == fields[1])
    })
}

/// Whether a start failure looks like a port taken between choosing and binding it.
fn port_taken(why: &str) -> bool {
    why.contains("AddrInUse") || why.contains("in use")
}

/// Runs `start` (which chooses its ports afresh each time) up to three times while it fails
/// because a port was taken meanwhile; panics with the reason on any other failure, or after the
/// third attempt.
pub fn with_port_retries<T>(what: &str, mut start: impl FnMut() -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..3 {
        match start() {
            Ok(started) => return started,
            Err(why) if port_taken(&why) => last = why,
            Err(why) => panic!("{what} did not start: {why}"),
        }
    }
    panic!("{what} did not start after 3 attempts: {last}");
}
