//! `shapeshard dev` from an empty directory: embedded Postgres, health turns
//! active once replication streams, SIGTERM stops everything cleanly.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{scratch_dir, wait_for};

fn health(port: u16) -> Option<(u16, String)> {
    match ureq::get(&format!("http://127.0.0.1:{port}/v1/health"))
        .timeout(Duration::from_secs(2))
        .call()
    {
        Ok(response) => {
            let status = response.status();
            Some((status, response.into_string().unwrap()))
        }
        Err(ureq::Error::Status(status, response)) => {
            Some((status, response.into_string().unwrap()))
        }
        Err(_) => None,
    }
}

#[test]
fn dev_mode_serves_health_and_stops_cleanly() {
    let dir = scratch_dir("dev");
    let port = shapeshard::devpg::free_port().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shapeshard"))
        .arg("dev")
        .env_remove("DATABASE_URL")
        .env("ELECTRIC_STORAGE_DIR", &dir)
        .env("ELECTRIC_PORT", port.to_string())
        .env("SHAPESHARD_PLACEMENT", "unbound")
        .env("SHAPESHARD_SHARDS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let (status, body) = wait_for("health to be active", Duration::from_secs(60), || {
        if let Ok(Some(exit)) = child.try_wait() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("server exited early ({exit}): {err}");
        }
        health(port).filter(|(status, _)| *status == 200)
    });
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"status":"active"}"#);
    let response = ureq::get(&format!("http://127.0.0.1:{port}/v1/health"))
        .call()
        .unwrap();
    assert_eq!(
        response.header("cache-control"),
        Some("no-cache, no-store, must-revalidate")
    );
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));

    let pid_file = dir.join("postgres").join("pgdata").join("postmaster.pid");
    let pg_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        unsafe { libc::kill(pg_pid, 0) },
        0,
        "embedded Postgres runs"
    );

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let exit = wait_for("the server to exit", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(exit.success(), "clean exit after SIGTERM, got {exit}");
    assert!(
        stdout.contains("DATABASE_URL=postgresql://"),
        "prints the URL: {stdout}"
    );
    assert!(
        !pid_file.exists(),
        "Postgres removed its pid file on a clean stop"
    );
    assert_ne!(
        unsafe { libc::kill(pg_pid, 0) },
        0,
        "no Postgres process left behind"
    );
    assert!(health(port).is_none(), "nothing listens any more");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_config_is_one_line_and_exit_code_two() {
    let output = Command::new(env!("CARGO_BIN_EXE_shapeshard"))
        .env("DATABASE_URL", "postgresql://u@127.0.0.1:1/db")
        .env_remove("ELECTRIC_SECRET")
        .env_remove("ELECTRIC_INSECURE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("ELECTRIC_SECRET"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_shapeshard"))
        .env(
            "DATABASE_URL",
            "postgresql://u@127.0.0.1:1/db?sslmode=bogus",
        )
        .env("ELECTRIC_INSECURE", "true")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("sslmode"), "{stderr}");
}
