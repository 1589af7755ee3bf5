//! Where this host last found room: the block CIDRs its last allocation
//! took addresses from, kept in a small file beside the host lock. The
//! snapshot reads those blocks in its one round trip, so the common
//! allocate needs no second read however many blocks the host owns. A
//! hint is only a guess: it is used only when the snapshot shows the block
//! still ours, and a missing or garbled file just costs a read.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

/// At most this many hinted blocks (a few per family).
const MAX_HINTS: usize = 4;

fn hint_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("blocks.{node}"))
}

/// The hinted blocks (empty when there is no usable hint).
pub fn read(dir: &Path, node: &str) -> Vec<IpNetwork> {
    let Ok(bytes) = crate::files::read_bounded(&hint_path(dir, node)) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .take(MAX_HINTS)
        .collect()
}

/// Records `cidrs` as the hint. Called under the host lock; best effort.
pub fn write(dir: &Path, node: &str, cidrs: &[IpNetwork]) {
    let cidrs = &cidrs[..cidrs.len().min(MAX_HINTS)];
    write_text(
        &hint_path(dir, node),
        dir,
        &format!(".blocks.{node}.tmp"),
        &cidr_lines(cidrs),
    );
}

fn handles_dir(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("handles.{node}"))
}

/// The blocks recorded for `handle` (empty: no record).
pub fn handle_blocks(dir: &Path, node: &str, handle: &str) -> Vec<IpNetwork> {
    let Ok(bytes) = crate::files::read_bounded(&handles_dir(dir, node).join(handle)) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .take(64)
        .collect()
}

/// Records the blocks `handle` holds addresses in (none: forgets it).
pub fn record_handle(dir: &Path, node: &str, handle: &str, cidrs: &[IpNetwork]) {
    let hdir = handles_dir(dir, node);
    if cidrs.is_empty() {
        let _ = std::fs::remove_file(hdir.join(handle));
        return;
    }
    write_record(&hdir, handle, &cidr_lines(cidrs));
}

/// Writes `handle`'s record in `hdir` (created if missing).
fn write_record(hdir: &Path, handle: &str, text: &str) {
    if make_dir(hdir) {
        write_text(&hdir.join(handle), hdir, &format!(".{handle}.tmp"), text);
    }
}

/// Creates the records' directory (root's alone) unless it exists.
fn make_dir(dir: &Path) -> bool {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => true,
        Err(e) => {
            tracing::debug!("cannot create {}: {e}", dir.display());
            false
        }
    }
}

/// What a handle's record says once this host's cleanup released the
/// handle in etcd (never a CIDR, so `handle_blocks` reads it as none).
const RELEASED: &str = "released\n";

/// Records that this host's cleanup released `handle` in etcd: the
/// release by uid that the module sends right after then needs no round
/// trip. An allocate for the handle replaces the record with its blocks.
pub fn record_released(dir: &Path, node: &str, handle: &str) {
    write_record(&handles_dir(dir, node), handle, RELEASED);
}

/// Whether this host's cleanup released `handle` and nothing allocated
/// it since; the record is consumed.
pub fn take_released(dir: &Path, node: &str, handle: &str) -> bool {
    let path = handles_dir(dir, node).join(handle);
    let released = crate::files::read_bounded(&path).is_ok_and(|b| b == RELEASED.as_bytes());
    released && std::fs::remove_file(&path).is_ok()
}

/// One CIDR per line, as the hint and the handle records hold them.
fn cidr_lines(cidrs: &[IpNetwork]) -> String {
    cidrs.iter().map(|c| format!("{c}\n")).collect()
}

/// Writes `text` to `path` through a temp file in `dir` and a rename.
fn write_text(path: &Path, dir: &Path, tmp_name: &str, text: &str) {
    let tmp = dir.join(tmp_name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::debug!("cannot record the block hint {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_round_trip_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path(), "n1").is_empty());
        let cidrs: Vec<IpNetwork> = vec![
            "198.18.0.64/26".parse().unwrap(),
            "fd00::/122".parse().unwrap(),
        ];
        write(dir.path(), "n1", &cidrs);
        assert_eq!(read(dir.path(), "n1"), cidrs);
        std::fs::write(hint_path(dir.path(), "n1"), "junk\n198.18.0.0/26\n\0\0").unwrap();
        assert_eq!(
            read(dir.path(), "n1"),
            vec!["198.18.0.0/26".parse::<IpNetwork>().unwrap()]
        );
    }

    #[test]
    fn a_released_record_is_taken_once_and_an_allocate_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let (d, block) = (dir.path(), "198.18.0.64/26".parse::<IpNetwork>().unwrap());
        assert!(!take_released(d, "n1", "mesos.a"), "no record");
        record_released(d, "n1", "mesos.a");
        assert!(handle_blocks(d, "n1", "mesos.a").is_empty());
        assert!(take_released(d, "n1", "mesos.a"));
        assert!(!take_released(d, "n1", "mesos.a"), "consumed");

        record_released(d, "n1", "mesos.b");
        record_handle(d, "n1", "mesos.b", &[block]);
        assert!(!take_released(d, "n1", "mesos.b"), "allocated since");
        assert_eq!(handle_blocks(d, "n1", "mesos.b"), vec![block]);
        assert!(!take_released(d, "n2", "mesos.a"), "another node's record");
        std::fs::write(handles_dir(d, "n1").join("mesos.c"), "released\njunk\n").unwrap();
        assert!(!take_released(d, "n1", "mesos.c"), "not exactly the record");
    }
}
