//! The `nixery` binary: read the configuration (before any thread starts), then serve the
//! registry or run a subcommand. Exit codes are decided here: 0 for success and for what
//! `--help` and `--version` were asked to print, 2 for a bad configuration or a failure.

use nixery::commands;
use nixery::config::{Command, ConfigError};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let command = match Command::from_env() {
        Ok(c) => c,
        Err(ConfigError::Help(answer)) => {
            // Help on stdout, styled on a terminal, as clap prints it.
            let _ = answer.print();
            return ExitCode::SUCCESS;
        }
        Err(ConfigError::Usage(usage)) => {
            // clap's message and the usage, on stderr.
            let _ = usage.print();
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Log lines go to stderr from a thread of their own: a slow reader of the log (a
    // container runtime's pipe) must not stall requests. If it falls far behind, lines are
    // dropped rather than requests held up. Colours only on a terminal.
    let (log_writer, _log_flushed_on_drop) = tracing_appender::non_blocking(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(log_writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        match command {
            Command::Serve(config) => commands::serve::serve(*config).await.map_err(|e| e.to_string()),
            Command::Popcount(settings) => commands::popcount::run(&settings).await.map_err(|e| e.to_string()),
            Command::Gc { storage, policy, dry_run } => {
                commands::gc::run(&storage, policy, dry_run).await.map(drop).map_err(|e| e.to_string())
            }
            Command::Layers { image, tag, json, build } => {
                commands::layers::plan(&image, &tag, &build).await.map_err(|e| e.to_string()).map(|plan| {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&plan).expect("plans serialise"));
                    } else {
                        print!("{}", commands::layers::render(&plan));
                    }
                })
            }
        }
    });
    // Blocking work still running (a layer archive whose upload was dropped) must not hold
    // up the exit: the shutdown timeout is already spent.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
