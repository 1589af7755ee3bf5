//! A Calico cluster for dataplane tests: a real etcd seeded as calico/node
//! would seed it, an IPv4 and an IPv6 pool, and simulated agent hosts that
//! reach the etcd.

use super::netns::SimHost;
use super::{Etcd, Plugin};

pub struct Cluster {
    pub etcd: Etcd,
}

impl Cluster {
    pub fn new(nodes: &[&str]) -> Cluster {
        let etcd = Etcd::start();
        etcd.seed_calico(nodes);
        let admin = Plugin::new(&etcd, nodes[0]);
        admin.add_pool("198.18.0.0/24", 26);
        admin.add_pool("fd00:18::/120", 122);
        Cluster { etcd }
    }

    /// A simulated host that reaches this cluster's etcd.
    pub fn host(&self) -> SimHost {
        let mut h = SimHost::new();
        h.reach_etcd(&self.etcd.endpoints());
        h
    }

    /// The plugin as the agent of `host` runs it, as node `node`.
    pub fn plugin(&self, node: &str, host: &SimHost) -> Plugin {
        Plugin::new(&self.etcd, node).on_host(host.ns.pid)
    }
}
