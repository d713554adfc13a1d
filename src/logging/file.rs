//! Size-rotated log files: `NAME` is the active file, `NAME.1` the newest rotated one, up to
//! `NAME.<max_files>`; older files are deleted.
//!
//! A line is never split across files: the file rotates before a write that would take it past
//! `max_size` (a single line longer than `max_size` goes alone into a fresh file). [`reopen`]
//! closes and reopens the active file for external rotation tools (SIGUSR1).
//!
//! [`reopen`]: RotatingFile::reopen

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An append-only log file rotated by size.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    file: File,
    size: u64,
}

impl RotatingFile {
    /// Opens (or creates) `path` for appending; its current size counts toward `max_size`.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max_size: max_size.max(1),
            max_files,
            file,
            size,
        })
    }

    /// The active file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the active file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends `line` whole, rotating first when it would not fit.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size = self.size.saturating_add(len);
        Ok(())
    }

    /// Closes and reopens the active path (after an external tool moved the file away).
    pub fn reopen(&mut self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = file;
        Ok(())
    }

    /// Shifts `NAME.i` to `NAME.i+1` (dropping the oldest), moves the active file to `NAME.1`
    /// and starts an empty one.
    pub fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.max_files == 0 {
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
            self.file = file;
            self.size = 0;
            return Ok(());
        }
        let oldest = self.numbered(self.max_files);
        match std::fs::remove_file(&oldest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for i in (1..self.max_files).rev() {
            let from = self.numbered(i);
            if from.exists() {
                std::fs::rename(&from, self.numbered(i + 1))?;
            }
        }
        std::fs::rename(&self.path, self.numbered(1))?;
        self.reopen()
    }

    fn numbered(&self, i: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_os_string();
        name.push(format!(".{i}"));
        PathBuf::from(name)
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "arc-rotate-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
            .expect("read dir")
            .filter_map(Result::ok)
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().map(|m| m.len()).unwrap_or(0),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = temp_dir("size");
        let path = dir.join("access.log");
        let mut f = RotatingFile::open(&path, 100, 3).expect("open");
        let line = [b'x'; 39]; // 39 bytes + newline = 40: two lines fit in 100, three do not.
        let mut buf = line.to_vec();
        buf.push(b'\n');
        for _ in 0..20 {
            f.write_line(&buf).expect("write");
        }
        let found = files(&dir);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["access.log", "access.log.1", "access.log.2", "access.log.3"]
        );
        for (name, size) in &found {
            assert!(*size <= 100, "{name} is {size} bytes");
            assert_eq!(size % 40, 0, "{name}: lines are never split");
        }
        // 20 lines, two per file: the active one and .1 .. .3 are full.
        assert_eq!(found.iter().map(|(_, s)| s).sum::<u64>(), 8 * 40);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn oversized_line_goes_alone_into_a_fresh_file() {
        let dir = temp_dir("big");
        let path = dir.join("arc.log");
        let mut f = RotatingFile::open(&path, 10, 2).expect("open");
        f.write_line(b"abc\n").expect("write");
        f.write_line(&[b'y'; 30]).expect("write");
        assert_eq!(f.size(), 30);
        assert_eq!(
            std::fs::read(dir.join("arc.log.1")).expect("rotated"),
            b"abc\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reopen_follows_an_external_move() {
        let dir = temp_dir("reopen");
        let path = dir.join("arc.log");
        let mut f = RotatingFile::open(&path, 1 << 20, 2).expect("open");
        f.write_line(b"before\n").expect("write");
        std::fs::rename(&path, dir.join("moved.log")).expect("move");
        f.reopen().expect("reopen");
        f.write_line(b"after\n").expect("write");
        assert_eq!(std::fs::read(&path).expect("new file"), b"after\n");
        assert_eq!(
            std::fs::read(dir.join("moved.log")).expect("moved"),
            b"before\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn existing_size_counts() {
        let dir = temp_dir("existing");
        let path = dir.join("arc.log");
        std::fs::write(&path, [b'z'; 90]).expect("seed");
        let mut f = RotatingFile::open(&path, 100, 1).expect("open");
        f.write_line(b"0123456789ab\n").expect("write");
        assert_eq!(f.size(), 13);
        assert!(dir.join("arc.log.1").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
