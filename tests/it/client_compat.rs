//! Electric's own TypeScript client (`@electric-sql/client`, pinned in
//! `tests/client-compat/package.json`) syncing from the real server binary.
//! The cases live in `tests/client-compat/*.test.mjs` (node:test); this test
//! gives them a fresh database and server and fails with their output.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::database;
use crate::server::Server;

/// Small enough that a 1,000-row shape spans many chunks, so paging is
/// exercised; the suite reads the same value to bound page sizes.
const CHUNK_BYTES_THRESHOLD: &str = "10000";

/// Short, so the SSE cases see streams end and the client reconnect.
const SSE_TIMEOUT_MS: &str = "5000";

/// Per node:test case; the suite's own waits are 30 s (55 s around a 409).
const NODE_TEST_TIMEOUT_MS: u32 = 120_000;

/// The whole node run: above the sum of the cases' own timeouts, so only a
/// run that node cannot end by itself is killed rather than left to hang CI.
const NODE_RUN_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[test]
fn electric_client_syncs_from_shapeshard() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("client-compat");
    require_node();
    install_dependencies(&dir);
    let files = test_files(&dir);

    let db = database("client_compat");
    let server = Server::start(
        &db,
        &[
            (
                "ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD",
                CHUNK_BYTES_THRESHOLD,
            ),
            ("ELECTRIC_SSE_TIMEOUT", SSE_TIMEOUT_MS),
        ],
    );

    let mut command = Command::new("node");
    command
        .arg("--test")
        // The client keeps a 60 s timer (its up-to-date tracker's throttled
        // save) that would hold each file's process open after its tests end.
        .arg("--test-force-exit")
        // Files can run concurrently (unique tables), but one at a time keeps
        // a 2-core machine responsive for the server under test.
        .arg("--test-concurrency=1")
        .arg(format!("--test-timeout={NODE_TEST_TIMEOUT_MS}"))
        .args(&files)
        .current_dir(&dir)
        .env("SHAPESHARD_URL", server.base_url())
        .env("DATABASE_URL", &db.url)
        .env(
            "ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD",
            CHUNK_BYTES_THRESHOLD,
        )
        .env("ELECTRIC_SSE_TIMEOUT", SSE_TIMEOUT_MS);
    let run = run_bounded(command, NODE_RUN_TIMEOUT);
    server.stop();

    let report = format!(
        "node --test in {} ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        dir.display(),
        run.status,
        run.stdout,
        run.stderr
    );
    assert!(
        run.success,
        "Electric's client failed against shapeshard: {report}"
    );
    println!("{report}");
}

fn require_node() {
    fn missing(tool: &str, detail: String) -> ! {
        panic!(
            "the Electric client compatibility test needs Node.js 20 or newer with npm \
             ({tool}: {detail}); install Node 20 (for example `apt-get install nodejs npm`)"
        )
    }
    let output = match Command::new("node").arg("--version").output() {
        Ok(output) if output.status.success() => output,
        Ok(output) => missing("node", format!("`node --version` exited {}", output.status)),
        Err(e) => missing("node", e.to_string()),
    };
    let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        missing("node", format!("found {version}"));
    }
    match Command::new("npm").arg("--version").output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => missing("npm", format!("`npm --version` exited {}", output.status)),
        Err(e) => missing("npm", e.to_string()),
    }
}

/// `npm ci` unless node_modules was installed from the current lockfile
/// (npm writes `node_modules/.package-lock.json` at the end of an install).
fn install_dependencies(dir: &Path) {
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let lockfile = modified(dir.join("package-lock.json"))
        .unwrap_or_else(|| panic!("{} has no package-lock.json", dir.display()));
    if let Some(installed) = modified(dir.join("node_modules").join(".package-lock.json")) {
        if installed > lockfile {
            return;
        }
    }
    let mut command = Command::new("npm");
    command
        .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
        .current_dir(dir);
    let run = run_bounded(command, Duration::from_secs(10 * 60));
    assert!(
        run.success,
        "npm ci in {} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        dir.display(),
        run.status,
        run.stdout,
        run.stderr
    );
}

/// Listed explicitly: Node 20 does not expand globs itself.
fn test_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test.mjs in {}", dir.display());
    files
}

/// Read on a thread so a chatty child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

struct Run {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
}

/// Runs `command` to completion, or kills it after `timeout`. The child
/// leads its own process group so the kill also reaches the per-file
/// processes node's test runner spawns, which would otherwise keep running.
fn run_bounded(mut command: Command, timeout: Duration) -> Run {
    let program = format!("{command:?}");
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    match status {
        Some(status) => Run {
            success: status.success(),
            status: status.to_string(),
            stdout,
            stderr,
        },
        None => Run {
            success: false,
            status: format!("killed after {timeout:?}: {program}"),
            stdout,
            stderr,
        },
    }
}
