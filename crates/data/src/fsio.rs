//! Atomic file writes: write a temp file next to the target, fsync it, rename it into place.
//!
//! A crash or error mid-write leaves the previous good file (if any) untouched, and a reader that
//! has the old file memory-mapped keeps seeing the old inode rather than a half-written one.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Distinguishes temp files of concurrent writes from one process (tests run in parallel).
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{}: not a file path", path.display())))?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp_name = format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        n
    );
    Ok(path.with_file_name(tmp_name))
}

/// A file written under a temp name next to `path` and renamed into place by
/// [`AtomicFile::commit`] once synced. Dropped uncommitted (an error on the way), it removes the
/// temp file and leaves `path` as it was.
pub(crate) struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    /// `None` once committed.
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let tmp = temp_path(path)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Append `bytes`; errors are reported against `path` (the file the caller asked for).
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(out) = self.out.as_mut() else {
            // Unreachable: `commit` takes the file by value.
            return Err(Error::format(&self.path, "written after it was committed"));
        };
        out.write_all(bytes).map_err(|e| Error::io(&self.path, e))
    }

    /// Flush, let `last` touch the whole file (a header that needed the end), sync, and
    /// rename into place.
    pub(crate) fn commit(
        mut self,
        last: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<()> {
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let done = (|| -> std::io::Result<()> {
            let mut file = out.into_inner().map_err(|e| e.into_error())?;
            last(&mut file)?;
            // Data must be on disk before the rename makes it visible under the real name.
            file.sync_all()?;
            fs::rename(&self.tmp, &self.path)
        })();
        done.map_err(|e| {
            // Best effort: the temp file is ours and useless now; the real error is what matters.
            let _ = fs::remove_file(&self.tmp);
            Error::io(&self.path, e)
        })
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            // Uncommitted: the temp file is ours and useless; the error that left it matters.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Write `path` atomically; `fill` writes the whole contents into the buffered writer.
/// Errors from `fill` are reported against `path` (the file the caller asked for).
pub(crate) fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    if let Some(out) = file.out.as_mut() {
        fill(out).map_err(|e| Error::io(path, e))?;
    }
    file.commit(|_| Ok(()))
}

/// Write a byte buffer atomically.
pub(crate) fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}
