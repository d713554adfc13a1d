//! Where log lines go: standard output, standard error, or a [`RotatingFile`].
//!
//! A [`LogTarget`] is shared by everything writing one stream; file targets serialize writes
//! with a mutex (process logs are rare and the access log has a single writer thread, so the
//! lock is never taken on a worker's request path).

use std::io::{self, Write};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use super::LoggingError;
use super::file::RotatingFile;
use crate::config::LogOutput;

/// File name of the process log inside `logging.output.path`.
pub const PROCESS_LOG_FILE: &str = "arc.log";
/// File name of the access log inside `logging.output.path`.
pub const ACCESS_LOG_FILE: &str = "access.log";

#[derive(Debug)]
enum Kind {
    Stdout,
    Stderr,
    File(Mutex<RotatingFile>),
}

/// One log stream's destination.
#[derive(Debug)]
pub struct LogTarget {
    kind: Kind,
}

impl LogTarget {
    /// Standard output.
    pub fn stdout() -> Self {
        LogTarget { kind: Kind::Stdout }
    }

    /// Standard error.
    pub fn stderr() -> Self {
        LogTarget { kind: Kind::Stderr }
    }

    /// A rotated file.
    pub fn file(file: RotatingFile) -> Self {
        LogTarget {
            kind: Kind::File(Mutex::new(file)),
        }
    }

    /// The target of `logging.output` for the stream stored as `file_name` when the output is a
    /// directory (created if missing).
    pub fn from_config(out: &LogOutput, file_name: &str) -> Result<Self, LoggingError> {
        match out.path.as_str() {
            "stdout" => Ok(Self::stdout()),
            "stderr" => Ok(Self::stderr()),
            dir => {
                let dir = Path::new(dir);
                std::fs::create_dir_all(dir).map_err(|source| LoggingError::Open {
                    path: dir.display().to_string(),
                    source,
                })?;
                let path = dir.join(file_name);
                let file =
                    RotatingFile::open(&path, out.rotation.max_size.get(), out.rotation.max_files)
                        .map_err(|source| LoggingError::Open {
                            path: path.display().to_string(),
                            source,
                        })?;
                Ok(Self::file(file))
            }
        }
    }

    /// Whether this target is a terminal-capable standard stream.
    pub fn is_terminal(&self) -> bool {
        use std::io::IsTerminal;
        match self.kind {
            Kind::Stdout => io::stdout().is_terminal(),
            Kind::Stderr => io::stderr().is_terminal(),
            Kind::File(_) => false,
        }
    }

    /// Writes one complete line (or several).
    pub fn write_line(&self, line: &[u8]) -> io::Result<()> {
        match &self.kind {
            Kind::Stdout => io::stdout().lock().write_all(line),
            Kind::Stderr => io::stderr().lock().write_all(line),
            Kind::File(f) => f
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .write_line(line),
        }
    }

    /// Reopens a file target (SIGUSR1); standard streams need nothing.
    pub fn reopen(&self) -> io::Result<()> {
        match &self.kind {
            Kind::File(f) => f.lock().unwrap_or_else(PoisonError::into_inner).reopen(),
            Kind::Stdout | Kind::Stderr => Ok(()),
        }
    }
}

/// `Arc<LogTarget>` is a `tracing_subscriber` writer through this impl: each formatted event
/// arrives as one `write` call and is written whole.
impl Write for &LogTarget {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_line(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
