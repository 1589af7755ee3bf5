//! What makes the build script run again: the environment it reads and
//! the files it found and read. Cargo compares mtimes only, and reruns on
//! every build for a path that does not exist, so only existing files are
//! named. (The cc crate prints its own lines for CXX, CXXFLAGS and the
//! variables the compiler reads.) Shared by build.rs (through `#[path]`)
//! and the tests.

use std::path::{Path, PathBuf};

use crate::detect::Headers;

/// Environment variables the build script reads itself or through
/// pkg-config.
pub const ENV_VARS: &[&str] = &[
    "MESOS_HOME",
    "MESOS_INCLUDE_DIR",
    "MESOS_INCLUDE_DIRS",
    "PKG_CONFIG_PATH",
    "PKG_CONFIG_LIBDIR",
    "PKG_CONFIG_SYSROOT_DIR",
    "NETMODULES_CXX11_ABI",
    "CARGO_TARGET_DIR",
];

/// Our own inputs, relative to the package.
const SOURCES: &[&str] = &["cpp", "src/detect.rs", "src/sources.rs", "src/rerun.rs"];

/// The `cargo:` lines to print, for the headers found (if any) and the
/// agent's libmesos.so next to them (if any).
pub fn directives(found: Option<&Headers>, libmesos: Option<&Path>) -> Vec<String> {
    let mut out: Vec<String> = ENV_VARS
        .iter()
        .map(|v| format!("cargo:rerun-if-env-changed={v}"))
        .collect();
    out.extend(
        SOURCES
            .iter()
            .map(|s| format!("cargo:rerun-if-changed={s}")),
    );
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(h) = found {
        files.push(h.include_dir.join("mesos/version.hpp"));
        // Package upgrades keep the files' old mtimes, but replacing them
        // changes the directory's (and cargo scans a directory whole).
        files.push(h.include_dir.join("mesos"));
        // Copied, fixed, into OUT_DIR (see fix_stout_flags).
        for dir in std::iter::once(&h.include_dir).chain(&h.extra_dirs) {
            files.push(dir.join("stout/flags/flags.hpp"));
        }
    }
    // The std::string ABI is read from it.
    files.extend(libmesos.map(Path::to_path_buf));
    out.extend(
        files
            .iter()
            .filter(|p| p.exists())
            .map(|p| format!("cargo:rerun-if-changed={}", p.display())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::MesosVersion;

    fn headers(include_dir: PathBuf, extra_dirs: Vec<PathBuf>) -> Headers {
        Headers {
            include_dir,
            extra_dirs,
            found_via: "MESOS_HOME".into(),
            version: MesosVersion {
                major: 0,
                minor: 26,
                patch: 0,
            },
        }
    }

    fn file(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "x").unwrap();
    }

    fn watches(lines: &[String], path: &Path) -> bool {
        lines.contains(&format!("cargo:rerun-if-changed={}", path.display()))
    }

    // Replacing a 0.25 tree by a 0.26 one at the same MESOS_HOME rebuilt
    // nothing: the detected files were not watched.
    #[test]
    fn the_detected_headers_are_watched() {
        let home = tempfile::tempdir().unwrap();
        let inc = home.path().join("include");
        file(&inc.join("mesos/version.hpp"));
        file(&inc.join("stout/flags/flags.hpp"));
        let extra = tempfile::tempdir().unwrap();
        file(&extra.path().join("stout/flags/flags.hpp"));
        let lib = home.path().join("lib/libmesos.so");
        file(&lib);
        let h = headers(inc.clone(), vec![extra.path().to_path_buf()]);
        let lines = directives(Some(&h), Some(&lib));
        assert!(
            watches(&lines, &inc.join("mesos/version.hpp")),
            "{lines:#?}"
        );
        // Package upgrades keep the files' old mtimes; the directory's
        // changes when they are replaced.
        assert!(watches(&lines, &inc.join("mesos")), "{lines:#?}");
        assert!(
            watches(&lines, &inc.join("stout/flags/flags.hpp")),
            "{lines:#?}"
        );
        assert!(
            watches(&lines, &extra.path().join("stout/flags/flags.hpp")),
            "{lines:#?}"
        );
        assert!(watches(&lines, &lib), "the ABI is read from it: {lines:#?}");
    }

    // Cargo reruns every time for a path that does not exist.
    #[test]
    fn only_existing_files_are_watched() {
        let home = tempfile::tempdir().unwrap();
        let inc = home.path().join("include");
        file(&inc.join("mesos/version.hpp"));
        let h = headers(inc.clone(), vec![PathBuf::from("/nonexistent/include")]);
        let lines = directives(Some(&h), None);
        for line in &lines {
            if let Some(p) = line.strip_prefix("cargo:rerun-if-changed=") {
                let p = Path::new(p);
                let p = if p.is_relative() {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
                } else {
                    p.to_path_buf()
                };
                assert!(p.exists(), "{line}");
            }
        }
        assert!(!watches(&lines, &inc.join("stout/flags/flags.hpp")));
        let without = directives(None, None);
        assert!(without
            .iter()
            .all(|l| !l.contains(&*home.path().to_string_lossy())));
    }

    #[test]
    fn the_environment_it_reads_is_watched() {
        let lines = directives(None, None);
        for v in [
            "MESOS_HOME",
            "MESOS_INCLUDE_DIR",
            "MESOS_INCLUDE_DIRS",
            "NETMODULES_CXX11_ABI",
            "PKG_CONFIG_PATH",
            "PKG_CONFIG_LIBDIR",
            "PKG_CONFIG_SYSROOT_DIR",
        ] {
            assert!(
                lines.contains(&format!("cargo:rerun-if-env-changed={v}")),
                "{v}: {lines:#?}"
            );
        }
    }
}
