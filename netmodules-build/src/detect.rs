//! Finding the installed Mesos headers and deciding how to build against
//! them. Shared by build.rs (through `#[path]`) and the library, so the
//! tests exercise the very code the build runs.

use std::fmt;
use std::path::{Path, PathBuf};

/// A Mesos release, from `mesos/version.hpp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MesosVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for MesosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Reads `#define MESOS_VERSION "x.y.z"` (the MAJOR/MINOR/PATCH defines
/// are strings, which the preprocessor cannot compare).
pub fn parse_version_hpp(text: &str) -> Result<MesosVersion, String> {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") || words.next() != Some("MESOS_VERSION") {
            continue;
        }
        let value = words.next().unwrap_or("").trim_matches('"');
        let parts: Vec<&str> = value.split('.').collect();
        let nums: Vec<u32> = parts.iter().filter_map(|p| p.parse().ok()).collect();
        if parts.len() == 3 && nums.len() == 3 {
            return Ok(MesosVersion {
                major: nums[0],
                minor: nums[1],
                patch: nums[2],
            });
        }
        return Err(format!(
            "MESOS_VERSION \"{value}\" is not of the form x.y.z"
        ));
    }
    Err("no #define MESOS_VERSION in mesos/version.hpp".into())
}

/// What we build for a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Mesos 0.26: the `calico-mesos-netmodules` package.
    Mesos026,
    /// Mesos 0.25, deprecated: `calico-mesos-netmodules-mesos025`.
    Mesos025,
}

pub fn variant_for(v: MesosVersion) -> Result<Variant, String> {
    match (v.major, v.minor) {
        (0, 26) => Ok(Variant::Mesos026),
        (0, 25) => Ok(Variant::Mesos025),
        (0, m) if m < 25 => Err(format!(
            "Mesos {v} is too old: the network isolator module needs Mesos 0.25 or 0.26"
        )),
        _ => Err(format!(
            "Mesos {v} is not supported yet: the module is built for Mesos 0.26 (and 0.25); \
             0.27 changed the isolator interface"
        )),
    }
}

/// Where the build looks, in order (injectable for tests).
pub struct Probe<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// `pkg-config --cflags-only-I mesos`, as include directories.
    pub pkg_config: &'a dyn Fn() -> Vec<PathBuf>,
    pub standard_dirs: Vec<PathBuf>,
}

/// Mesos headers found on this machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Headers {
    /// The directory holding `mesos/version.hpp`.
    pub include_dir: PathBuf,
    /// Extra include directories (protobuf 2.5, glog, boost, picojson).
    pub extra_dirs: Vec<PathBuf>,
    pub found_via: String,
    pub version: MesosVersion,
}

#[derive(Debug, PartialEq)]
pub enum Detection {
    Found(Headers),
    /// No headers anywhere: the module is skipped (not an error).
    NotFound {
        searched: Vec<String>,
    },
    /// Headers were named explicitly or found but cannot be used.
    Unusable(String),
}

fn has_version_hpp(dir: &Path) -> bool {
    dir.join("mesos/version.hpp").is_file()
}

fn read_version(dir: &Path) -> Result<MesosVersion, String> {
    let path = dir.join("mesos/version.hpp");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_version_hpp(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Looks for the headers: `MESOS_HOME` (its `include/`),
/// `MESOS_INCLUDE_DIR`, `pkg-config mesos`, then the standard directories.
/// A directory named explicitly that holds no headers is an error, not a
/// silent skip.
pub fn detect(probe: &Probe) -> Detection {
    let extra_dirs: Vec<PathBuf> = (probe.var)("MESOS_INCLUDE_DIRS")
        .map(|v| {
            v.split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    let mut searched = Vec::new();
    let mut candidates: Vec<(PathBuf, String, bool)> = Vec::new();
    if let Some(home) = (probe.var)("MESOS_HOME") {
        candidates.push((Path::new(&home).join("include"), "MESOS_HOME".into(), true));
    }
    if let Some(dir) = (probe.var)("MESOS_INCLUDE_DIR") {
        candidates.push((PathBuf::from(dir), "MESOS_INCLUDE_DIR".into(), true));
    }
    for dir in (probe.pkg_config)() {
        candidates.push((dir, "pkg-config mesos".into(), false));
    }
    for dir in &probe.standard_dirs {
        candidates.push((dir.clone(), "a standard include directory".into(), false));
    }
    for (dir, via, explicit) in candidates {
        searched.push(format!("{} ({via})", dir.display()));
        if !has_version_hpp(&dir) {
            if explicit {
                return Detection::Unusable(format!(
                    "{via} points at {}, which has no mesos/version.hpp",
                    dir.display()
                ));
            }
            continue;
        }
        return match read_version(&dir).and_then(|v| variant_for(v).map(|_| v)) {
            Ok(version) => Detection::Found(Headers {
                include_dir: dir,
                extra_dirs,
                found_via: via,
                version,
            }),
            Err(e) => Detection::Unusable(e),
        };
    }
    Detection::NotFound { searched }
}

/// The agent's libmesos.so in the prefix of `include_dir`, if there is one.
pub fn libmesos_next_to(include_dir: &Path) -> Option<PathBuf> {
    let prefix = include_dir.parent()?;
    ["lib", "lib64", "lib/x86_64-linux-gnu"]
        .iter()
        .map(|d| prefix.join(d).join("libmesos.so"))
        .find(|p| p.exists())
}

/// stout's `flags.hpp` in 0.25–0.27 compares an `int*` with 0, a hard
/// error since g++ 11. Returns the fixed text when the bug is present.
pub fn fix_stout_flags(text: &str) -> Option<String> {
    const BUG: &str = "programName_ = argc > 0 ? Path(*(argv[0]))";
    const FIX: &str = "programName_ = *argc > 0 ? Path(*(argv[0]))";
    text.contains(BUG).then(|| text.replace(BUG, FIX))
}

/// Which `std::string` ABI to compile with: an explicit override, else
/// what the agent's libmesos uses (`__cxx11` symbols or not), else the old
/// ABI of the g++ 4.8/4.9 builds Mesos 0.25/0.26 shipped with.
pub fn choose_cxx11_abi(
    override_var: Option<&str>,
    libmesos_symbols: Option<&str>,
) -> (bool, String) {
    match override_var {
        Some("1") => return (true, "NETMODULES_CXX11_ABI=1".into()),
        Some("0") => return (false, "NETMODULES_CXX11_ABI=0".into()),
        _ => {}
    }
    match libmesos_symbols {
        Some(syms) if syms.contains("__cxx11") => (true, "libmesos.so uses the C++11 ABI".into()),
        Some(_) => (false, "libmesos.so uses the old std::string ABI".into()),
        None => (
            false,
            "no libmesos.so found: old std::string ABI, as Mesos 0.25/0.26 packages use".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(version_line: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("include/mesos")).unwrap();
        std::fs::write(
            dir.path().join("include/mesos/version.hpp"),
            format!("#ifndef X\n#define X\n{version_line}\n#define MESOS_MINOR_VERSION \"26\"\n#endif\n"),
        )
        .unwrap();
        dir
    }

    fn probe_with<'a>(
        var: &'a dyn Fn(&str) -> Option<String>,
        pkg: &'a dyn Fn() -> Vec<PathBuf>,
        std_dirs: Vec<PathBuf>,
    ) -> Probe<'a> {
        Probe {
            var,
            pkg_config: pkg,
            standard_dirs: std_dirs,
        }
    }

    #[test]
    fn version_parsing() {
        assert_eq!(
            parse_version_hpp("#define MESOS_VERSION \"0.26.0\"").unwrap(),
            MesosVersion {
                major: 0,
                minor: 26,
                patch: 0
            }
        );
        assert_eq!(
            parse_version_hpp("#define  MESOS_VERSION   \"0.25.1\"  ")
                .unwrap()
                .to_string(),
            "0.25.1"
        );
        assert!(parse_version_hpp("#define MESOS_VERSION \"0.26\"").is_err());
        assert!(parse_version_hpp("#define MESOS_MAJOR_VERSION \"0\"").is_err());
    }

    #[test]
    fn variants() {
        let v = |m| MesosVersion {
            major: 0,
            minor: m,
            patch: 0,
        };
        assert_eq!(variant_for(v(26)), Ok(Variant::Mesos026));
        assert_eq!(variant_for(v(25)), Ok(Variant::Mesos025));
        assert!(variant_for(v(24)).unwrap_err().contains("too old"));
        assert!(variant_for(v(28))
            .unwrap_err()
            .contains("not supported yet"));
    }

    #[test]
    fn mesos_home_comes_first_and_extra_dirs_are_kept() {
        let home = tree("#define MESOS_VERSION \"0.26.0\"");
        let other = tree("#define MESOS_VERSION \"0.25.0\"");
        let home_s = home.path().display().to_string();
        let var = move |k: &str| match k {
            "MESOS_HOME" => Some(home_s.clone()),
            "MESOS_INCLUDE_DIRS" => Some("/opt/pb/include:/opt/glog/include".into()),
            _ => None,
        };
        let pkg = || vec![];
        let d = detect(&probe_with(&var, &pkg, vec![other.path().join("include")]));
        let Detection::Found(h) = d else {
            panic!("{d:?}")
        };
        assert_eq!(h.version.to_string(), "0.26.0");
        assert_eq!(h.include_dir, home.path().join("include"));
        assert_eq!(h.found_via, "MESOS_HOME");
        assert_eq!(
            h.extra_dirs,
            vec![
                PathBuf::from("/opt/pb/include"),
                PathBuf::from("/opt/glog/include")
            ]
        );
    }

    #[test]
    fn pkg_config_then_standard_dirs() {
        let t = tree("#define MESOS_VERSION \"0.25.0\"");
        let var = |_: &str| None;
        let inc = t.path().join("include");
        let pkg = move || vec![inc.clone()];
        let d = detect(&probe_with(&var, &pkg, vec![]));
        assert!(
            matches!(&d, Detection::Found(h) if h.found_via == "pkg-config mesos" && h.version.minor == 25),
            "{d:?}"
        );

        let none = || vec![];
        let d = detect(&probe_with(&var, &none, vec![t.path().join("include")]));
        assert!(
            matches!(&d, Detection::Found(h) if h.found_via == "a standard include directory"),
            "{d:?}"
        );
    }

    #[test]
    fn nothing_found_lists_what_was_searched() {
        let var = |_: &str| None;
        let none = || vec![];
        let d = detect(&probe_with(
            &var,
            &none,
            vec![PathBuf::from("/nonexistent/include")],
        ));
        assert_eq!(
            d,
            Detection::NotFound {
                searched: vec!["/nonexistent/include (a standard include directory)".into()]
            }
        );
    }

    #[test]
    fn explicit_but_wrong_or_unsupported_is_an_error() {
        let empty = tempfile::tempdir().unwrap();
        let p = empty.path().display().to_string();
        let var = move |k: &str| (k == "MESOS_HOME").then(|| p.clone());
        let none = || vec![];
        let d = detect(&probe_with(&var, &none, vec![]));
        assert!(
            matches!(&d, Detection::Unusable(m) if m.contains("has no mesos/version.hpp")),
            "{d:?}"
        );

        let old = tree("#define MESOS_VERSION \"0.24.1\"");
        let o = old.path().display().to_string();
        let var = move |k: &str| (k == "MESOS_HOME").then(|| o.clone());
        let d = detect(&probe_with(&var, &none, vec![]));
        assert!(
            matches!(&d, Detection::Unusable(m) if m.contains("0.24.1 is too old")),
            "{d:?}"
        );
    }

    #[test]
    fn stout_flags_fix_and_abi_choice() {
        let buggy = "  programName_ = argc > 0 ? Path(*(argv[0])).basename() : \"\";";
        assert_eq!(
            fix_stout_flags(buggy).unwrap(),
            "  programName_ = *argc > 0 ? Path(*(argv[0])).basename() : \"\";"
        );
        assert_eq!(
            fix_stout_flags("programName_ = argc > 0 ? Path(argv[0])"),
            None
        );
        assert!(choose_cxx11_abi(Some("1"), None).0);
        assert!(!choose_cxx11_abi(None, Some("_ZN5mesos4HookD2Ev")).0);
        assert!(choose_cxx11_abi(None, Some("_ZNK5mesos8internal7cxx11B5cxx11Ev __cxx11")).0);
        assert!(!choose_cxx11_abi(None, None).0);
    }
}
