//! Compiles the Mesos network isolator + hook module (cpp/) for the Mesos
//! headers installed on this machine. Without headers it says what it
//! skipped and how to point it at Mesos, and the workspace builds anyway.

#[path = "src/detect.rs"]
mod detect;
#[path = "src/rerun.rs"]
mod rerun;
// The test list in it is for the tests, not the build.
#[allow(dead_code)]
#[path = "src/sources.rs"]
mod sources;

use std::path::{Path, PathBuf};
use std::process::Command;

use detect::{
    choose_cxx11_abi, detect, fix_stout_flags, libmesos_next_to, Detection, Headers, Probe,
};

fn main() {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let probe = Probe {
        var: &var,
        pkg_config: &pkg_config_include_dirs,
        standard_dirs: vec!["/usr/include".into(), "/usr/local/include".into()],
    };
    let detection = detect(&probe);
    let found = match &detection {
        Detection::Found(h) => Some(h),
        _ => None,
    };
    let libmesos = found.and_then(|h| libmesos_next_to(&h.include_dir));
    for line in rerun::directives(found, libmesos.as_deref()) {
        println!("{line}");
    }
    match detection {
        Detection::NotFound { searched } => {
            println!(
                "cargo:warning=netmodules: no Mesos headers found (searched {}); the Mesos module \
                 was NOT built. Point the build at Mesos with MESOS_HOME=<prefix> (holding \
                 include/mesos/version.hpp) or MESOS_INCLUDE_DIR, plus MESOS_INCLUDE_DIRS for \
                 protobuf 2.5/glog/boost/picojson if they live elsewhere.",
                searched.join(", ")
            );
        }
        Detection::Unusable(why) => {
            panic!("netmodules: cannot build the Mesos module: {why}");
        }
        Detection::Found(headers) => build_module(&headers, libmesos.as_deref()),
    }
}

fn pkg_config_include_dirs() -> Vec<PathBuf> {
    Command::new("pkg-config")
        .args(["--cflags-only-I", "mesos"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|f| f.strip_prefix("-I"))
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default()
}

/// `nm -D` of the agent's libmesos.so.
fn libmesos_symbols(libmesos: &Path) -> Option<String> {
    Command::new("nm")
        .arg("-D")
        .arg(libmesos)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `<target dir>/netmodules/<version>/`: a stable place for packaging.
fn artifact_dir(version: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .ok()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| {
            let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
            // OUT_DIR = <target>/<profile>/build/<pkg>-<hash>/out
            out.ancestors().nth(4).unwrap().to_path_buf()
        });
    target.join("netmodules").join(version)
}

fn build_module(h: &Headers, libmesos: Option<&Path>) {
    let version = h.version.to_string();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());

    // Work around the stout header g++ >= 11 rejects, without touching
    // the installed tree: a fixed copy goes first on the include path.
    let overlay = out.join("stout-fix");
    for dir in std::iter::once(&h.include_dir).chain(&h.extra_dirs) {
        let flags = dir.join("stout/flags/flags.hpp");
        if let Some(fixed) = std::fs::read_to_string(&flags)
            .ok()
            .and_then(|t| fix_stout_flags(&t))
        {
            std::fs::create_dir_all(overlay.join("stout/flags")).unwrap();
            std::fs::write(overlay.join("stout/flags/flags.hpp"), fixed).unwrap();
        }
    }

    let abi_override = std::env::var("NETMODULES_CXX11_ABI").ok();
    let (cxx11_abi, why) = choose_cxx11_abi(
        abi_override.as_deref(),
        libmesos.and_then(libmesos_symbols).as_deref(),
    );
    println!(
        "cargo:warning=netmodules: building the Mesos module for Mesos {version} (headers in {} via {}); \
         std::string ABI: {} ({why})",
        h.include_dir.display(),
        h.found_via,
        if cxx11_abi { "C++11" } else { "old" }
    );

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++11")
        .pic(true)
        .warnings(true)
        .extra_warnings(true)
        // Link lines come only from compile(), not used here; this keeps
        // cc's rerun-if-env-changed lines (CXX, CXXFLAGS, CPATH, ...).
        .cargo_metadata(true)
        // std::thread on EL7's libstdc++ needs it at compile and link time.
        .flag("-pthread")
        .define("PICOJSON_USE_INT64", None)
        .define("_GLIBCXX_USE_CXX11_ABI", if cxx11_abi { "1" } else { "0" })
        .define(
            "NETMODULES_MESOS_MINOR",
            h.version.minor.to_string().as_str(),
        );
    // -isystem: warnings then only come from our own code.
    for dir in std::iter::once(&overlay)
        .chain(std::iter::once(&h.include_dir))
        .chain(&h.extra_dirs)
    {
        build.flag("-isystem").flag(dir.to_str().unwrap());
    }
    for src in sources::CORE.iter().chain(sources::ADAPTER) {
        build.file(Path::new("cpp").join(src));
    }
    let objects = build.compile_intermediates();

    let dir = artifact_dir(&version);
    std::fs::create_dir_all(&dir).unwrap();
    let so = dir.join("libmesos_network_isolator.so");
    // libmesos, protobuf and glog resolve at load time inside the agent:
    // no --no-undefined, and never the mesos/*.pb.cc (libmesos has them).
    let status = build
        .get_compiler()
        .to_command()
        .arg("-shared")
        .arg("-o")
        .arg(&so)
        .args(&objects)
        .arg("-pthread")
        .arg("-Wl,-z,relro,-z,now")
        .status()
        .expect("the C++ compiler runs");
    assert!(
        status.success(),
        "netmodules: linking {} failed",
        so.display()
    );

    std::fs::write(
        dir.join("module.env"),
        format!(
            "MESOS_VERSION={version}\nMESOS_MINOR={}\nCXX11_ABI={}\nMODULE_SO={}\n",
            h.version.minor,
            u8::from(cxx11_abi),
            so.display()
        ),
    )
    .unwrap();
    println!("cargo:rustc-env=NETMODULES_MESOS_VERSION={version}");
    println!("cargo:rustc-env=NETMODULES_MODULE_PATH={}", so.display());
}
