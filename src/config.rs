//! Configuration: Electric's environment variables where they exist, a clap
//! flag for each, validated up front. Bad config is one actionable line on
//! stderr and exit code 2.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Parser, Subcommand, ValueEnum};

use crate::pg::connstr::ConnConfig;

/// Exit code for invalid configuration (as clap uses for bad arguments).
pub const EXIT_BAD_CONFIG: i32 = 2;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "shapeshard",
    version,
    about = "Thread-per-core Postgres sync server speaking Electric's HTTP Shape API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub options: Options,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Run against an embedded throwaway Postgres (initdb'd into the storage
    /// directory), even when DATABASE_URL is set.
    Dev,
    /// Run the server (the default). Without DATABASE_URL it starts an
    /// embedded Postgres, as `dev` does.
    Serve,
    /// Check the configuration and Postgres (reachable, wal_level=logical,
    /// a role that may replicate and create the publication) without
    /// starting; prints what is wrong, exits 0 when all is well, 2 if not.
    CheckConfig,
    /// Move every shape of a cleanly stopped storage directory to its owner
    /// under a new shard count (the server must be stopped); start the
    /// server with the same --shards afterwards.
    Rehome {
        /// The new number of shards.
        #[arg(long)]
        shards: usize,
        /// The storage directory to re-home.
        #[arg(long, env = "ELECTRIC_STORAGE_DIR", default_value = "./persistent")]
        storage_dir: PathBuf,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Postgres connection string (URL or key=value). Unset: an embedded
    /// Postgres is started in the storage directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// A second URL for snapshot and catalog queries (a pooler, say); the
    /// replication stream always uses DATABASE_URL. Electric's legacy name
    /// ELECTRIC_QUERY_DATABASE_URL is read too.
    #[arg(long, env = "ELECTRIC_POOLED_DATABASE_URL", hide_env_values = true)]
    pub pooled_database_url: Option<String>,

    /// Electric closes an idle replication connection after this long
    /// (scale to zero); shapeshard keeps the stream connected, so only 0
    /// (Electric's default, disabled) is accepted.
    #[arg(long, env = "ELECTRIC_REPLICATION_IDLE_TIMEOUT", default_value = "0")]
    pub replication_idle_timeout: String,

    /// Seconds a Postgres connection may be idle before TCP keepalive
    /// probes start (unless the URL sets `keepalives_idle`); OS default.
    #[arg(long, env = "ELECTRIC_DATABASE_TCP_KEEPALIVE_IDLE")]
    pub database_tcp_keepalive_idle: Option<u32>,

    /// Seconds between keepalive probes (URL: `keepalives_interval`).
    #[arg(long, env = "ELECTRIC_DATABASE_TCP_KEEPALIVE_INTERVAL")]
    pub database_tcp_keepalive_interval: Option<u32>,

    /// Unanswered probes before the connection is dropped (URL:
    /// `keepalives_count`).
    #[arg(long, env = "ELECTRIC_DATABASE_TCP_KEEPALIVE_COUNT")]
    pub database_tcp_keepalive_count: Option<u32>,

    /// PEM file of the certificate authorities that sign Postgres' TLS
    /// certificate (used unless the URL names `sslrootcert`); without it
    /// the system's roots are trusted.
    #[arg(long, env = "ELECTRIC_DATABASE_CA_CERTIFICATE_FILE")]
    pub database_ca_certificate_file: Option<std::path::PathBuf>,

    /// HTTP port every shard listens on (SO_REUSEPORT).
    #[arg(long, env = "ELECTRIC_PORT", default_value_t = 3000)]
    pub port: u16,

    /// Address to listen on (default 0.0.0.0, or :: with
    /// ELECTRIC_LISTEN_ON_IPV6).
    #[arg(long, env = "SHAPESHARD_LISTEN_ADDRESS")]
    pub listen_address: Option<IpAddr>,

    /// Listen on IPv6 (`::`, which takes IPv4 too where the system allows
    /// dual-stack sockets) unless SHAPESHARD_LISTEN_ADDRESS says otherwise.
    #[arg(long, env = "ELECTRIC_LISTEN_ON_IPV6", value_parser = BoolishValueParser::new(), default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub listen_on_ipv6: bool,

    /// Try Postgres hosts' IPv6 addresses first (IPv4 stays the fallback).
    #[arg(long, env = "ELECTRIC_DATABASE_USE_IPV6", value_parser = BoolishValueParser::new(), default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub database_use_ipv6: bool,

    /// Where shard logs, metadata and the embedded Postgres live.
    #[arg(long, env = "ELECTRIC_STORAGE_DIR", default_value = "./persistent")]
    pub storage_dir: PathBuf,

    /// Secret clients must send as `secret` (or `api_secret`).
    #[arg(long, env = "ELECTRIC_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Serve without a secret. Never in production.
    #[arg(long, env = "ELECTRIC_INSECURE", value_parser = BoolishValueParser::new(), default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub insecure: bool,

    /// Suffix of the replication slot and publication names
    /// (`electric_slot_<id>`, `electric_publication_<id>`).
    #[arg(
        long,
        env = "ELECTRIC_REPLICATION_STREAM_ID",
        default_value = "default"
    )]
    pub replication_stream_id: String,

    /// debug, info, warning or error (or a tracing filter directive).
    #[arg(long, env = "ELECTRIC_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    #[arg(long, env = "SHAPESHARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Number of shards (one executor each). Default: one per available core.
    #[arg(long, env = "SHAPESHARD_SHARDS")]
    pub shards: Option<usize>,

    /// `pinned` runs shard i on core i; `unbound` lets the kernel place them
    /// (for tests that run several servers on the same cores).
    #[arg(long, env = "SHAPESHARD_PLACEMENT", value_enum, default_value_t = PlacementArg::Pinned)]
    pub placement: PlacementArg,

    /// Milliseconds between standby status updates sent to Postgres.
    #[arg(long, env = "SHAPESHARD_STATUS_INTERVAL_MS", default_value_t = 1000)]
    pub status_interval_ms: u64,

    /// Milliseconds a live request waits for changes before answering
    /// up-to-date.
    #[arg(long, env = "ELECTRIC_LONG_POLL_TIMEOUT", default_value_t = 20_000)]
    pub long_poll_timeout: u64,

    /// Milliseconds an SSE live response stays open (the client reconnects).
    #[arg(long, env = "ELECTRIC_SSE_TIMEOUT", default_value_t = 60_000)]
    pub sse_timeout: u64,

    /// Milliseconds a client connection may sit with no request being
    /// handled and no byte moving (an idle keep-alive, a slow request head,
    /// a client that stopped reading) before it is dropped.
    #[arg(long, env = "ELECTRIC_TCP_READ_TIMEOUT", default_value_t = 60_000)]
    pub tcp_read_timeout: u64,

    /// Milliseconds of silence after which an SSE stream sends a
    /// `: keep-alive` comment (Electric: 21000).
    #[arg(long, env = "SHAPESHARD_SSE_KEEPALIVE_MS", default_value_t = 21_000)]
    pub sse_keepalive_ms: u64,

    /// Bytes after which a shape's log starts a new chunk (one response).
    #[arg(long, env = "ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD", default_value_t = 10 * 1024 * 1024)]
    pub chunk_bytes_threshold: usize,

    /// Bytes per shard of sealed-chunk response bodies kept in memory and
    /// shared by every request for them (0 disables the cache).
    #[arg(long, env = "SHAPESHARD_CHUNK_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub chunk_cache_bytes: usize,

    /// Allow `DELETE /v1/shape` (as Electric, for integration tests).
    #[arg(long, env = "ELECTRIC_ENABLE_INTEGRATION_TESTING", value_parser = BoolishValueParser::new(), default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_integration_testing: bool,

    /// `max-age` of cacheable non-live responses, seconds.
    #[arg(long, env = "ELECTRIC_CACHE_MAX_AGE", default_value_t = 60)]
    pub cache_max_age: u32,

    /// `stale-while-revalidate` of cacheable non-live responses, seconds.
    #[arg(long, env = "ELECTRIC_CACHE_STALE_AGE", default_value_t = 300)]
    pub cache_stale_age: u32,

    /// The stack id salting subquery shapes' tags (Electric's name and
    /// default: equal tags to Electric's for the same handle).
    #[arg(long, env = "ELECTRIC_DATABASE_ID", default_value = "single_stack")]
    pub database_id: String,

    /// Transactions a subquery shape holds while a move-in query runs;
    /// over it the shape is invalidated (clients re-sync).
    #[arg(
        long,
        env = "ELECTRIC_SUBQUERY_BUFFER_MAX_TRANSACTIONS",
        default_value_t = 1000
    )]
    pub subquery_buffer_max_transactions: usize,

    /// Postgres connections per shard for catalog reads and snapshots.
    #[arg(long, env = "SHAPESHARD_SNAPSHOT_POOL_SIZE", default_value_t = 4)]
    pub snapshot_pool_size: usize,

    /// Most shapes kept (0 = unlimited); beyond it the least recently read
    /// are evicted and their clients re-sync.
    #[arg(long, env = "ELECTRIC_MAX_SHAPES", default_value_t = 0)]
    pub max_shapes: usize,

    /// Group commit tick of each shard's segment log, milliseconds.
    #[arg(long, env = "SHAPESHARD_FLUSH_INTERVAL_MS", default_value_t = 5)]
    pub flush_interval_ms: u64,

    /// Pending bytes that trigger a group commit before the tick.
    #[arg(long, env = "SHAPESHARD_FLUSH_BYTES", default_value_t = 256 * 1024)]
    pub flush_bytes: usize,

    /// Size of each preallocated segment file (multiple of 4096).
    #[arg(long, env = "SHAPESHARD_SEGMENT_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub segment_bytes: u64,

    /// Milliseconds between checkpoints: shapes' log tails move to their
    /// serving files and older segments are deleted.
    #[arg(
        long,
        env = "SHAPESHARD_CHECKPOINT_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub checkpoint_interval_ms: u64,

    /// Milliseconds a used shape stays built in memory while nothing reads
    /// or changes it; then it is unloaded to its cold form (about the size
    /// of a restored shape) and rebuilt on next use. 0 keeps shapes built.
    #[arg(long, env = "SHAPESHARD_UNLOAD_IDLE_MS", default_value_t = 300_000)]
    pub unload_idle_ms: u64,

    /// Bytes per shard that may wait in memory for durability or a
    /// checkpoint (journal + shapes' log tails); past it the shard takes
    /// no more from the replication feed or a snapshot until some is
    /// written (the backlog stays in Postgres' slot).
    #[arg(long, env = "SHAPESHARD_SHARD_MEMORY_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub shard_memory_bytes: usize,

    /// Fault injection for tests: every group commit waits this many
    /// milliseconds before writing (a slow disk). Never set in production.
    #[arg(
        long,
        env = "SHAPESHARD_FAULT_FLUSH_DELAY_MS",
        default_value_t = 0,
        hide = true
    )]
    pub fault_flush_delay_ms: u64,

    /// Fault injection for tests: while this file exists, every fdatasync
    /// of a segment log reports EIO (a failing disk). Never set in
    /// production.
    #[arg(long, env = "SHAPESHARD_FAULT_SYNC_EIO_FILE", hide = true)]
    pub fault_sync_eio_file: Option<std::path::PathBuf>,

    /// JSON `{"initial": N, "existing": M}`: concurrent requests admitted
    /// for new shapes and for existing ones; beyond, 503 + retry-after.
    #[arg(
        long,
        env = "ELECTRIC_MAX_CONCURRENT_REQUESTS",
        default_value = r#"{"initial": 300, "existing": 10000}"#
    )]
    pub max_concurrent_requests: String,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementArg {
    Pinned,
    Unbound,
}

/// Where the server gets its Postgres.
#[derive(Debug, Clone)]
pub enum Database {
    /// Boxed: a connection config is large beside the other variant.
    External(Box<ConnConfig>),
    /// Start an embedded Postgres in the storage directory.
    Embedded,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: Database,
    /// Where snapshot and catalog queries go, when not DATABASE_URL.
    pub pooled_database: Option<ConnConfig>,
    pub port: u16,
    pub listen_address: IpAddr,
    pub storage_dir: PathBuf,
    pub secret: Option<String>,
    pub insecure: bool,
    pub replication_stream_id: String,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub shards: usize,
    pub placement: shards::runtime::Placement,
    pub status_interval_ms: u64,
    pub long_poll_timeout: std::time::Duration,
    pub sse_timeout: std::time::Duration,
    pub sse_keepalive: std::time::Duration,
    pub tcp_read_timeout: std::time::Duration,
    pub chunk_bytes_threshold: usize,
    pub chunk_cache_bytes: usize,
    pub enable_integration_testing: bool,
    pub cache_max_age: u32,
    pub cache_stale_age: u32,
    pub database_id: String,
    pub subquery_buffer_max_transactions: usize,
    pub snapshot_pool_size: usize,
    pub max_concurrent_initial: usize,
    pub max_concurrent_existing: usize,
    pub flush_interval_ms: u64,
    pub flush_bytes: usize,
    pub segment_bytes: u64,
    pub checkpoint_interval_ms: u64,
    pub unload_idle_ms: u64,
    pub shard_memory_bytes: usize,
    pub fault_flush_delay_ms: u64,
    pub fault_sync_eio_file: Option<std::path::PathBuf>,
    pub max_shapes: usize,
}

impl Config {
    pub fn slot_name(&self) -> String {
        format!("electric_slot_{}", self.replication_stream_id)
    }

    pub fn publication_name(&self) -> String {
        format!("electric_publication_{}", self.replication_stream_id)
    }
}

/// Electric's keepalive settings, where the URL has none of its own.
fn apply_keepalive(conn: &mut ConnConfig, o: &Options) -> Result<(), String> {
    let settings = [
        (
            "ELECTRIC_DATABASE_TCP_KEEPALIVE_IDLE",
            o.database_tcp_keepalive_idle,
            &mut conn.keepalive.idle_s,
        ),
        (
            "ELECTRIC_DATABASE_TCP_KEEPALIVE_INTERVAL",
            o.database_tcp_keepalive_interval,
            &mut conn.keepalive.interval_s,
        ),
        (
            "ELECTRIC_DATABASE_TCP_KEEPALIVE_COUNT",
            o.database_tcp_keepalive_count,
            &mut conn.keepalive.count,
        ),
    ];
    for (name, value, slot) in settings {
        match value {
            Some(0) => {
                return Err(format!(
                    "{name} must be above 0 (unset it for the OS default)"
                ))
            }
            Some(v) if slot.is_none() => *slot = Some(v),
            _ => {}
        }
    }
    Ok(())
}

/// Checks `cli` and builds the configuration, or says in one line what to fix.
pub fn validate(cli: &Cli) -> Result<Config, String> {
    let o = &cli.options;
    let dev = matches!(cli.command, Some(Command::Dev));
    let database = match (&o.database_url, dev) {
        (Some(url), false) if !url.trim().is_empty() => {
            let mut conn = url
                .parse::<ConnConfig>()
                .map_err(|e| format!("invalid DATABASE_URL: {e}"))?;
            if conn.sslrootcert.is_none() {
                conn.sslrootcert = o.database_ca_certificate_file.clone();
            }
            apply_keepalive(&mut conn, o)?;
            conn.prefer_ipv6 = o.database_use_ipv6;
            if let Some(root) = &conn.sslrootcert {
                if !root.is_file() {
                    return Err(format!(
                        "the CA certificate file {} (sslrootcert / ELECTRIC_DATABASE_CA_CERTIFICATE_FILE) does not exist",
                        root.display()
                    ));
                }
            }
            Database::External(Box::new(conn))
        }
        _ => Database::Embedded,
    };
    let pooled_url = o
        .pooled_database_url
        .clone()
        .or_else(|| std::env::var("ELECTRIC_QUERY_DATABASE_URL").ok())
        .filter(|u| !u.trim().is_empty());
    let pooled_database = match (&database, pooled_url) {
        (Database::External(_), Some(url)) => {
            let mut conn = url
                .parse::<ConnConfig>()
                .map_err(|e| format!("invalid ELECTRIC_POOLED_DATABASE_URL: {e}"))?;
            if conn.sslrootcert.is_none() {
                conn.sslrootcert = o.database_ca_certificate_file.clone();
            }
            apply_keepalive(&mut conn, o)?;
            conn.prefer_ipv6 = o.database_use_ipv6;
            Some(conn)
        }
        _ => None,
    };
    // The embedded Postgres is local and throwaway: no secret to protect.
    let insecure = o.insecure || matches!(database, Database::Embedded);
    let secret = o.secret.clone().filter(|s| !s.is_empty());
    if secret.is_none() && !insecure {
        return Err("ELECTRIC_SECRET is not set: set it (or --secret) to the secret clients must send, or set ELECTRIC_INSECURE=true to serve without one".into());
    }
    validate_stream_id(&o.replication_stream_id)?;
    if !matches!(o.replication_idle_timeout.trim(), "" | "0" | "0s" | "0ms") {
        return Err(format!(
            "ELECTRIC_REPLICATION_IDLE_TIMEOUT={} is not supported: shapeshard keeps the replication stream connected (WAL is confirmed as it becomes durable); unset it or set 0",
            o.replication_idle_timeout
        ));
    }
    let shards = o
        .shards
        .unwrap_or_else(shards::runtime::executor::default_shard_count);
    if shards == 0 || shards > shards::routes::MAX_SHARDS {
        return Err(format!(
            "--shards must be between 1 and {} (got {shards})",
            shards::routes::MAX_SHARDS
        ));
    }
    if o.port == 0 {
        return Err("ELECTRIC_PORT must be a port number between 1 and 65535".into());
    }
    if o.status_interval_ms == 0 {
        return Err("SHAPESHARD_STATUS_INTERVAL_MS must be at least 1".into());
    }
    if o.chunk_bytes_threshold == 0 {
        return Err("ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD must be at least 1 byte".into());
    }
    // The client gives up on a live request after 45 s.
    if o.long_poll_timeout > 40_000 {
        return Err(format!(
            "ELECTRIC_LONG_POLL_TIMEOUT {} ms is too long: clients abandon live requests after 45 s; use at most 40000",
            o.long_poll_timeout
        ));
    }
    if !(1_000..=3_600_000).contains(&o.sse_timeout) {
        return Err(format!(
            "ELECTRIC_SSE_TIMEOUT {} ms is out of range: use 1000 to 3600000 (the default is 60000)",
            o.sse_timeout
        ));
    }
    if o.tcp_read_timeout <= o.sse_keepalive_ms {
        return Err(format!(
            "ELECTRIC_TCP_READ_TIMEOUT {} ms must be above SHAPESHARD_SSE_KEEPALIVE_MS {} ms, or idle SSE streams are cut",
            o.tcp_read_timeout, o.sse_keepalive_ms
        ));
    }
    if o.shard_memory_bytes < 1 << 20 {
        return Err(format!(
            "SHAPESHARD_SHARD_MEMORY_BYTES {} is too small: use at least 1048576 (the default is 268435456)",
            o.shard_memory_bytes
        ));
    }
    if o.sse_keepalive_ms < 100 || o.sse_keepalive_ms > 600_000 {
        return Err(format!(
            "SHAPESHARD_SSE_KEEPALIVE_MS {} is out of range: use 100 to 600000 (the default is 21000)",
            o.sse_keepalive_ms
        ));
    }
    if o.flush_interval_ms == 0 || o.flush_interval_ms > 10_000 {
        return Err("SHAPESHARD_FLUSH_INTERVAL_MS must be between 1 and 10000".into());
    }
    if o.flush_bytes == 0 {
        return Err("SHAPESHARD_FLUSH_BYTES must be at least 1".into());
    }
    if o.segment_bytes < 1 << 20 || !o.segment_bytes.is_multiple_of(4096) {
        return Err(format!(
            "SHAPESHARD_SEGMENT_BYTES {} is invalid: use a multiple of 4096 of at least 1 MiB",
            o.segment_bytes
        ));
    }
    if o.checkpoint_interval_ms == 0 || o.checkpoint_interval_ms > 600_000 {
        return Err("SHAPESHARD_CHECKPOINT_INTERVAL_MS must be between 1 and 600000".into());
    }
    let (max_concurrent_initial, max_concurrent_existing) =
        concurrency_limits(&o.max_concurrent_requests)?;
    if o.snapshot_pool_size == 0 || o.snapshot_pool_size > 64 {
        return Err("SHAPESHARD_SNAPSHOT_POOL_SIZE must be between 1 and 64".into());
    }
    Ok(Config {
        database,
        pooled_database,
        port: o.port,
        listen_address: o.listen_address.unwrap_or(if o.listen_on_ipv6 {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        }),
        storage_dir: o.storage_dir.clone(),
        secret,
        insecure,
        replication_stream_id: o.replication_stream_id.clone(),
        log_filter: log_filter(&o.log_level)?,
        log_format: o.log_format,
        shards,
        placement: match o.placement {
            PlacementArg::Pinned => shards::runtime::Placement::Pinned,
            PlacementArg::Unbound => shards::runtime::Placement::Unbound,
        },
        status_interval_ms: o.status_interval_ms,
        long_poll_timeout: std::time::Duration::from_millis(o.long_poll_timeout),
        sse_timeout: std::time::Duration::from_millis(o.sse_timeout),
        sse_keepalive: std::time::Duration::from_millis(o.sse_keepalive_ms),
        tcp_read_timeout: std::time::Duration::from_millis(o.tcp_read_timeout),
        chunk_bytes_threshold: o.chunk_bytes_threshold,
        chunk_cache_bytes: o.chunk_cache_bytes,
        enable_integration_testing: o.enable_integration_testing,
        cache_max_age: o.cache_max_age,
        cache_stale_age: o.cache_stale_age,
        database_id: o.database_id.clone(),
        subquery_buffer_max_transactions: o.subquery_buffer_max_transactions,
        snapshot_pool_size: o.snapshot_pool_size,
        max_concurrent_initial,
        max_concurrent_existing,
        flush_interval_ms: o.flush_interval_ms,
        flush_bytes: o.flush_bytes,
        segment_bytes: o.segment_bytes,
        checkpoint_interval_ms: o.checkpoint_interval_ms,
        unload_idle_ms: o.unload_idle_ms,
        shard_memory_bytes: o.shard_memory_bytes,
        fault_flush_delay_ms: o.fault_flush_delay_ms,
        fault_sync_eio_file: o.fault_sync_eio_file.clone(),
        max_shapes: o.max_shapes,
    })
}

/// `{"initial": N, "existing": M}`; a missing key keeps Electric's default.
fn concurrency_limits(json: &str) -> Result<(usize, usize), String> {
    let bad = || {
        format!("ELECTRIC_MAX_CONCURRENT_REQUESTS {json:?} is invalid: use JSON like {{\"initial\": 300, \"existing\": 10000}} with positive integers")
    };
    let value: serde_json::Value = serde_json::from_str(json).map_err(|_| bad())?;
    let object = value.as_object().ok_or_else(bad)?;
    let limit = |key: &str, default: usize| match object.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(bad),
    };
    Ok((limit("initial", 300)?, limit("existing", 10_000)?))
}

/// The stream id becomes part of unquoted identifiers, as in Electric.
fn validate_stream_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 40
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!("ELECTRIC_REPLICATION_STREAM_ID {id:?} is invalid: use 1-40 characters of a-z, 0-9 and _"))
    }
}

/// Electric's level names, or any tracing filter directive.
fn log_filter(level: &str) -> Result<String, String> {
    let filter = match level.trim().to_ascii_lowercase().as_str() {
        "debug" => "debug".to_string(),
        "info" => "info".to_string(),
        "warning" | "warn" => "warn".to_string(),
        "error" => "error".to_string(),
        _ => level.to_string(),
    };
    tracing_subscriber::EnvFilter::try_new(&filter).map_err(|e| {
        format!("ELECTRIC_LOG_LEVEL {level:?} is invalid ({e}): use debug, info, warning or error")
    })?;
    Ok(filter)
}

#[cfg(test)]
mod documented {
    /// Every setting an operator can give is in README's configuration
    /// table (hidden test knobs aside).
    #[test]
    fn every_environment_variable_is_in_the_readme() {
        use clap::CommandFactory;
        let readme = include_str!("../README.md");
        let command = super::Cli::command();
        let mut missing = Vec::new();
        for arg in command.get_arguments() {
            if arg.is_hide_set() {
                continue;
            }
            if let Some(env) = arg.get_env() {
                let name = env.to_string_lossy();
                if !readme.contains(&format!("`{name}`")) {
                    missing.push(name.into_owned());
                }
            }
        }
        assert!(missing.is_empty(), "not in README.md: {missing:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["shapeshard"];
        argv.extend_from_slice(args);
        validate(&Cli::try_parse_from(argv).map_err(|e| e.to_string())?)
    }

    #[test]
    fn external_database_needs_a_secret_or_insecure() {
        let err = parse(&["--database-url", "postgres://u@h/db"]).unwrap_err();
        assert!(err.contains("ELECTRIC_SECRET"), "{err}");
        let ok = parse(&["--database-url", "postgres://u@h/db", "--insecure"]).unwrap();
        assert!(ok.insecure);
        let ok = parse(&["--database-url", "postgres://u@h/db", "--secret", "s"]).unwrap();
        assert_eq!(ok.secret.as_deref(), Some("s"));
        assert!(!ok.insecure);
    }

    #[test]
    fn embedded_database_is_insecure_by_default() {
        let config = parse(&[]).unwrap();
        assert!(matches!(config.database, Database::Embedded));
        assert!(config.insecure);
        assert_eq!(config.port, 3000);
        assert_eq!(config.slot_name(), "electric_slot_default");
        assert_eq!(config.publication_name(), "electric_publication_default");
    }

    #[test]
    fn bad_values_say_what_to_fix() {
        let err = parse(&["--replication-stream-id", "Bad-Id"]).unwrap_err();
        assert!(err.contains("ELECTRIC_REPLICATION_STREAM_ID"), "{err}");
        let err = parse(&["--shards", "0"]).unwrap_err();
        assert!(err.contains("--shards"), "{err}");
        let err = parse(&["--log-level", "loud[["]).unwrap_err();
        assert!(err.contains("ELECTRIC_LOG_LEVEL"), "{err}");
        assert_eq!(
            parse(&["--log-level", "warning"]).unwrap().log_filter,
            "warn"
        );
        let err = parse(&["--database-url", "mysql://x", "--insecure"]).unwrap_err();
        assert!(err.contains("DATABASE_URL"), "{err}");
        let err = parse(&["--replication-idle-timeout", "30s"]).unwrap_err();
        assert!(err.contains("ELECTRIC_REPLICATION_IDLE_TIMEOUT"), "{err}");
        assert!(parse(&["--replication-idle-timeout", "0"]).is_ok());
    }

    #[test]
    fn ipv6_options() {
        let config = parse(&["--listen-on-ipv6"]).unwrap();
        assert_eq!(config.listen_address.to_string(), "::");
        let config = parse(&["--listen-on-ipv6", "--listen-address", "127.0.0.1"]).unwrap();
        assert_eq!(config.listen_address.to_string(), "127.0.0.1");
        assert_eq!(parse(&[]).unwrap().listen_address.to_string(), "0.0.0.0");
        let config = parse(&[
            "--database-url",
            "postgres://u@h/db",
            "--insecure",
            "--database-use-ipv6",
        ])
        .unwrap();
        let Database::External(conn) = config.database else {
            panic!("external")
        };
        assert!(conn.prefer_ipv6);
    }
}
