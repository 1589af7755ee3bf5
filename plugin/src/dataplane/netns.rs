//! Safe entry into a container's network namespace.
//!
//! `setns` moves only the calling thread, and a netlink socket or a
//! `/proc/sys/net` file belongs to the namespace of the thread that opened
//! it. So every namespace switch happens on a short-lived dedicated thread:
//! the runtime's threads never leave the host namespace.

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use rtnetlink::Handle;

use super::DataplaneError;

/// An open handle on the network namespace of a process.
pub struct Netns {
    pub pid: u32,
    file: File,
    /// (device, inode) of the namespace: its identity.
    id: (u64, u64),
}

/// The identity of the network namespace behind `/proc/.../ns/net`.
fn ns_id(path: &Path) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// The namespaces that are the host's, never a container's: the plugin's
/// own (the agent runs it in the host namespace), its parent's (the agent)
/// and PID 1's.
fn host_namespaces() -> Vec<(u64, u64)> {
    let parent = std::os::unix::process::parent_id();
    [
        "/proc/self/ns/net".to_string(),
        format!("/proc/{parent}/ns/net"),
        "/proc/1/ns/net".into(),
    ]
    .iter()
    .filter_map(|p| ns_id(Path::new(p)).ok())
    .collect()
}

impl Netns {
    /// The namespace of a container's process: refuses a pid that is gone
    /// and one whose namespace is the host's (plumbing it would rewrite the
    /// host's own eth0, routes and forwarding).
    pub fn of_container_pid(pid: u32) -> Result<Netns, DataplaneError> {
        let ns = Netns::of_pid(pid).map_err(|e| match e {
            DataplaneError::NoNamespace { detail, .. } if detail.contains("No such file") => {
                DataplaneError::PidGone(pid)
            }
            other => other,
        })?;
        if host_namespaces().contains(&ns.id) {
            return Err(DataplaneError::NotContainer(pid));
        }
        Ok(ns)
    }

    /// Opens `/proc/<pid>/ns/net`; a process that is gone is a clear error.
    pub fn of_pid(pid: u32) -> Result<Netns, DataplaneError> {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let no_ns = |e: std::io::Error| DataplaneError::NoNamespace {
            pid,
            detail: e.to_string(),
        };
        let file = File::open(&path).map_err(no_ns)?;
        let m = file.metadata().map_err(no_ns)?;
        Ok(Netns {
            pid,
            file,
            id: (m.dev(), m.ino()),
        })
    }

    /// Runs `f` on a new thread that has entered this namespace, and waits
    /// for it. The thread ends with `f`, so the switch never leaks.
    pub fn run<T, F>(&self, f: F) -> Result<T, DataplaneError>
    where
        T: Send,
        F: FnOnce() -> Result<T, DataplaneError> + Send,
    {
        let fd = self.file.as_fd();
        let pid = self.pid;
        let id = self.id;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| {
                        DataplaneError::NoNamespace {
                            pid,
                            detail: format!("setns: {e}"),
                        }
                    })?;
                    // Whatever `f` writes (global sysctls included) must
                    // land in this namespace and nowhere else.
                    if ns_id(Path::new("/proc/thread-self/ns/net")).ok() != Some(id) {
                        return Err(DataplaneError::Internal(format!(
                            "entered the wrong network namespace for pid {pid}"
                        )));
                    }
                    f()
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(DataplaneError::Internal("namespace thread panicked".into()))
                })
        })
    }

    /// A netlink handle whose socket lives in this namespace. Must be called
    /// inside the tokio runtime, which drives the connection.
    pub fn netlink(&self) -> Result<Handle, DataplaneError> {
        let fd = self.run(|| {
            Socket::new(NETLINK_ROUTE)
                .map(|s| s.into_raw_fd())
                .map_err(|e| DataplaneError::Internal(format!("netlink socket: {e}")))
        })?;
        // SAFETY: `fd` is a netlink socket we just created and own.
        let socket = unsafe { TokioSocket::from_raw_fd(fd) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(connection);
        Ok(handle)
    }

    pub fn raw_file(&self) -> &File {
        &self.file
    }
}

/// A netlink handle in the namespace the plugin runs in (the agent host's).
pub fn host_netlink() -> Result<Handle, DataplaneError> {
    let (connection, handle, _) = rtnetlink::new_connection()
        .map_err(|e| DataplaneError::Internal(format!("netlink socket: {e}")))?;
    tokio::spawn(connection);
    Ok(handle)
}
