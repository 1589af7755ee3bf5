//! Shared test harness: a real etcd per test, the plugin binary, and the
//! Calico documents calico/node would have written.
#![allow(dead_code)]

pub mod cluster;
pub mod consistency;
pub mod etcd;
pub mod netns;
pub mod plugin;

pub use etcd::Etcd;
pub use plugin::Plugin;
