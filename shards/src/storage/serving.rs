//! Writes into the shapes' serving files at checkpoints, keeping the files
//! of recently written shapes open: a busy shape gets a write every
//! checkpoint, and reopening it each time (path lookup in a directory of
//! up to one file pair per shape, open, fstat, close) cost more than the
//! write. Owned by the shard's committer and lent to one checkpoint at a
//! time, so it needs no lock.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::shape::log::FileWrite;

struct OpenFile {
    file: File,
    /// The file's length as we left it (we are its only writer).
    len: u64,
    last_use: u64,
}

pub struct ServingFiles {
    open: HashMap<PathBuf, OpenFile>,
    uses: u64,
    max_open: usize,
    /// The files' directory, open for as long as this lives: `syncfs`
    /// through it reports every writeback error since it was opened (one
    /// opened just for the call would miss those from before).
    sync_dir: Option<File>,
    /// A file was created since the last sync: the directory is synced too.
    created: bool,
    /// Files opened (for tests and the bench: the cache's hit rate).
    pub opened: u64,
}

impl ServingFiles {
    /// At most `max_open` descriptors are kept.
    pub fn new(max_open: usize) -> ServingFiles {
        ServingFiles {
            open: HashMap::new(),
            uses: 0,
            max_open: max_open.max(1),
            sync_dir: None,
            created: false,
            opened: 0,
        }
    }

    /// Opens the sync handle on `dir` if it is not open yet. Call before
    /// the first write whose errors a later `sync` must report.
    pub fn open_sync(&mut self, dir: &Path) -> std::io::Result<()> {
        if self.sync_dir.is_none() {
            std::fs::create_dir_all(dir)?;
            self.sync_dir = Some(File::open(dir)?);
        }
        Ok(())
    }

    /// Makes every write so far durable, or says why not: `syncfs` on the
    /// long-lived handle, then an fsync of the directory if files were
    /// created (their names must survive too).
    pub fn sync(&mut self, dir: &Path) -> std::io::Result<()> {
        self.open_sync(dir)?;
        let handle = self.sync_dir.as_ref().expect("opened above");
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the duration of the call.
        if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if self.created {
            handle.sync_all()?;
            self.created = false;
        }
        Ok(())
    }

    /// Appends `write` at its position; bytes past it (written after the
    /// last checkpoint before a crash) are cut first.
    pub fn write(&mut self, write: &FileWrite) -> std::io::Result<()> {
        self.uses += 1;
        if !self.open.contains_key(&write.path) {
            if self.open.len() >= self.max_open {
                self.close_least_used();
            }
            let file = match std::fs::OpenOptions::new().write(true).open(&write.path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.created = true;
                    std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&write.path)?
                }
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            self.opened += 1;
            self.open.insert(
                write.path.clone(),
                OpenFile {
                    file,
                    len,
                    last_use: 0,
                },
            );
        }
        let entry = self.open.get_mut(&write.path).expect("opened above");
        entry.last_use = self.uses;
        match write.apply_to(&entry.file, entry.len) {
            Ok(len) => {
                entry.len = len;
                Ok(())
            }
            Err(e) => {
                // Its state is unknown now: reopen it next time.
                self.open.remove(&write.path);
                Err(e)
            }
        }
    }

    /// Deletes a serving file (its shape is gone), closing it first.
    pub fn remove(&mut self, path: &Path) -> std::io::Result<()> {
        self.open.remove(path);
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Descriptors kept open.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Closes the least recently used half, so eviction costs O(1) per
    /// file opened, amortised.
    fn close_least_used(&mut self) {
        let mut uses: Vec<u64> = self.open.values().map(|f| f.last_use).collect();
        let half = uses.len() / 2;
        let (_, &mut cutoff, _) = uses.select_nth_unstable(half);
        self.open.retain(|_, f| f.last_use > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, pos: u64, bytes: &[u8]) -> FileWrite {
        FileWrite::raw(path, pos, bytes)
    }

    #[test]
    fn open_files_are_reused_bounded_and_cut_past_their_checkpoint() {
        let dir = std::env::temp_dir().join(format!("shapeshard-serving-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = |n: usize| dir.join(format!("{n}.log"));
        // A file with bytes past its checkpointed length (a crash after a
        // write that no checkpoint recorded): cut at the first write.
        std::fs::write(path(0), b"abcdXXXX").unwrap();
        let mut files = ServingFiles::new(4);
        files.write(&write(&path(0), 4, b"efgh")).unwrap();
        files.write(&write(&path(0), 8, b"ij")).unwrap();
        assert_eq!(std::fs::read(path(0)).unwrap(), b"abcdefghij");
        assert_eq!(files.opened, 1, "the second write reuses the descriptor");

        // A file shorter than its checkpoint says: storage was lost.
        let err = files.write(&write(&path(0), 20, b"k")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);

        for n in 1..=10 {
            files.write(&write(&path(n), 0, b"x")).unwrap();
            assert!(files.open_count() <= 4, "bounded");
        }
        files.write(&write(&path(10), 1, b"y")).unwrap();
        assert_eq!(std::fs::read(path(10)).unwrap(), b"xy");
        let opened = files.opened;
        files.write(&write(&path(10), 2, b"z")).unwrap();
        assert_eq!(files.opened, opened, "the most recent stays open");

        files.remove(&path(10)).unwrap();
        assert!(!path(10).exists());
        files.write(&write(&path(10), 0, b"new")).unwrap();
        assert_eq!(std::fs::read(path(10)).unwrap(), b"new");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
