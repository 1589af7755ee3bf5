//! Filled by the netmodules issue: build.rs compiles the Mesos module.
