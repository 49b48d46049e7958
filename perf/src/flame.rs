//! `--flamegraph`: `perf record -e cpu-clock -g` of the server process
//! while a workload runs (re-attached when the workload restarts the
//! server), folded and rendered with `inferno` into an SVG, and the frames
//! that took the most samples, for the report.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Sampling frequency (Hz) of the software clock.
const FREQUENCY: &str = "499";

/// Whether `perf` runs here, or what to install.
pub fn available() -> Result<(), String> {
    match Command::new("perf").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(
            "`perf` not found: install the Debian package `linux-perf` for flamegraphs; skipped"
                .into(),
        ),
    }
}

pub struct Recorder {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<PathBuf>>,
}

fn record(pid: i32, out: &Path) -> Option<Child> {
    Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", FREQUENCY, "-g", "-o"])
        .arg(out)
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

fn finish(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
}

impl Recorder {
    /// Records whichever server the workload has running, into `dir`.
    pub fn start(dir: &Path) -> Recorder {
        let _ = std::fs::create_dir_all(dir);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, dir) = (stop.clone(), dir.to_path_buf());
            std::thread::spawn(move || {
                let mut files = Vec::new();
                let mut current: Option<(i32, Child)> = None;
                loop {
                    let stopping = stop.load(Ordering::Relaxed);
                    let pid = if stopping {
                        0
                    } else {
                        crate::server::current_pid()
                    };
                    if current.as_ref().map_or(0, |(p, _)| *p) != pid {
                        if let Some((_, mut child)) = current.take() {
                            finish(&mut child);
                        }
                        if pid > 0 {
                            let out = dir.join(format!("perf-{}.data", files.len()));
                            if let Some(child) = record(pid, &out) {
                                files.push(out);
                                current = Some((pid, child));
                            }
                        }
                    }
                    if stopping {
                        return files;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Recorder { stop, thread }
    }

    /// Stops recording; folds every recording into one SVG at `svg`.
    pub fn finish(self, title: &str, svg: &Path) -> Result<Summary, String> {
        self.stop.store(true, Ordering::Relaxed);
        let files = self.thread.join().map_err(|_| "recorder panicked")?;
        let mut folded = Vec::new();
        for f in &files {
            let Ok(meta) = std::fs::metadata(f) else {
                continue;
            };
            if meta.len() == 0 {
                continue;
            }
            let mut script = Command::new("perf")
                .args(["script", "--no-inline", "-i"])
                .arg(f)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("perf script: {e}"))?;
            let stdout = script.stdout.take().unwrap();
            let mut folder =
                inferno::collapse::perf::Folder::from(inferno::collapse::perf::Options::default());
            use inferno::collapse::Collapse;
            folder
                .collapse(BufReader::new(stdout), &mut folded)
                .map_err(|e| format!("collapse: {e}"))?;
            let _ = script.wait();
            let _ = std::fs::remove_file(f);
        }
        let text = String::from_utf8_lossy(&folded).to_string();
        if text.trim().is_empty() {
            return Err("no samples recorded".into());
        }
        if let Some(parent) = svg.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let mut options = inferno::flamegraph::Options::default();
        options.title = title.to_string();
        // cpu-clock samples are weighted by their period: nanoseconds.
        options.count_name = "ns".into();
        let file = std::fs::File::create(svg).map_err(|e| format!("{}: {e}", svg.display()))?;
        inferno::flamegraph::from_lines(&mut options, text.lines(), std::io::BufWriter::new(file))
            .map_err(|e| format!("flamegraph: {e}"))?;
        Ok(Summary::of(&text))
    }
}

/// The most sampled frames of folded stacks.
#[derive(Debug, PartialEq)]
pub struct Summary {
    pub samples: u64,
    /// Leaf frames (self time): name, samples.
    pub leaves: Vec<(String, u64)>,
    /// Threads (the first frame: the thread's name): name, samples.
    pub threads: Vec<(String, u64)>,
}

impl Summary {
    /// From folded stacks (`thread;frame;…;leaf count` lines).
    pub fn of(folded: &str) -> Summary {
        use std::collections::HashMap;
        let mut leaves: HashMap<String, u64> = HashMap::new();
        let mut threads: HashMap<String, u64> = HashMap::new();
        let mut samples = 0;
        for line in folded.lines() {
            let Some((stack, count)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(count) = count.trim().parse::<u64>() else {
                continue;
            };
            samples += count;
            let mut frames = stack.split(';');
            let thread = frames.next().unwrap_or("?");
            let leaf = stack.rsplit(';').next().unwrap_or("?");
            *threads.entry(thread.to_string()).or_default() += count;
            *leaves.entry(leaf.to_string()).or_default() += count;
        }
        let top = |m: HashMap<String, u64>, n: usize| {
            let mut v: Vec<(String, u64)> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v.truncate(n);
            v
        };
        Summary {
            samples,
            leaves: top(leaves, 10),
            threads: top(threads, 6),
        }
    }

    /// A paragraph for the report.
    pub fn markdown(&self, svg_link: &str) -> String {
        let pct = |n: u64| 100.0 * n as f64 / self.samples.max(1) as f64;
        let mut out = format!(
            "\n**Flamegraph** of the server ([{svg_link}]({svg_link}); `perf record -e cpu-clock -F {FREQUENCY} -g`, {:.1} s of server CPU sampled over the whole workload, setup included). \
             Busiest threads: {}. Top frames by self time:\n\n| frame | CPU ms | share |\n|---|---|---|\n",
            self.samples as f64 / 1e9,
            self.threads
                .iter()
                .map(|(t, n)| format!("`{t}` {:.0} %", pct(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (frame, n) in &self.leaves {
            let short: String = frame.chars().take(110).collect();
            out.push_str(&format!(
                "| `{}` | {:.0} | {:.1} % |\n",
                short.replace('|', "\\|"),
                *n as f64 / 1e6,
                pct(*n)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_leaves_and_threads() {
        let folded = "shard-0;main;apply;encode 30\nshard-0;main;apply 10\nshard-1;main;encode 20\ningest;decode 35\n";
        let s = Summary::of(folded);
        assert_eq!(s.samples, 95);
        assert_eq!(s.leaves[0], ("encode".to_string(), 50));
        assert_eq!(s.leaves[1], ("decode".to_string(), 35));
        assert_eq!(s.threads[0], ("shard-0".to_string(), 40));
        let md = s.markdown("x.svg");
        assert!(md.contains("| `encode` | 0 | 52.6 % |"), "{md}");
    }
}
