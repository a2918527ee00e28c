//! One writer per folder: an advisory lock (std's `File::try_lock`, `flock` on Linux) on
//! `<dir>/.fd-lock`, held for the life of a run, merge, evaluation or experiment. A second writer
//! gets an error naming the holder's pid, host and command; the lock goes when its holder exits,
//! however it exits (SIGKILL included), so a stale lock file never blocks anyone.
//!
//! On a cluster the folders are on a shared filesystem and the writers on different nodes: `flock`
//! holds across nodes on NFS (the Linux client maps it to NFS locks) and on Lustre mounted with
//! `-o flock`; a filesystem that cannot lock (ENOSYS, ENOLCK, EOPNOTSUPP) is refused with a message
//! saying so, rather than written without a lock.
//!
//! The lock file is opened without following a symlink (`O_NOFOLLOW`): a `.fd-lock` that is a
//! link is refused, so taking a lock can never truncate a file elsewhere. fd takes locks only in
//! folders it writes runs into (new, empty, or proven fd runs); a plain image folder being
//! evaluated is not locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The lock file's name inside a folder fd writes.
pub const LOCK_FILE: &str = ".fd-lock";

/// A held folder lock; released on drop.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
    pub dir: PathBuf,
}

impl FolderLock {
    /// Lock `dir` (created if missing) for `what` (e.g. `fd sample`).
    pub fn acquire(dir: &Path, what: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(crate::error::io(dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| {
                if path.is_symlink() {
                    Error::Folder {
                        path: path.clone(),
                        msg: "is a symbolic link: fd's lock file must be a plain file (remove the link)".into(),
                    }
                } else {
                    Error::Io { path: path.clone(), source: e }
                }
            })?;
        match file.try_lock() {
            Ok(()) => {
                // who holds it, for the error a second writer gets
                file.set_len(0).map_err(crate::error::io(&path))?;
                write!(file, "pid {} on {} ({what})", std::process::id(), crate::machine::hostname())
                    .map_err(crate::error::io(&path))?;
                Ok(Self { _file: file, dir: dir.to_path_buf() })
            }
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = if holder.trim().is_empty() { "another process".into() } else { holder };
                Err(Error::Folder {
                    path: dir.to_path_buf(),
                    msg: format!(
                        "is being written by {} (lock {}); wait for it to finish or use another folder",
                        holder.trim(),
                        path.display()
                    ),
                })
            }
            Err(TryLockError::Error(e))
                if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::ENOLCK | libc::EOPNOTSUPP)) =>
            {
                Err(Error::Folder {
                    path: dir.to_path_buf(),
                    msg: format!(
                        "is on a filesystem without working advisory locks ({e}): fd cannot keep two writers apart \
                         there, so it refuses to write. Use a filesystem with flock support (local disk, NFS with \
                         locking, Lustre mounted with -o flock, BeeGFS/GPFS with locks on)"
                    ),
                })
            }
            Err(TryLockError::Error(e)) => Err(Error::Io { path, source: e }),
        }
    }
}
