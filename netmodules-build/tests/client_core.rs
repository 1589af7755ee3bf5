//! Compiles the plain C++11 plugin client core with the system C++
//! compiler (no Mesos headers) and runs its unit tests, which drive it
//! against scripts that answer, fail, hang and print too much.

use std::path::Path;
use std::process::Command;

#[test]
fn plugin_client_core_unit_tests() {
    let cpp = Path::new(env!("CARGO_MANIFEST_DIR")).join("cpp");
    let scratch = tempfile::tempdir().unwrap();
    let binary = scratch.path().join("client_test");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let compiled = Command::new(&cxx)
        .args([
            "-std=c++11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O1",
            "-pthread",
        ])
        .args(netmodules_build::sources::CORE)
        .args(netmodules_build::sources::TESTS)
        .arg("-o")
        .arg(&binary)
        .current_dir(&cpp)
        .output()
        .expect("a C++ compiler (g++) is installed");
    assert!(
        compiled.status.success(),
        "the client core does not compile as strict C++11:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let run = Command::new(&binary).arg(&work).output().unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    println!("{report}");
    assert!(run.status.success(), "client core tests failed:\n{report}");
    assert!(
        report
            .lines()
            .last()
            .unwrap_or("")
            .ends_with(" passed, 0 failed"),
        "{report}"
    );
}
