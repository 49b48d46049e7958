//! Direct-IO files.

use std::path::Path;

/// Size of the start-up marker file; one DMA block.
const MARKER_BYTES: usize = 4096;

/// glommio bug on virtio disks: if the first DMA file an executor opens is a
/// read+write open of an *empty* file, glommio turns on polled I/O for the
/// executor's ring and every later read fails with EOPNOTSUPP. Opening a
/// non-empty file first, once per executor, avoids it. Call this at executor
/// start-up, before any other DMA file is opened.
pub async fn open_marker_first(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("dma.marker");
    let is_full = std::fs::metadata(&path).is_ok_and(|m| m.len() as usize == MARKER_BYTES);
    if !is_full {
        std::fs::write(&path, vec![0u8; MARKER_BYTES])?;
    }
    let file = glommio::io::DmaFile::open(&path)
        .await
        .map_err(std::io::Error::from)?;
    let read = file.read_at_aligned(0, MARKER_BYTES).await;
    let _ = file.close().await;
    read.map(|_| ()).map_err(std::io::Error::from)
}

/// Direct-I/O block size: offsets and lengths of `DmaLog` writes are
/// multiples of it.
pub const BLOCK: usize = 4096;

/// An append-only direct-I/O file (a segment of a shard's log).
pub struct DmaLog {
    file: glommio::io::DmaFile,
}

impl DmaLog {
    /// Opens `path` for reading and writing, creating it if missing.
    pub async fn open(path: &Path) -> std::io::Result<DmaLog> {
        let file = glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(std::io::Error::from)?;
        Ok(DmaLog { file })
    }

    /// Writes `bytes` (a whole number of blocks) at block-aligned `pos`.
    pub async fn write_at(&self, pos: u64, bytes: &[u8]) -> std::io::Result<()> {
        assert!(
            pos.is_multiple_of(BLOCK as u64) && bytes.len().is_multiple_of(BLOCK),
            "direct I/O needs aligned writes (pos {pos}, {} bytes)",
            bytes.len()
        );
        // A write that runs out of space part way returns what it wrote
        // (past a segment's preallocation, say); writing the rest gets the
        // error itself (ENOSPC) for the caller and the operator.
        let mut done = 0;
        while done < bytes.len() {
            let rest = &bytes[done..];
            let mut buffer = self.file.alloc_dma_buffer(rest.len());
            buffer.as_bytes_mut().copy_from_slice(rest);
            let written = self
                .file
                .write_at(buffer, pos + done as u64)
                .await
                .map_err(std::io::Error::from)?;
            if written == 0 || !written.is_multiple_of(BLOCK) {
                return Err(std::io::Error::other(format!(
                    "short direct write: {} of {} bytes at {pos}",
                    done + written,
                    bytes.len()
                )));
            }
            done += written;
        }
        Ok(())
    }

    /// fdatasync: everything written so far survives a crash.
    pub async fn sync(&self) -> std::io::Result<()> {
        self.file.fdatasync().await.map_err(std::io::Error::from)?;
        fault::sync_result()
    }

    /// Reads `len` bytes at `pos` (fewer at the end of the file).
    pub async fn read_at(&self, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let read = self
            .file
            .read_at(pos, len)
            .await
            .map_err(std::io::Error::from)?;
        Ok(read.to_vec())
    }

    pub async fn size(&self) -> std::io::Result<u64> {
        self.file.file_size().await.map_err(std::io::Error::from)
    }

    /// Reserves `size` bytes on disk without changing the file size, so
    /// appends do not allocate extents on the write path.
    pub async fn preallocate(&self, size: u64) -> std::io::Result<()> {
        self.file
            .pre_allocate(size, true)
            .await
            .map_err(std::io::Error::from)
    }

    pub async fn truncate(&self, size: u64) -> std::io::Result<()> {
        self.file.truncate(size).await.map_err(std::io::Error::from)
    }

    pub async fn close(self) -> std::io::Result<()> {
        self.file.close().await.map_err(std::io::Error::from)
    }
}

/// Fault injection for tests only (`SHAPESHARD_FAULT_SYNC_EIO_FILE`, a
/// hidden setting): while the trigger file exists, every `DmaLog::sync`
/// reports EIO after really syncing, as a failing disk does (the data may
/// or may not be on it; the caller cannot tell). Off unless armed: then a
/// sync costs one `stat` more.
pub mod fault {
    use std::path::PathBuf;
    use std::sync::OnceLock;

    static SYNC_EIO_WHILE: OnceLock<PathBuf> = OnceLock::new();

    /// Arms the seam for the process: syncs fail while `trigger` exists.
    pub fn fail_syncs_while(trigger: PathBuf) {
        let _ = SYNC_EIO_WHILE.set(trigger);
    }

    #[cfg(test)]
    thread_local! {
        static FAIL_NEXT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    /// Unit tests: the next `n` syncs on this thread (its executor) fail.
    #[cfg(test)]
    pub fn fail_next_syncs(n: u32) {
        FAIL_NEXT.with(|f| f.set(n));
    }

    pub(super) fn sync_result() -> std::io::Result<()> {
        #[cfg(test)]
        if FAIL_NEXT.with(|f| f.replace(f.get().saturating_sub(1))) > 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        match SYNC_EIO_WHILE.get() {
            Some(trigger) if trigger.exists() => Err(std::io::Error::from_raw_os_error(libc::EIO)),
            _ => Ok(()),
        }
    }
}

/// Reads `len` bytes at `pos` of a (buffered, page-cached) serving file
/// through the executor's ring.
pub async fn read_range(path: &std::path::Path, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let file = glommio::io::BufferedFile::open(path)
        .await
        .map_err(std::io::Error::from)?;
    let read = file.read_at(pos, len).await.map_err(std::io::Error::from);
    let _ = file.close().await;
    let read = read?;
    if read.len() != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{}: {} of {len} bytes at {pos}", path.display(), read.len()),
        ));
    }
    Ok(read.to_vec())
}

/// Flushes every dirty page of the filesystem holding `dir` (one call for
/// all the serving files a checkpoint wrote). Blocking: run it off the
/// executor.
pub fn sync_filesystem(dir: &std::path::Path) -> std::io::Result<()> {
    let handle = std::fs::File::open(dir)?;
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs blocking work on the executor's blocking thread.
pub async fn blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(f).await
}

/// Runs long blocking work (a checkpoint's file writes and syncs) on its own
/// OS thread, so the executor's blocking thread stays free for short jobs
/// (a tick's metadata commit); awaits it by polling, which is fine for work
/// that takes milliseconds to seconds.
pub async fn on_thread<F, R>(name: &str, f: F) -> std::io::Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let done: std::sync::Arc<std::sync::Mutex<Option<R>>> = Default::default();
    let slot = done.clone();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let result = f();
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        })?;
    loop {
        if let Some(result) = done.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
            return Ok(result);
        }
        if thread.is_finished() {
            if let Some(result) = done.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return Ok(result);
            }
            // Finished without a result: it panicked.
            return Err(std::io::Error::other(format!("{name} thread panicked")));
        }
        crate::runtime::sleep(std::time::Duration::from_millis(2)).await;
    }
}
