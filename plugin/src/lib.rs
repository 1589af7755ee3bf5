//! calico-mesos: Calico IP-per-container networking for Apache Mesos.
//!
//! The binary has two faces. With no arguments it speaks the net-modules
//! plugin protocol (one JSON request on stdin, one JSON answer on stdout);
//! with a subcommand it is an operator tool. The library holds everything,
//! so integration tests and benchmarks reach the same code.

pub mod cli;
pub mod commands;
pub mod config;
pub mod dataplane;
pub mod datastore;
pub mod doctor;
pub mod endpoint;
pub mod faults;
pub mod files;
pub mod gc;
pub mod ipam;
pub mod logging;
pub mod names;
pub mod profiles;
pub mod protocol;
pub mod workload;
