//! Builds the calico-mesos Mesos network isolator + hook module
//! (`libmesos_network_isolator.so`) against the installed Mesos headers;
//! see build.rs and README.md. The constants tell the rest of the build
//! (packaging) what was built.

pub mod detect;
pub mod rerun;
pub mod sources;

/// The Mesos version the module was built for, if headers were found.
pub const MESOS_VERSION: Option<&str> = option_env!("NETMODULES_MESOS_VERSION");

/// Where the built module is, if it was built.
pub const MODULE_PATH: Option<&str> = option_env!("NETMODULES_MODULE_PATH");
