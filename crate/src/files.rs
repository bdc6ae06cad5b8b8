//! Writing files so that a reader never sees half of one: everything goes to a temporary file in the
//! same folder, is flushed to disk, then renamed over the final name (atomic on one file system). A
//! process killed mid-way leaves the previous complete file in place (and a `.tmp-…` file at most).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A temporary name next to `path`: `.name.tmp-<pid>-<n>`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = N.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Creates the parent folder of `path` if it is missing.
pub(crate) fn create_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e)),
        None => Ok(()),
    }
}

/// Opens (creating it if missing) the lock file `path`, for `File::try_lock`: a lock the OS releases when
/// its process ends however it ends. The file itself stays: removing it would let a waiter lock a file no
/// one else sees.
pub(crate) fn lock_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path` atomically (temporary file, flush, rename).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    write_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })
}

/// Lets `write` fill a temporary file next to `path`, then renames it to `path`; on any error the
/// temporary file is removed and `path` is untouched.
pub(crate) fn write_with(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    create_parent(path)?;
    let tmp = temp_path(path);
    let done = write(&tmp).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
        // A failing writer leaves the old file untouched and cleans up.
        let e = write_with(&p, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("killed"))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
    }
}
