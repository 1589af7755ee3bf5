//! The host-wide IPAM lock: the plugins of one host queue for their IPAM
//! plan-and-commit instead of racing each other through etcd (Calico's CNI
//! plugin does the same with a file lock). Other hosts still race, safely,
//! through the guarded transactions.

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

impl HostLock {
    /// Waits up to `timeout` for the lock of `node`.
    pub async fn acquire(dir: &Path, node: &str, timeout: Duration) -> Result<HostLock, String> {
        ensure_private_dir(dir)?;
        let path = lock_path(dir, node);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // A planted symlink must not make us create or lock elsewhere.
            .custom_flags(libc_o_nofollow())
            .open(&path)
            .map_err(|e| format!("cannot open the IPAM lock {}: {e}", path.display()))?;
        let started = Instant::now();
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(HostLock { _lock: lock }),
                Err((f, Errno::EWOULDBLOCK)) => file = f,
                Err((_, e)) => {
                    return Err(format!("cannot lock {}: {e}", path.display()));
                }
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
