//! Reading the operator's files (config, TLS) with bounds: only regular
//! files, never more than a limit, so `/dev/zero` or a FIFO given by
//! mistake is a clear error instead of a hang or an out-of-memory.

use std::io::Read;
use std::path::Path;

/// The most any config or TLS file may hold.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads `path` if it is a regular file of at most `MAX_FILE_BYTES`.
pub fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// What a PEM file must hold.
#[derive(Clone, Copy)]
pub enum Pem {
    Certificate,
    PrivateKey,
}

/// Checks that `bytes` hold a PEM block of the given kind (the TLS layer
/// would only fail later, with a message that does not name the file).
pub fn check_pem(bytes: &[u8], kind: Pem) -> Result<(), &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not a PEM file (not text)")?;
    let ok = match kind {
        Pem::Certificate => {
            text.contains("-----BEGIN CERTIFICATE-----")
                && text.contains("-----END CERTIFICATE-----")
        }
        Pem::PrivateKey => text
            .lines()
            .any(|l| l.starts_with("-----BEGIN ") && l.ends_with("PRIVATE KEY-----")),
    };
    if ok {
        Ok(())
    } else {
        Err(match kind {
            Pem::Certificate => "not a PEM certificate",
            Pem::PrivateKey => "not a PEM private key",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_big_files_and_garbage_are_refused() {
        let e = read_bounded(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let e = read_bounded(&big).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        assert_eq!(
            check_pem(b"garbage", Pem::Certificate),
            Err("not a PEM certificate")
        );
        assert!(check_pem(
            b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
            Pem::Certificate
        )
        .is_ok());
        assert!(check_pem(b"-----BEGIN EC PRIVATE KEY-----\nAA==\n", Pem::PrivateKey).is_ok());
        assert!(check_pem(b"-----BEGIN CERTIFICATE-----\n", Pem::PrivateKey).is_err());
    }
}
