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
