use clap::Parser;

use shapeshard::config::{self, Cli, Command};

/// Per-thread heaps suit one executor per core; and glibc's allocator,
/// after many small frees (idle shapes unloaded, shapes removed), stalls a
/// later large allocation for hundreds of milliseconds consolidating them
/// (measured by `restore-bench`).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    if let Some(Command::Rehome {
        shards,
        storage_dir,
    }) = &cli.command
    {
        match shapeshard::server::rehome(storage_dir, *shards) {
            Ok(done) => println!("{done}"),
            Err(message) => {
                eprintln!("error: {message}");
                std::process::exit(1);
            }
        }
        return;
    }
    let config = match config::validate(&cli) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(config::EXIT_BAD_CONFIG);
        }
    };
    if matches!(cli.command, Some(Command::CheckConfig)) {
        let (lines, passed) = shapeshard::check::check(&config);
        for line in lines {
            println!("{line}");
        }
        std::process::exit(if passed { 0 } else { config::EXIT_BAD_CONFIG });
    }
    shapeshard::logging::init(&config.log_filter, config.log_format);
    // A panic is a broken invariant: a shard that died would leave a server
    // that accepts requests it can never answer. Stop the whole process
    // instead; restart recovery is built for exactly this.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    if let Err(message) = shapeshard::server::run(config) {
        tracing::error!("{message}");
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}
