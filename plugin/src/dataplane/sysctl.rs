//! `/proc/sys/net` writes. They apply to the namespace of the thread that
//! opens the file: host-side ones run on the plugin's own thread (the host
//! namespace), container-side ones inside `Netns::run`.

use std::path::Path;

use super::DataplaneError;

/// Sets `key` (dotted form, e.g. `net.ipv4.conf.cali1.proxy_arp`), read
/// first: a value that is already right is never written (as netavark).
pub fn set(key: &str, value: &str) -> Result<(), DataplaneError> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    let err = |e: std::io::Error| DataplaneError::Sysctl {
        key: key.to_string(),
        detail: e.to_string(),
    };
    if std::fs::read_to_string(&path).map_err(err)?.trim() == value {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(err)
}

/// Like `set`, but a failure is only logged (settings Felix also fixes,
/// or that old kernels lack).
pub fn set_or_warn(key: &str, value: &str) {
    if let Err(e) = set(key, value) {
        tracing::warn!("{e}");
    }
}
