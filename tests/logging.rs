//! Process logging as the binary sets it up: JSON lines in `<dir>/arc.log`, the level changed
//! live, size rotation with a bounded number of files, and reopen after an external move.
//! One test function: the subscriber is process-wide.

mod common;

use std::path::{Path, PathBuf};

use arc_gateway::config::{ByteSize, LogFormat, LogLevel, LogOutput, Logging, Rotation};
use arc_gateway::logging::{self, LoggingError, PROCESS_LOG_FILE};

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn messages(path: &Path) -> Vec<String> {
    lines(path)
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str().map(str::to_string))
        .collect()
}

fn log_files(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| {
            let size = e.metadata().map_or(0, |m| m.len());
            (e.file_name().to_string_lossy().into_owned(), size)
        })
        .filter(|(n, _)| n.starts_with(PROCESS_LOG_FILE))
        .collect();
    out.sort();
    out
}

#[test]
fn process_log_level_rotation_and_reopen() {
    let scratch = common::ScratchDir::new("process-log");
    let dir: PathBuf = scratch.path().to_path_buf();
    let mut cfg = Logging {
        level: LogLevel::Info,
        format: LogFormat::Json,
        output: LogOutput {
            path: dir.display().to_string(),
            rotation: Rotation {
                max_size: ByteSize(4096),
                max_files: 2,
            },
        },
        ..Logging::default()
    };
    let handle = logging::init(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join(PROCESS_LOG_FILE);

    tracing::debug!("hidden debug");
    tracing::info!(key = "routes[0]", "configuration applied");
    let got = lines(&file);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["level"], "INFO");
    assert_eq!(got[0]["fields"]["key"], "routes[0]");
    assert!(got[0]["timestamp"].is_string());

    handle.set_level(LogLevel::Debug).expect("set level");
    tracing::debug!("visible debug");
    cfg.level = LogLevel::Warn;
    handle.apply(&cfg).expect("apply");
    tracing::info!("hidden info");
    let msgs = messages(&file);
    assert_eq!(msgs, ["configuration applied", "visible debug"]);

    // Rotation: 3 files at most (active + 2), none over 4 KiB, lines never split.
    let filler = "x".repeat(200);
    for i in 0..200 {
        tracing::warn!(i, filler = %filler, "filling");
    }
    let files = log_files(&dir);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["arc.log", "arc.log.1", "arc.log.2"]);
    for (name, size) in &files {
        assert!(*size <= 4096, "{name}: {size}");
        let _ = lines(&dir.join(name)); // every line parses: none was split
    }

    // Reopen after an external tool moved the file away.
    std::fs::rename(&file, dir.join("moved.log")).expect("move");
    handle.reopen().expect("reopen");
    tracing::warn!("after reopen");
    assert_eq!(messages(&file), ["after reopen"]);

    // One subscriber per process.
    assert!(matches!(logging::init(&cfg), Err(LoggingError::Install(_))));
    let _ = std::fs::remove_dir_all(&dir);
}
