//! Process logs through `tracing`: JSON (default) or text lines on the configured output, with
//! the level behind a `tracing_subscriber::reload` handle so a reload changes it live.

use std::sync::Arc;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Registry, reload};

use super::LoggingError;
use super::target::{ACCESS_LOG_FILE, LogTarget, PROCESS_LOG_FILE};
use crate::config::{LogFormat, LogLevel, LogOutput, Logging};

/// The `tracing` level of a configured `logging.level`.
pub fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    }
}

/// What the process keeps of its logging set-up: the live level, and the two log targets
/// (process log and access log) that SIGUSR1 reopens.
#[derive(Debug, Clone)]
pub struct LoggingHandle {
    level: Option<reload::Handle<LevelFilter, Registry>>,
    process: Arc<LogTarget>,
    access: Arc<LogTarget>,
    format: LogFormat,
    output: LogOutput,
}

impl LoggingHandle {
    /// A handle without a global subscriber (tests, embedding): level changes are ignored.
    pub fn detached(process: Arc<LogTarget>, access: Arc<LogTarget>) -> Self {
        LoggingHandle {
            level: None,
            process,
            access,
            format: LogFormat::Json,
            output: LogOutput::default(),
        }
    }

    /// The access log's target, for [`AccessLog::start`](super::AccessLog::start).
    pub fn access_target(&self) -> Arc<LogTarget> {
        Arc::clone(&self.access)
    }

    /// The process log's target.
    pub fn process_target(&self) -> Arc<LogTarget> {
        Arc::clone(&self.process)
    }

    /// Changes the level of process logs now.
    pub fn set_level(&self, level: LogLevel) -> Result<(), LoggingError> {
        if let Some(h) = &self.level {
            h.modify(|f| *f = level_filter(level))
                .map_err(|e| LoggingError::Reload(e.to_string()))?;
        }
        Ok(())
    }

    /// Applies a reloaded `logging` section: the level changes live; a changed format or
    /// output is named in the log and applies at the next start.
    pub fn apply(&self, cfg: &Logging) -> Result<(), LoggingError> {
        self.set_level(cfg.level)?;
        if cfg.format != self.format {
            tracing::warn!(
                key = "logging.format",
                "restart required: keeping the running value"
            );
        }
        if cfg.output != self.output {
            tracing::warn!(
                key = "logging.output",
                "restart required: keeping the running value"
            );
        }
        Ok(())
    }

    /// Reopens file outputs (SIGUSR1, after an external logrotate moved them).
    pub fn reopen(&self) -> Result<(), LoggingError> {
        for (target, name) in [
            (&self.process, PROCESS_LOG_FILE),
            (&self.access, ACCESS_LOG_FILE),
        ] {
            target.reopen().map_err(|source| LoggingError::Open {
                path: name.to_string(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Installs the process-wide `tracing` subscriber for `cfg` and opens the access log target.
/// Fails when the output directory cannot be written or a subscriber is already installed.
pub fn init(cfg: &Logging) -> Result<LoggingHandle, LoggingError> {
    let process = Arc::new(LogTarget::from_config(&cfg.output, PROCESS_LOG_FILE)?);
    let access = Arc::new(LogTarget::from_config(&cfg.output, ACCESS_LOG_FILE)?);
    let (filter, handle) = reload::Layer::new(level_filter(cfg.level));
    let ansi = process.is_terminal();
    let json = (cfg.format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_target(false)
            .with_thread_names(true)
            .with_writer(Arc::clone(&process))
    });
    let text = (cfg.format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_target(false)
            .with_thread_names(true)
            .with_writer(Arc::clone(&process))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .try_init()
        .map_err(|e| LoggingError::Install(e.to_string()))?;
    Ok(LoggingHandle {
        level: Some(handle),
        process,
        access,
        format: cfg.format,
        output: cfg.output.clone(),
    })
}
