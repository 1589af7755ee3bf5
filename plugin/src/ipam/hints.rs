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
    write_list(
        &hint_path(dir, node),
        dir,
        &format!(".blocks.{node}.tmp"),
        cidrs,
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
    use std::os::unix::fs::DirBuilderExt;
    if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&hdir) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            tracing::debug!("cannot create {}: {e}", hdir.display());
            return;
        }
    }
    write_list(&hdir.join(handle), &hdir, &format!(".{handle}.tmp"), cidrs);
}

/// Writes one CIDR per line to `path` through a temp file and a rename.
fn write_list(path: &Path, dir: &Path, tmp_name: &str, cidrs: &[IpNetwork]) {
    let tmp = dir.join(tmp_name);
    let text: String = cidrs.iter().map(|c| format!("{c}\n")).collect();
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
}
