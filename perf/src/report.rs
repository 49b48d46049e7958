//! Report helpers: the machine a number was taken on, spreads over repeated
//! runs, and report files under `perf/reports/`.

use std::path::PathBuf;

/// Median and range of repeated measurements.
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut values: Vec<f64>) -> Spread {
        assert!(!values.is_empty(), "a spread needs at least one run");
        values.sort_by(|a, b| a.total_cmp(b));
        Spread {
            median: values[values.len() / 2],
            min: values[0],
            max: values[values.len() - 1],
        }
    }
}

pub struct Machine;

impl Machine {
    /// One line: cores, memory, kernel and the disk under the temp dir.
    pub fn describe() -> String {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mem_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| {
                        l.split_whitespace()
                            .nth(1)
                            .and_then(|v| v.parse::<u64>().ok())
                    })
            })
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1).map(|s| s.trim().to_string()))
            })
            .unwrap_or_else(|| "unknown CPU".into());
        format!(
            "machine: {cores} cores ({cpu}), {:.1} GiB RAM, Linux {}",
            mem_kib as f64 / 1024.0 / 1024.0,
            kernel.trim()
        )
    }
}

/// Writes `perf/reports/<name>-<unix time>.md` and returns its path.
pub fn write(name: &str, body: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reports");
    let _ = std::fs::create_dir_all(&dir);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = dir.join(format!("{name}-{stamp}.md"));
    if let Err(e) = std::fs::write(&path, body) {
        eprintln!("cannot write {}: {e}", path.display());
    } else {
        eprintln!("report written to {}", path.display());
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_median_and_range() {
        let s = Spread::of(vec![5.0, 1.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
    }
}
