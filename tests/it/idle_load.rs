//! Idle costs nothing but memory: 10,000 idle connections, then 10,000
//! parked long-polls, each held while the server's CPU and resident memory
//! are sampled. Bounds: under 5 % of a core above the idle server's own,
//! under 64 KiB of resident memory per connection (the figures are
//! printed).
//! The two sets run one after the other so both sides stay under a 20,000
//! descriptor limit.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::database;
use crate::server::Server;
use crate::shape_client::ShapeClient;

const CONNECTIONS: usize = 10_000;
const MAX_BYTES_PER_CONNECTION: u64 = 64 * 1024;

/// The process's CPU seconds (user + system) and resident bytes.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    (ticks as f64 / hz, rss_kb * 1024)
}

/// Raises this process's descriptor limit as far as allowed; the number
/// of connections that fit.
fn room_for_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    (limit.rlim_cur as usize)
        .saturating_sub(1_000)
        .min(CONNECTIONS)
}

/// The server's CPU, as a share of one core, over three seconds.
fn cpu_share(pid: u32) -> f64 {
    let (before, _) = usage(pid);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let (after, _) = usage(pid);
    (after - before) / started.elapsed().as_secs_f64()
}

/// Holds `sockets` while measuring: (CPU share of one core above the idle
/// server's `base_cpu`, resident bytes per connection above `base_rss`).
fn measure(server: &Server, sockets: &[TcpStream], base_cpu: f64, base_rss: u64) -> (f64, u64) {
    let pid = server.pid();
    // Let accepting and parking settle.
    crate::harness::wait_for(
        "the connections to be held",
        Duration::from_secs(30),
        || (server.metric("shapeshard_http_connections") as usize >= sockets.len()).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let share = cpu_share(pid);
    let (_, rss) = usage(pid);
    (
        share - base_cpu,
        rss.saturating_sub(base_rss) / sockets.len() as u64,
    )
}

#[test]
fn idle_connections_and_parked_long_polls_cost_no_cpu() {
    let count = room_for_connections();
    assert!(count >= 1_000, "descriptor limit too low for this test");
    let db = database("idle_load");
    db.client()
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1);")
        .unwrap();
    let server = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "40000"),
            ("ELECTRIC_TCP_READ_TIMEOUT", "120000"),
            (
                "ELECTRIC_MAX_CONCURRENT_REQUESTS",
                r#"{"initial": 300, "existing": 30000}"#,
            ),
        ],
    );
    let mut client = ShapeClient::new("table=items");
    client.sync(&server).unwrap();
    // The server idle with no clients (its group commit ticks, timers).
    let base_cpu = cpu_share(server.pid());
    let (_, base_rss) = usage(server.pid());
    eprintln!("idle server: {:.2}% of a core", base_cpu * 100.0);
    let addr = ("127.0.0.1", server.port);

    // Idle keep-alive connections: accepted, nothing sent.
    let idle: Vec<TcpStream> = (0..count)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let (cpu, per_connection) = measure(&server, &idle, base_cpu, base_rss);
    assert!(
        cpu < 0.05,
        "{count} idle connections took {:.1}% of a core",
        cpu * 100.0
    );
    assert!(
        per_connection < MAX_BYTES_PER_CONNECTION,
        "{per_connection} resident bytes per idle connection"
    );
    eprintln!(
        "{count} idle connections: {:.2}% of a core, {per_connection} B each",
        cpu * 100.0
    );
    drop(idle);
    crate::harness::wait_for(
        "the idle connections to close",
        Duration::from_secs(30),
        || (server.metric("shapeshard_http_connections") < 10).then_some(()),
    );

    // Parked long-polls on one shape: nothing changes, nobody is answered.
    let request = format!(
        "GET /v1/shape?table=items&offset={}&handle={}&live=true HTTP/1.1\r\nHost: test\r\n\r\n",
        client.offset,
        client.handle.clone().unwrap()
    );
    let polls: Vec<TcpStream> = (0..count)
        .map(|_| {
            let mut socket = TcpStream::connect(addr).unwrap();
            socket.write_all(request.as_bytes()).unwrap();
            socket
        })
        .collect();
    let (cpu, per_poll) = measure(&server, &polls, base_cpu, base_rss);
    assert!(
        cpu < 0.05,
        "{count} parked long-polls took {:.1}% of a core",
        cpu * 100.0
    );
    assert!(
        per_poll < MAX_BYTES_PER_CONNECTION,
        "{per_poll} resident bytes per parked long-poll"
    );
    eprintln!(
        "{count} parked long-polls: {:.2}% of a core, {per_poll} B each",
        cpu * 100.0
    );
    // Still serving: a change reaches a new client promptly.
    db.client()
        .batch_execute("INSERT INTO items VALUES (2)")
        .unwrap();
    crate::harness::wait_for("the change", Duration::from_secs(30), || {
        client.sync(&server).unwrap();
        (client.rows.len() == 2).then_some(())
    });
    drop(polls);
}
