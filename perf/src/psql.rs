//! Setting up a workload's tables with `psql` (quick, and what an operator
//! would use); panics with Postgres' message, as a benchmark cannot go on.

/// Runs `sql` on `url` and returns its output, unaligned and trimmed.
pub fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql on PATH");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The bench table (`id int8 PK, g int4, note text`, indexed on `g`).
pub fn create_bench_table(url: &str) {
    psql(
        url,
        "CREATE TABLE bench (id int8 PRIMARY KEY, g int4 NOT NULL, note text); CREATE INDEX bench_g ON bench (g)",
    );
}
