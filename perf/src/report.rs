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

/// The disk under the temp dir (where every workload keeps Postgres and the
/// server's storage): device, model, size, rotational or not.
pub fn disk() -> String {
    let out = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let tmp = std::env::temp_dir();
    let source = out("df", &["--output=source", tmp.to_str().unwrap_or("/tmp")]);
    let device = source.lines().last().unwrap_or("").trim().to_string();
    if !device.starts_with("/dev/") {
        return format!("{device} (no block device)");
    }
    let info = out("lsblk", &["-dno", "NAME,MODEL,SIZE,ROTA,TRAN", &device]);
    let name = device.trim_start_matches("/dev/");
    let model = std::fs::read_to_string(format!("/sys/block/{name}/device/model"))
        .map(|m| m.trim().to_string())
        .unwrap_or_default();
    let virtio = std::fs::read_link(format!("/sys/block/{name}/device/driver"))
        .map(|d| d.to_string_lossy().contains("virtio"))
        .unwrap_or(false);
    let mut parts: Vec<String> = info.split_whitespace().map(String::from).collect();
    if parts.is_empty() {
        parts.push(name.to_string());
    }
    format!(
        "{} ({}{}{})",
        device,
        if model.is_empty() {
            "model not reported".to_string()
        } else {
            model
        },
        if virtio { ", virtio" } else { "" },
        parts
            .get(parts.len().saturating_sub(2))
            .map(|rota| match rota.as_str() {
                "0" => ", non-rotational".to_string(),
                "1" => ", reported rotational".to_string(),
                _ => String::new(),
            })
            .unwrap_or_default()
            + &info
                .split_whitespace()
                .find(|w| w.ends_with('G') || w.ends_with('T'))
                .map(|s| format!(", {s}"))
                .unwrap_or_default()
    )
}

// ---------------------------------------------------------------- the run's report

/// One number of the run beside its limit: the summary table at the top of
/// the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Headline {
    pub workload: String,
    pub measure: String,
    pub ours: f64,
    /// `ms`, `changes/s`, `req/s`, …
    pub unit: String,
    /// The limit's name and value (same unit), measured in the same run.
    pub limit: Option<(String, f64)>,
    pub target: String,
    /// Latency: lower is better; throughput: higher.
    pub lower_is_better: bool,
    /// Requests that failed their checks while timed (counted, never timed
    /// as fast requests).
    pub errors: u64,
}

impl Headline {
    /// A latency in µs (shown in ms).
    pub fn latency(
        workload: &str,
        measure: &str,
        ours_us: u64,
        limit: Option<(&str, u64)>,
        target: &str,
    ) -> Headline {
        Headline {
            workload: workload.into(),
            measure: measure.into(),
            ours: ours_us as f64 / 1000.0,
            unit: "ms".into(),
            limit: limit.map(|(n, v)| (n.to_string(), v as f64 / 1000.0)),
            target: target.into(),
            lower_is_better: true,
            errors: 0,
        }
    }

    /// A rate (higher is better).
    pub fn rate(
        workload: &str,
        measure: &str,
        ours: f64,
        unit: &str,
        limit: Option<(&str, f64)>,
        target: &str,
    ) -> Headline {
        Headline {
            workload: workload.into(),
            measure: measure.into(),
            ours,
            unit: unit.into(),
            limit: limit.map(|(n, v)| (n.to_string(), v)),
            target: target.into(),
            lower_is_better: false,
            errors: 0,
        }
    }

    pub fn with_errors(mut self, errors: u64) -> Headline {
        self.errors = errors;
        self
    }

    /// ours ÷ limit.
    pub fn ratio(&self) -> Option<f64> {
        let (_, limit) = self.limit.as_ref()?;
        (*limit > 0.0).then(|| self.ours / limit)
    }

    /// One row of the summary table.
    pub fn row(&self) -> String {
        let (limit, ratio) = match (&self.limit, self.ratio()) {
            (Some((name, v)), Some(r)) => (
                format!("{} {} ({name})", number(*v), self.unit),
                format!(
                    "{r:.2}× ({})",
                    if self.lower_is_better {
                        "lower is better"
                    } else {
                        "higher is better"
                    }
                ),
            ),
            (Some((name, v)), None) => {
                (format!("{} {} ({name})", number(*v), self.unit), "–".into())
            }
            (None, _) => ("–".into(), "–".into()),
        };
        format!(
            "| {} | {} | {} {} | {} | {} | {} | {} |",
            self.workload,
            self.measure,
            number(self.ours),
            self.unit,
            limit,
            ratio,
            if self.errors == 0 {
                "0".to_string()
            } else {
                format!("**{}**", self.errors)
            },
            self.target
        )
    }
}

/// A number with sensible digits: 3 significant below 100, whole above.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// What one workload left for the report.
#[derive(Default)]
pub struct Section {
    pub workload: String,
    pub markdown: String,
    pub headlines: Vec<Headline>,
    /// Files written beside the report (relative to its directory).
    pub files: Vec<String>,
    /// Images to show in the report (relative paths).
    pub images: Vec<String>,
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    /// The server's own latency tables (`server_latency`).
    pub server: Vec<String>,
    pub seconds: f64,
}

struct Sink {
    dir: PathBuf,
    section: Section,
}

static SINK: std::sync::Mutex<Option<Sink>> = std::sync::Mutex::new(None);

/// Starts collecting a workload's output into `dir/<workload>/`.
pub fn begin(dir: &std::path::Path, workload: &str) {
    let _ = std::fs::create_dir_all(dir.join(workload));
    *SINK.lock().unwrap() = Some(Sink {
        dir: dir.to_path_buf(),
        section: Section {
            workload: workload.into(),
            ..Section::default()
        },
    });
}

/// Ends the workload: what it left.
pub fn end(markdown: String) -> Section {
    let mut section = SINK
        .lock()
        .unwrap()
        .take()
        .map(|s| s.section)
        .unwrap_or_default();
    section.markdown = markdown;
    section
}

fn with_sink<T>(f: impl FnOnce(&mut Sink) -> T) -> Option<T> {
    SINK.lock().unwrap().as_mut().map(f)
}

/// `dir/<workload>/<name>` and its path relative to the report.
fn sink_path(name: &str) -> Option<(PathBuf, String)> {
    with_sink(|s| {
        let rel = format!("{}/{name}", s.section.workload);
        (s.dir.join(&rel), rel)
    })
}

pub fn headline(h: Headline) {
    eprintln!("  headline: {}", h.row());
    with_sink(|s| s.section.headlines.push(h));
}

/// A correctness failure: the report says so, the run exits non-zero.
pub fn failure(text: String) {
    eprintln!("FAILURE: {text}");
    with_sink(|s| s.section.failures.push(text));
}

/// Something skipped or worth saying (a missing limit tool, …).
pub fn note(text: String) {
    eprintln!("note: {text}");
    with_sink(|s| s.section.notes.push(text));
}

/// The server's latency summaries from a `/metrics` page, as a markdown
/// table for the current workload (series with no samples left out).
pub fn server_latency(label: &str, metrics: &str) {
    if let Some(table) = server_latency_table(label, metrics) {
        with_sink(|s| s.section.server.push(table));
    }
}

/// One row per summary series (`name`, shard, kind): count and quantiles
/// in ms. None when the page has no samples at all.
pub fn server_latency_table(label: &str, metrics: &str) -> Option<String> {
    // (family, labels without quantile) → count, quantile → seconds.
    let mut rows: Vec<(String, String, u64, Vec<(String, f64)>)> = Vec::new();
    for line in metrics.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        let labels = labels.trim_end_matches('}');
        let Some(family) = name
            .strip_suffix("_duration_seconds_count")
            .or_else(|| name.strip_suffix("_duration_seconds"))
        else {
            continue;
        };
        let family = family.trim_start_matches("shapeshard_").to_string();
        let (rest, quantile): (Vec<&str>, Vec<&str>) =
            labels.split(',').partition(|l| !l.starts_with("quantile="));
        let key = rest.join(",");
        let index = match rows.iter().position(|r| r.0 == family && r.1 == key) {
            Some(i) => i,
            None => {
                rows.push((family.clone(), key.clone(), 0, Vec::new()));
                rows.len() - 1
            }
        };
        match quantile.first() {
            Some(q) => {
                let q = q
                    .trim_start_matches("quantile=")
                    .trim_matches('"')
                    .to_string();
                rows[index].3.push((q, value.parse().unwrap_or(f64::NAN)));
            }
            None if name.ends_with("_count") => rows[index].2 = value.parse().unwrap_or(0),
            None => {}
        }
    }
    rows.retain(|r| r.2 > 0);
    if rows.is_empty() {
        return None;
    }
    let mut out = format!(
        "Server-side latency ({label}; the server's own per-shard histograms, `/metrics`):\n\n| what | series | count | p50 ms | p90 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|---|---|\n"
    );
    for (family, key, count, quantiles) in rows {
        let cell = |q: &str| {
            quantiles
                .iter()
                .find(|(k, _)| k == q)
                .map_or("–".into(), |(_, v)| number(v * 1000.0))
        };
        out.push_str(&format!(
            "| {family} | {} | {count} | {} | {} | {} | {} |\n",
            key.replace('"', ""),
            cell("0.5"),
            cell("0.9"),
            cell("0.99"),
            cell("0.999"),
        ));
    }
    Some(out)
}

/// Writes `<name>.hgrm` (HdrHistogram percentile distribution, µs
/// recorded, ms shown) for the current workload.
pub fn histogram(name: &str, h: &hdrhistogram::Histogram<u64>) {
    if h.is_empty() {
        return;
    }
    let Some((path, rel)) = sink_path(&format!("{name}.hgrm")) else {
        return;
    };
    match std::fs::write(&path, hgrm(h)) {
        Ok(()) => {
            with_sink(|s| s.section.files.push(rel));
        }
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

/// HdrHistogram's percentile distribution text (as `outputPercentileDistribution`
/// with 5 ticks per half distance, values scaled µs → ms).
pub fn hgrm(h: &hdrhistogram::Histogram<u64>) -> String {
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / 1000.0;
        if q < 1.0 {
            out.push_str(&format!(
                "{value:12.3} {q:2.12} {total:10} {:14.2}\n",
                1.0 / (1.0 - q)
            ));
        } else {
            out.push_str(&format!("{value:12.3} {q:2.12} {total:10}\n"));
        }
    }
    out.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n#[Buckets = {:12}, SubBuckets     = {:12}]\n",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        h.max() as f64 / 1000.0,
        h.len(),
        h.buckets(),
        h.distinct_values(),
    ));
    out
}

/// p50/p90/p99/p99.9/max in ms and the count, as a table row's cells.
pub fn quantile_cells(h: &hdrhistogram::Histogram<u64>) -> String {
    if h.is_empty() {
        return "– | – | – | – | – | 0".into();
    }
    let ms = |us: u64| number(us as f64 / 1000.0);
    format!(
        "{} | {} | {} | {} | {} | {}",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        h.len()
    )
}

/// The header of a table whose rows end with [`quantile_cells`].
pub const QUANTILE_HEADER: &str = "p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | count";

/// A latency percentile plot (HdrHistogram style: log percentile axis) of
/// `curves` into `<name>.png`, shown in the report.
pub fn percentile_plot(name: &str, title: &str, curves: &[(&str, &hdrhistogram::Histogram<u64>)]) {
    let Some((path, rel)) = sink_path(&format!("{name}.png")) else {
        return;
    };
    match crate::plot::percentiles(&path, title, curves) {
        Ok(()) => {
            with_sink(|s| s.section.images.push(rel));
        }
        Err(e) => eprintln!("plot {}: {e}", path.display()),
    }
}

/// An x/y line plot (log x) into `<name>.png`, shown in the report.
pub fn xy_plot(name: &str, title: &str, x: &str, y: &str, series: &[(String, Vec<(f64, f64)>)]) {
    let Some((path, rel)) = sink_path(&format!("{name}.png")) else {
        return;
    };
    match crate::plot::xy(&path, title, x, y, series) {
        Ok(()) => {
            with_sink(|s| s.section.images.push(rel));
        }
        Err(e) => eprintln!("plot {}: {e}", path.display()),
    }
}

/// The whole run's report: header, summary table, every workload's section.
pub struct RunInfo {
    pub title: String,
    pub command: String,
    pub machine: String,
    pub disk: String,
    pub commit: String,
    pub started: String,
    pub seconds: f64,
    pub mode: String,
}

pub fn render_run(info: &RunInfo, sections: &[Section]) -> String {
    let mut out = format!(
        "# {}\n\n- command: `{}` ({} mode), started {}, took {:.0} s ({:.1} min)\n- {}\n- disk: {}\n- server: {}\n\n\
         Every workload starts its own throwaway Postgres and the release server, and measures its limit in the same run \
         on the same cores; the load generator shares the machine's cores with both. \
         Latencies are HDR histograms (µs, 3 significant digits); each has its `.hgrm` percentile file in the workload's folder. \
         A request whose check fails (status, headers, row count) is counted as an error, never timed as a fast request.\n\n",
        info.title,
        info.command,
        info.mode,
        info.started,
        info.seconds,
        info.seconds / 60.0,
        info.machine,
        info.disk,
        info.commit,
    );
    out.push_str(
        "## Summary\n\n| workload | measure | ours | limit (same run) | ours ÷ limit | errors | target |\n|---|---|---|---|---|---|---|\n",
    );
    for s in sections {
        for h in &s.headlines {
            out.push_str(&h.row());
            out.push('\n');
        }
    }
    out.push_str(&median_table(sections));
    let failures: Vec<&String> = sections.iter().flat_map(|s| &s.failures).collect();
    if !failures.is_empty() {
        out.push_str("\n**Failures:**\n\n");
        for f in failures {
            out.push_str(&format!("- {f}\n"));
        }
    }
    out.push_str("\n| workload | seconds | notes |\n|---|---|---|\n");
    for s in sections {
        out.push_str(&format!(
            "| [{}](#{}) | {:.0} | {} |\n",
            s.workload,
            s.workload,
            s.seconds,
            s.notes.join("; ")
        ));
    }
    for s in sections {
        out.push_str(&format!("\n---\n\n<a id=\"{}\"></a>\n\n", s.workload));
        // Workload sections start at `#`: one level down here.
        for line in s.markdown.lines() {
            if line.starts_with('#') {
                out.push('#');
            }
            out.push_str(line);
            out.push('\n');
        }
        for n in &s.notes {
            out.push_str(&format!("\n> note: {n}\n"));
        }
        for table in &s.server {
            out.push('\n');
            out.push_str(table);
        }
        for image in &s.images {
            out.push_str(&format!("\n![{image}]({image})\n"));
        }
        if !s.files.is_empty() {
            out.push_str(&format!(
                "\nPercentile files: {}\n",
                s.files
                    .iter()
                    .map(|f| format!("[{}]({f})", f.rsplit('/').next().unwrap_or(f)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    out
}

/// When a workload ran more than once (`perf run --repeat N`): each
/// measure's median over the runs, of ours, of its limit and of the
/// per-run ratio (each run's ratio is taken within that run, on the same
/// cores at the same time). Empty when nothing repeated.
pub fn median_table(sections: &[Section]) -> String {
    let mut groups: Vec<((String, String), Vec<&Headline>)> = Vec::new();
    for h in sections.iter().flat_map(|s| &s.headlines) {
        let key = (h.workload.clone(), h.measure.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, runs)) => runs.push(h),
            None => groups.push((key, vec![h])),
        }
    }
    if groups.iter().all(|(_, runs)| runs.len() < 2) {
        return String::new();
    }
    let mut out = String::from(
        "\n### Median of the runs\n\n| workload | measure | runs | ours (median, min–max) | limit (median) | ours ÷ limit (median of runs) | errors | target |\n|---|---|---|---|---|---|---|---|\n",
    );
    for ((workload, measure), runs) in groups.iter().filter(|(_, r)| r.len() >= 2) {
        let ours: Vec<f64> = runs.iter().map(|h| h.ours).collect();
        let limits: Vec<f64> = runs
            .iter()
            .filter_map(|h| h.limit.as_ref().map(|l| l.1))
            .collect();
        let ratios: Vec<f64> = runs.iter().filter_map(|h| h.ratio()).collect();
        let first = runs[0];
        let (lo, hi) = ours
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        out.push_str(&format!(
            "| {workload} | {measure} | {} | {} {} ({}–{}) | {} | {} | {} | {} |\n",
            runs.len(),
            number(median(&ours)),
            first.unit,
            number(lo),
            number(hi),
            match (&first.limit, limits.is_empty()) {
                (Some((name, _)), false) =>
                    format!("{} {} ({name})", number(median(&limits)), first.unit),
                _ => "–".into(),
            },
            if ratios.is_empty() {
                "–".into()
            } else {
                format!(
                    "{:.2}× ({})",
                    median(&ratios),
                    if first.lower_is_better {
                        "lower is better"
                    } else {
                        "higher is better"
                    }
                )
            },
            runs.iter().map(|h| h.errors).sum::<u64>(),
            first.target,
        ));
    }
    out
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_measures_get_their_median_row() {
        let run = |ours: f64, limit: f64| Section {
            headlines: vec![Headline::rate(
                "fanout",
                "p99",
                ours,
                "ms",
                Some(("loopback", limit)),
                "t",
            )],
            ..Section::default()
        };
        assert_eq!(
            median_table(&[run(1.0, 2.0)]),
            "",
            "one run: no median table"
        );
        let table = median_table(&[run(30.0, 10.0), run(10.0, 10.0), run(20.0, 5.0)]);
        // Ours 10/20/30 → 20; limits 10/10/5 → 10; ratios 3/1/4 → 3.
        assert!(
            table.contains("| fanout | p99 | 3 | 20.0 ms (10.0–30.0) | 10.0 ms (loopback) | 3.00×"),
            "{table}"
        );
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn server_latency_tables_keep_series_with_samples() {
        let page = "# TYPE shapeshard_request_duration_seconds summary\n\
            shapeshard_request_duration_seconds{shard=\"0\",kind=\"live\",quantile=\"0.5\"} 0.002\n\
            shapeshard_request_duration_seconds{shard=\"0\",kind=\"live\",quantile=\"0.99\"} 0.0125\n\
            shapeshard_request_duration_seconds_sum{shard=\"0\",kind=\"live\"} 0.5\n\
            shapeshard_request_duration_seconds_count{shard=\"0\",kind=\"live\"} 42\n\
            shapeshard_request_duration_seconds{shard=\"1\",kind=\"live\",quantile=\"0.5\"} 0\n\
            shapeshard_request_duration_seconds_count{shard=\"1\",kind=\"live\"} 0\n\
            shapeshard_commit_duration_seconds{shard=\"1\",quantile=\"0.5\"} 0.0009\n\
            shapeshard_commit_duration_seconds_count{shard=\"1\"} 7\n\
            shapeshard_fdatasyncs_total{shard=\"0\"} 9\n";
        let table = server_latency_table("phase", page).unwrap();
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert!(
            rows[1].starts_with("| request | shard=0,kind=live | 42 | 2.00 | – | 12.5 |"),
            "{table}"
        );
        assert!(
            rows[2].starts_with("| commit | shard=1 | 7 | 0.900 |"),
            "{table}"
        );
        assert!(!table.contains("shard=1,kind=live"), "{table}");
        assert_eq!(
            server_latency_table("x", "shapeshard_fdatasyncs_total 3\n"),
            None
        );
    }

    #[test]
    fn hgrm_is_hdrhistogram_percentile_text() {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap();
        }
        let text = hgrm(&h);
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        // µs recorded, ms written; the last row is the 100th percentile
        // with every count.
        let last = rows.last().unwrap();
        assert_eq!(last[0], "10.007");
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "1000");
        let median = rows.iter().find(|r| r[1] == "0.500000000000").unwrap();
        assert!(median[0].starts_with("5.00"), "{median:?}");
        assert!(text.contains("Total count    =         1000"));
    }

    #[test]
    fn headlines_print_the_ratio_to_their_limit() {
        let h = Headline::rate(
            "w",
            "syncs/s",
            800.0,
            "syncs/s",
            Some(("nginx", 1000.0)),
            "≥ 0.8×",
        );
        assert_eq!(h.ratio(), Some(0.8));
        assert!(
            h.row()
                .contains("| 800 syncs/s | 1000 syncs/s (nginx) | 0.80× (higher is better) | 0 |"),
            "{}",
            h.row()
        );
        let l =
            Headline::latency("w", "p99", 2_500, Some(("commit p99", 1_000)), "").with_errors(3);
        assert!(
            l.row()
                .contains("| 2.50 ms | 1.00 ms (commit p99) | 2.50× (lower is better) | **3** |"),
            "{}",
            l.row()
        );
        let none = Headline::latency("w", "p99", 2_500, None, "");
        assert!(none.row().contains("| – | – |"));
    }

    #[test]
    fn the_run_report_has_summary_sections_and_files() {
        let dir = std::env::temp_dir().join(format!("perf-report-test-{}", std::process::id()));
        begin(&dir, "demo");
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        h.record(1500).unwrap();
        histogram("lat", &h);
        headline(Headline::latency(
            "demo",
            "p99",
            1500,
            Some(("limit", 500)),
            "≤ 1 ms",
        ));
        note("nginx not found".into());
        failure("demo: 2 checks failed".into());
        let mut section = end("# Demo\n\nbody\n## Sub\n".into());
        section.seconds = 12.0;
        assert!(dir.join("demo/lat.hgrm").exists());
        let info = RunInfo {
            title: "t".into(),
            command: "cargo run -p perf --release -- run demo".into(),
            machine: "m".into(),
            disk: "d".into(),
            commit: "c".into(),
            started: "s".into(),
            seconds: 90.0,
            mode: "quick".into(),
        };
        let md = render_run(&info, &[section]);
        assert!(md.contains("| demo | p99 | 1.50 ms | 0.500 ms (limit) | 3.00× (lower is better) | 0 | ≤ 1 ms |"), "{md}");
        assert!(md.contains("**Failures:**\n\n- demo: 2 checks failed"));
        assert!(
            md.contains("## Demo") && md.contains("### Sub"),
            "workload headings one level down"
        );
        assert!(md.contains("[lat.hgrm](demo/lat.hgrm)"));
        assert!(md.contains("> note: nginx not found"));
        assert!(md.contains("took 90 s (1.5 min)"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn spread_takes_median_and_range() {
        let s = Spread::of(vec![5.0, 1.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
    }
}
