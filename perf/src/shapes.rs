//! `g = k` shapes on the bench table over HTTP: creating many with a pool
//! of client threads, and reading one back with its handle and offset.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Creates shape `g = k` on the bench table (or finds it), from the start.
pub fn shape_url(base: &str, k: usize) -> String {
    format!("{base}/v1/shape?table=bench&offset=-1&where=g%20%3D%20{k}")
}

/// Reads shape `g = k` from `at`.
pub fn read_url(base: &str, k: usize, at: &ShapeAt) -> String {
    format!(
        "{base}/v1/shape?table=bench&where=g%20%3D%20{k}&offset={}&handle={}",
        at.offset, at.handle
    )
}

/// Creates the bench table's shape `where_sql` (or finds it), from the start.
pub fn where_url(base: &str, where_sql: &str) -> String {
    format!(
        "{base}/v1/shape?table=bench&offset=-1&where={}",
        crate::bench::encode(where_sql)
    )
}

/// Reads the bench table's shape `where_sql` from `at`.
pub fn where_read_url(base: &str, where_sql: &str, at: &ShapeAt) -> String {
    format!(
        "{base}/v1/shape?table=bench&where={}&offset={}&handle={}",
        crate::bench::encode(where_sql),
        at.offset,
        at.handle
    )
}

/// A shape's handle and the offset a reply ended at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeAt {
    pub handle: String,
    pub offset: String,
}

/// One shape reply: status and the Electric headers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub at: Option<ShapeAt>,
    pub up_to_date: bool,
    pub body: String,
}

/// One GET, its body read; any status is a reply, a transport error is
/// `Err`.
pub fn get(agent: &ureq::Agent, url: &str) -> Result<Reply, Box<ureq::Transport>> {
    let response = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => return Err(Box::new(t)),
    };
    let status = response.status();
    let at = match (
        response.header("electric-handle"),
        response.header("electric-offset"),
    ) {
        (Some(h), Some(o)) => Some(ShapeAt {
            handle: h.into(),
            offset: o.into(),
        }),
        _ => None,
    };
    let up_to_date = response.header("electric-up-to-date").is_some();
    let mut body = String::new();
    let _ = response.into_reader().read_to_string(&mut body);
    Ok(Reply {
        status,
        at,
        up_to_date,
        body,
    })
}

/// GET until the reply is not a 503 (admission control: retry, after 50 ms
/// rather than the whole retry-after, as a herd of clients would spread).
pub fn get_admitted(agent: &ureq::Agent, url: &str) -> Reply {
    loop {
        match get(agent, url) {
            Ok(reply) if reply.status == 503 => std::thread::sleep(Duration::from_millis(50)),
            Ok(reply) => return reply,
            Err(e) => panic!("GET {url}: {e}"),
        }
    }
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

/// Runs `f(agent, k)` for every `k` in `range` on `concurrency` client
/// threads (one HTTP agent each), printing progress every 5 s under
/// `what`; results in `range` order.
pub fn for_each<T: Send>(
    what: &str,
    range: std::ops::Range<usize>,
    concurrency: usize,
    f: impl Fn(&ureq::Agent, usize) -> T + Sync,
) -> Vec<T> {
    let total = range.len();
    let next = AtomicUsize::new(range.start);
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    let mut results: Vec<(usize, T)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                let (next, done, end, f) = (&next, &done, range.end, &f);
                scope.spawn(move || {
                    let agent = agent();
                    let mut out = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= end {
                            return out;
                        }
                        out.push((k, f(&agent, k)));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let mut last = Instant::now();
        while workers.iter().any(|w| !w.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
            if last.elapsed() >= Duration::from_secs(5) {
                last = Instant::now();
                let n = done.load(Ordering::Relaxed);
                eprintln!(
                    "  {what}: {n}/{total} ({:.0}/s)",
                    n as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    results.sort_by_key(|(k, _)| *k);
    results.into_iter().map(|(_, t)| t).collect()
}

pub struct Creation {
    pub new_shapes: usize,
    pub seconds: f64,
    /// Request → reply, µs (503 retries included).
    pub latency: Histogram<u64>,
    /// Where each creation's first reply ended, in `range` order.
    pub shapes: Vec<ShapeAt>,
}

/// Creates the shapes `g = k` for `k` in `range`, `concurrency` requests in
/// flight, printing progress every 5 s. Every creation must answer 200.
pub fn create_shapes(base: &str, range: std::ops::Range<usize>, concurrency: usize) -> Creation {
    create_shapes_where(base, range, concurrency, &|k| format!("g = {k}"))
}

/// [`create_shapes`] with shapes `where_sql(k)` on the bench table.
pub fn create_shapes_where(
    base: &str,
    range: std::ops::Range<usize>,
    concurrency: usize,
    where_sql: &(dyn Fn(usize) -> String + Sync),
) -> Creation {
    let total = range.len();
    eprintln!(
        "creating shapes {} .. {} ({total}, {concurrency} at a time)",
        where_sql(range.start),
        where_sql(range.end.saturating_sub(1))
    );
    let started = Instant::now();
    let replies = for_each("created", range, concurrency, |agent, k| {
        let t = Instant::now();
        let reply = get_admitted(agent, &where_url(base, &where_sql(k)));
        let micros = t.elapsed().as_micros() as u64;
        assert_eq!(
            reply.status,
            200,
            "creating shape {}: {}",
            where_sql(k),
            reply.body
        );
        (micros, reply.at.expect("electric-handle and -offset"))
    });
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "  {total} shapes in {seconds:.1} s ({:.0}/s)",
        total as f64 / seconds
    );
    let mut latency = Histogram::<u64>::new(3).unwrap();
    let mut shapes = Vec::with_capacity(total);
    for (micros, at) in replies {
        latency.record(micros).unwrap();
        shapes.push(at);
    }
    Creation {
        new_shapes: total,
        seconds,
        latency,
        shapes,
    }
}
