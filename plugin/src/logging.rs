//! Logging: stderr (the module copies it into the agent log) and a log
//! file. A log file that cannot be opened never fails a request: the
//! failure is reported on stderr and logging carries on there.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};

use crate::config::LogConfig;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Installs the global subscriber. Call once per process.
pub fn init(cfg: &LogConfig) {
    let file = cfg.file.as_ref().and_then(|path| {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!(
                    "calico-mesos: cannot open log file {}: {e}; logging to stderr only",
                    path.display()
                );
                None
            }
        }
    });
    let writer = match file {
        Some(f) => BoxMakeWriter::new(std::io::stderr.and(Mutex::new(f))),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(cfg.level)
        .try_init();
}

/// Stderr-only logging, for failures before the config is known.
pub fn init_stderr() {
    init(&LogConfig {
        file: None,
        level: tracing::Level::INFO,
    });
}

/// The span every log line of one request is written in: it carries the
/// plugin version and the command, as operators grep for both.
pub fn request_span(command: &str) -> tracing::Span {
    tracing::info_span!("calico-mesos", version = VERSION, command = command)
}
