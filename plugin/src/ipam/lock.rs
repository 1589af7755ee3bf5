//! The host-wide IPAM lock: the plugins of one host queue for their IPAM
//! plan-and-commit instead of racing each other through etcd (Calico's CNI
//! plugin does the same with a file lock). Other hosts still race, safely,
//! through the guarded transactions.
//!
//! The container lock: isolate holds one per container for its whole run,
//! and gc repairs a container only while it holds it, so gc never takes
//! the half-made veth of an isolate that is still running for its leak.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Held while it lives; dropping it unlocks.
pub struct HostLock {
    _lock: Flock<File>,
}

/// The lock file of `node` under `dir` (one per node name, so simulated
/// hosts on one machine do not queue behind each other).
pub fn lock_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("ipam.{node}.lock"))
}

fn open_lock_file(path: &Path, what: &str) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // A planted symlink must not make us create or lock elsewhere.
        .custom_flags(libc_o_nofollow())
        .open(path)
        .map_err(|e| format!("cannot open the {what} {}: {e}", path.display()))
}

/// One non-blocking attempt: Ok(Err(file)) when someone else holds it.
fn try_flock(file: File, path: &Path) -> Result<Result<Flock<File>, File>, String> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Ok(lock)),
        Err((f, Errno::EWOULDBLOCK)) => Ok(Err(f)),
        Err((_, e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

impl HostLock {
    /// Waits up to `timeout` for the lock of `node`.
    pub async fn acquire(dir: &Path, node: &str, timeout: Duration) -> Result<HostLock, String> {
        ensure_private_dir(dir)?;
        let path = lock_path(dir, node);
        let mut file = open_lock_file(&path, "IPAM lock")?;
        let started = Instant::now();
        loop {
            match try_flock(file, &path)? {
                Ok(lock) => return Ok(HostLock { _lock: lock }),
                Err(f) => file = f,
            }
            if started.elapsed() >= timeout {
                return Err(format!(
                    "another calico-mesos on this host held the IPAM lock {} for more than \
                     {} ms; is one stuck? (`fuser {}` names it)",
                    path.display(),
                    timeout.as_millis(),
                    path.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(1 + fastrand::u64(0..3))).await;
        }
    }
}

/// The lock of one container; the file is removed when it is released,
/// so a busy host does not collect one file per container ever run.
pub struct ContainerLock {
    path: PathBuf,
    lock: Option<Flock<File>>,
}

pub fn container_lock_path(dir: &Path, container_id: &str) -> PathBuf {
    dir.join(format!("container.{container_id}.lock"))
}

impl ContainerLock {
    /// Waits up to `timeout` for the lock (isolate).
    pub async fn acquire(
        dir: &Path,
        container_id: &str,
        timeout: Duration,
    ) -> Result<ContainerLock, String> {
        let started = Instant::now();
        loop {
            if let Some(lock) = Self::try_acquire(dir, container_id)? {
                return Ok(lock);
            }
            if started.elapsed() >= timeout {
                return Err(format!(
                    "another calico-mesos on this host works on container {container_id} (it \
                     holds {} for more than {} ms)",
                    container_lock_path(dir, container_id).display(),
                    timeout.as_millis()
                ));
            }
            tokio::time::sleep(Duration::from_millis(2 + fastrand::u64(0..5))).await;
        }
    }

    /// One attempt (gc): None when someone else holds it.
    pub fn try_acquire(dir: &Path, container_id: &str) -> Result<Option<ContainerLock>, String> {
        ensure_private_dir(dir)?;
        let path = container_lock_path(dir, container_id);
        // A holder removes the file as it lets go: the lock taken must be
        // on the file that is still there, else try again.
        for _ in 0..100 {
            let file = open_lock_file(&path, "container lock")?;
            let lock = match try_flock(file, &path)? {
                Ok(lock) => lock,
                Err(_) => return Ok(None),
            };
            let held = lock
                .metadata()
                .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
            match std::fs::symlink_metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some(ContainerLock {
                        path,
                        lock: Some(lock),
                    }))
                }
                _ => continue,
            }
        }
        Err(format!(
            "cannot lock {}: it keeps being replaced",
            path.display()
        ))
    }
}

impl Drop for ContainerLock {
    fn drop(&mut self) {
        // Removed while still held, so whoever opens it next makes a new one.
        let _ = std::fs::remove_file(&self.path);
        self.lock.take();
    }
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits()
}

/// Creates `dir` (mode 0700) or checks that the existing one is a real
/// directory of ours that nobody else can write into.
fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_dir() {
        return Err(format!(
            "refusing the IPAM lock directory {}: not a directory",
            dir.display()
        ));
    }
    if meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "refusing the IPAM lock directory {}: it must belong to uid {euid} and not be \
             writable by group or others (mode {:o}, owner {})",
            dir.display(),
            meta.mode() & 0o7777,
            meta.uid()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_second_holder_waits_then_times_out_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        rt().block_on(async {
            let first = HostLock::acquire(&run, "n1", Duration::from_millis(100))
                .await
                .unwrap();
            let err = HostLock::acquire(&run, "n1", Duration::from_millis(50))
                .await
                .err()
                .expect("the lock is held");
            assert!(err.contains("held the IPAM lock"), "{err}");
            // Another node's lock is independent.
            HostLock::acquire(&run, "n2", Duration::from_millis(50))
                .await
                .unwrap();
            drop(first);
            HostLock::acquire(&run, "n1", Duration::from_millis(50))
                .await
                .unwrap();
        });
        let mode = std::fs::metadata(&run).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let file_mode = std::fs::metadata(lock_path(&run, "n1"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(file_mode, 0o600);
    }

    #[test]
    fn a_container_lock_is_exclusive_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let first = ContainerLock::try_acquire(&run, "ctr-1").unwrap().unwrap();
        assert!(ContainerLock::try_acquire(&run, "ctr-1").unwrap().is_none());
        let other = ContainerLock::try_acquire(&run, "ctr-2").unwrap();
        assert!(other.is_some(), "locks are per container");
        let err = rt()
            .block_on(ContainerLock::acquire(
                &run,
                "ctr-1",
                Duration::from_millis(30),
            ))
            .err()
            .unwrap();
        assert!(err.contains("works on container ctr-1"), "{err}");
        drop(first);
        assert!(!container_lock_path(&run, "ctr-1").exists());
        let again = rt()
            .block_on(ContainerLock::acquire(
                &run,
                "ctr-1",
                Duration::from_millis(30),
            ))
            .unwrap();
        drop(again);
        drop(other);
        assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0);
    }

    #[test]
    fn unsafe_lock_places_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = rt()
            .block_on(HostLock::acquire(&open, "n1", Duration::from_millis(10)))
            .err()
            .unwrap();
        assert!(err.contains("writable by group or others"), "{err}");

        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", lock_path(&private, "n1")).unwrap();
        let err = rt()
            .block_on(HostLock::acquire(&private, "n1", Duration::from_millis(10)))
            .err()
            .unwrap();
        assert!(err.contains("cannot open the IPAM lock"), "{err}");
    }
}
