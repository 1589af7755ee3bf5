//! Config input bounds: absurd timeouts, a config "file" that is a device,
//! garbage PEM files, bad ports and schemes each give one clear line and
//! exit 1, in protocol mode (a JSON error) and as an operator command.

mod common;

use common::{Etcd, Plugin};

/// Protocol mode and one CLI command, both expected to fail with `text`.
fn both_modes_refuse(p: &Plugin, text: &str) {
    let r = p.allocate("u", 1, 0);
    assert_eq!(r.status, 1, "{r:?}");
    assert!(
        r.error().unwrap().contains(text),
        "protocol: wanted {text:?}: {r:?}"
    );
    let out = p.cli(&["pool", "list"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(text), "cli: wanted {text:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_timeouts_are_refused() {
    let etcd = Etcd::start();
    let p = Plugin::new(&etcd, "agent-1");
    for (toml, text) in [
        (
            "timeout_ms = 9223372036854775807",
            "timeout_ms 9223372036854775807 is outside 100..120000",
        ),
        ("timeout_ms = 0", "timeout_ms 0 is outside"),
        ("deadline_ms = 50", "deadline_ms 50 is outside"),
        ("deadline_ms = 999999", "deadline_ms 999999 is outside"),
        (
            "timeout_ms = 5000\ndeadline_ms = 1000",
            "timeout_ms 5000 is longer than deadline_ms 1000",
        ),
        (
            "timeout_ms = 1000\nconnect_timeout_ms = 2000",
            "connect_timeout_ms 2000 is outside",
        ),
    ] {
        p.set_config(&format!("[etcd]\n{toml}\n"));
        both_modes_refuse(&p, text);
    }
}

#[test]
fn a_device_as_config_file_is_refused_at_once() {
    let etcd = Etcd::start();
    let p = Plugin::new(&etcd, "agent-1").with_env("CALICO_MESOS_CONFIG", "/dev/zero");
    both_modes_refuse(&p, "not a regular file");
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, format!("# {}\n", "x".repeat(2 << 20))).unwrap();
    let p = Plugin::new(&etcd, "agent-1").with_env("CALICO_MESOS_CONFIG", big.to_str().unwrap());
    both_modes_refuse(&p, "larger than");
}

#[test]
fn garbage_pem_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "this is not a certificate\n").unwrap();
    let junk = junk.to_str().unwrap();
    let p = Plugin::with_endpoints("https://127.0.0.1:1", "agent-1")
        .with_env("ETCD_CA_CERT_FILE", junk);
    both_modes_refuse(&p, &format!("not a PEM certificate: {junk}"));

    let tls = common::etcd::TlsFiles::generate(dir.path());
    let p = Plugin::with_endpoints("https://127.0.0.1:1", "agent-1")
        .with_env("ETCD_CA_CERT_FILE", &tls.ca)
        .with_env("ETCD_CERT_FILE", &tls.cert)
        .with_env("ETCD_KEY_FILE", junk);
    both_modes_refuse(&p, &format!("not a PEM private key: {junk}"));
    let p = Plugin::with_endpoints("https://127.0.0.1:1", "agent-1")
        .with_env("ETCD_CA_CERT_FILE", "/dev/zero");
    both_modes_refuse(&p, "not a regular file");
}

#[test]
fn bad_endpoints_are_refused() {
    for (url, text) in [
        ("http://127.0.0.1:70000", "port '70000' outside 1..65535"),
        ("http://127.0.0.1:0", "port '0' outside"),
        (
            "ftp://127.0.0.1:2379",
            "must start with http:// or https://",
        ),
        ("http://:2379", "has no host"),
        ("http://[::1:2379", "unclosed ["),
        ("http://127.0.0.1:2379/v3/kv", "nothing more"),
    ] {
        let p = Plugin::with_endpoints(url, "agent-1");
        both_modes_refuse(&p, text);
    }
}
