//! The C++ files of the module, shared by build.rs (through `#[path]`) and
//! the tests, so the unit tests compile exactly the core the module uses.

/// The plain C++11 core under `cpp/`: no Mesos headers, unit-tested.
pub const CORE: &[&str] = &[
    "json.cpp",
    "deadline.cpp",
    "subprocess.cpp",
    "plugin_client.cpp",
    "container_store.cpp",
    "registry.cpp",
    "module_config.cpp",
    "workers.cpp",
    "isolator_logic.cpp",
];

/// The unit tests of the core under `cpp/tests/`, one binary.
pub const TESTS: &[&str] = &[
    "tests/harness.cpp",
    "tests/client_test.cpp",
    "tests/isolator_test.cpp",
    "tests/config_test.cpp",
    "tests/subprocess_test.cpp",
    "tests/workers_test.cpp",
    "tests/store_test.cpp",
];

/// The Mesos adapter under `cpp/`, built only against Mesos headers.
pub const ADAPTER: &[&str] = &["mesos/network_isolator.cpp"];
