use clap::Parser;

use shapeshard::config::{self, Cli};

fn main() {
    let cli = Cli::parse();
    let config = match config::validate(&cli) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(config::EXIT_BAD_CONFIG);
        }
    };
    shapeshard::logging::init(&config.log_filter, config.log_format);
    if let Err(message) = shapeshard::server::run(config) {
        tracing::error!("{message}");
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}
