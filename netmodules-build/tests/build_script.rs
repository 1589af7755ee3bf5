//! The build script reruns when what it reads changes: every environment
//! variable build.rs or the detection reads is one it tells cargo about.

use std::path::Path;

use netmodules_build::rerun::ENV_VARS;

/// The names in `var("NAME")` and `(probe.var)("NAME")` calls.
fn vars_read(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for pattern in ["var(\"", "var)(\""] {
        for (at, _) in source.match_indices(pattern) {
            let rest = &source[at + pattern.len()..];
            if let Some(end) = rest.find('"') {
                names.push(rest[..end].to_string());
            }
        }
    }
    names
}

#[test]
fn every_variable_read_reruns_the_build() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut read = Vec::new();
    for file in ["build.rs", "src/detect.rs"] {
        read.extend(vars_read(&std::fs::read_to_string(dir.join(file)).unwrap()));
    }
    assert!(
        read.iter().any(|v| v == "MESOS_HOME"),
        "the scan finds reads: {read:?}"
    );
    for name in read {
        // OUT_DIR is cargo's own; it changes with the build, not the machine.
        if name != "OUT_DIR" {
            assert!(
                ENV_VARS.contains(&name.as_str()),
                "{name} is read but not watched"
            );
        }
    }
}

#[test]
fn build_rs_prints_the_directives() {
    let build =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("build.rs")).unwrap();
    assert!(build.contains("rerun::directives(found, libmesos.as_deref())"));
    assert!(
        !build.contains("cargo_metadata(false)"),
        "cc's rerun-if-env-changed lines need cargo_metadata"
    );
}
