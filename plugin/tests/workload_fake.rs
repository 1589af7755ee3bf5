//! The all-or-nothing and rerun logic of `workload.rs`, driven through a
//! fake `Dataplane` that fails at each step (a real etcd underneath): no
//! failure leaves an endpoint or a link behind, validation failures write
//! nothing, cleanup tries every step and reports each failure.

mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use calico_mesos::config::{Config, Sources};
use calico_mesos::dataplane::{
    host_veth_name, ContainerNetwork, Dataplane, DataplaneError, HostEnd, HostLink, Plumbed, Probe,
};
use calico_mesos::datastore::Datastore;
use calico_mesos::protocol::{CleanupArgs, IsolateArgs};
use calico_mesos::workload;
use common::consistency::check_ipam;
use common::{Etcd, Plugin};

const NODE: &str = "agent-1";
const WEP: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints/";

/// Which step fails, and what the fake's "kernel" holds.
#[derive(Default)]
struct Fake {
    fail: Option<&'static str>,
    links: RefCell<BTreeSet<String>>,
    calls: RefCell<Vec<String>>,
    /// Runs inside setup, e.g. to stop etcd between plumbing and endpoint.
    during_setup: Option<Box<dyn Fn()>>,
}

impl Fake {
    fn failing(step: &'static str) -> Fake {
        Fake {
            fail: Some(step),
            ..Fake::default()
        }
    }

    fn step(&self, name: &str) -> Result<(), DataplaneError> {
        self.calls.borrow_mut().push(name.to_string());
        if self.fail == Some(name) {
            return Err(DataplaneError::Internal(format!(
                "injected failure at {name}"
            )));
        }
        Ok(())
    }
}

impl Dataplane for Fake {
    async fn probe(&self, net: &ContainerNetwork) -> Result<Probe, DataplaneError> {
        self.step("probe")?;
        let name = host_veth_name(&net.container_id);
        Ok(Probe {
            host_end: if self.links.borrow().contains(&name) {
                HostEnd::Ours { index: 7 }
            } else {
                HostEnd::Absent
            },
            paired: false,
        })
    }
    async fn check_pid(&self, _pid: u32) -> Result<(), DataplaneError> {
        self.step("check_pid")
    }
    async fn setup(&self, net: &ContainerNetwork) -> Result<Plumbed, DataplaneError> {
        self.step("setup")?;
        let name = host_veth_name(&net.container_id);
        self.links.borrow_mut().insert(name.clone());
        if let Some(f) = &self.during_setup {
            f();
        }
        Ok(Plumbed {
            host_ifname: name,
            container_mac: "02:00:00:00:00:01".into(),
        })
    }
    async fn teardown(&self, host_ifname: &str) -> Result<bool, DataplaneError> {
        self.step("teardown")?;
        Ok(self.links.borrow_mut().remove(host_ifname))
    }
    async fn host_links(&self) -> Result<BTreeSet<String>, DataplaneError> {
        self.step("host_links")?;
        Ok(self.links.borrow().clone())
    }
    async fn host_ends(&self) -> Result<Vec<HostLink>, DataplaneError> {
        self.step("host_ends")?;
        Ok(self
            .links
            .borrow()
            .iter()
            .map(|name| HostLink {
                name: name.clone(),
                alias: None,
                leads_to_container: true,
            })
            .collect())
    }
}

struct Env(Vec<(&'static str, String)>);

impl Sources for Env {
    fn env(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }
    fn read(&self, _: &Path) -> std::io::Result<String> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn hostname(&self) -> Option<String> {
        None
    }
}

struct World {
    etcd: Etcd,
    cfg: Config,
    plugin: Plugin,
    _locks: tempfile::TempDir,
}

fn world() -> World {
    world_on(Etcd::start())
}

fn world_on(etcd: Etcd) -> World {
    etcd.seed_calico(&[NODE]);
    let plugin = Plugin::new(&etcd, NODE);
    plugin.add_pool("198.18.0.0/24", 26);
    let locks = tempfile::tempdir().unwrap();
    let cfg = Config::load_from(&Env(vec![
        ("ETCD_ENDPOINTS", etcd.endpoints()),
        ("NODENAME", NODE.into()),
        ("CALICO_MESOS_LOG_FILE", "none".into()),
        ("CALICO_MESOS_LOCK_DIR", locks.path().display().to_string()),
    ]))
    .unwrap();
    World {
        etcd,
        cfg,
        plugin,
        _locks: locks,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn args(cid: &str, ip: &str) -> IsolateArgs {
    IsolateArgs {
        hostname: NODE.into(),
        container_id: cid.into(),
        pid: 4242,
        ipv4: vec![ip.parse::<Ipv4Addr>().unwrap()],
        ipv6: vec![],
        netgroups: vec!["web".into()],
        labels: Default::default(),
    }
}

fn isolate(cfg: &Config, dp: &Fake, a: &IsolateArgs) -> anyhow::Result<()> {
    rt().block_on(async {
        let ds = Datastore::connect(&cfg.etcd).await?;
        workload::isolate(cfg, &ds, dp, a).await
    })
}

fn cleanup(cfg: &Config, dp: &Fake, cid: &str) -> anyhow::Result<()> {
    rt().block_on(async {
        let ds = Datastore::connect(&cfg.etcd).await?;
        let a = CleanupArgs {
            hostname: NODE.into(),
            container_id: cid.into(),
        };
        workload::cleanup(cfg, &ds, dp, &a).await
    })
}

#[test]
fn a_failure_at_each_isolate_step_leaves_nothing_and_validation_writes_nothing() {
    let w = world();
    let ip = w.plugin.allocate("c1", 1, 0).ips("ipv4").remove(0);
    for step in ["check_pid", "probe", "setup"] {
        let dp = Fake::failing(step);
        let rev = w.etcd.revision();
        let err = isolate(&w.cfg, &dp, &args("c1", &ip)).unwrap_err();
        assert!(
            format!("{err:#}").contains("injected failure"),
            "{step}: {err:#}"
        );
        assert_eq!(w.etcd.revision(), rev, "{step}: etcd was written");
        assert!(dp.links.borrow().is_empty(), "{step}: a link was left");
        assert!(!dp.calls.borrow().contains(&"setup".to_string()) || step == "setup");
    }
    // Validation runs in the order: the pid before the addresses.
    let dp = Fake::failing("check_pid");
    let err = isolate(&w.cfg, &dp, &args("c1", "198.18.0.250")).unwrap_err();
    assert!(format!("{err:#}").contains("injected failure"), "{err:#}");
    let dp = Fake::default();
    let err = isolate(&w.cfg, &dp, &args("c1", "198.18.0.250")).unwrap_err();
    assert!(format!("{err:#}").contains("is not allocated"), "{err:#}");
    assert_eq!(
        *dp.calls.borrow(),
        vec!["check_pid"],
        "probed before the addresses were checked"
    );
}

#[test]
fn an_endpoint_write_that_fails_removes_the_veth_again() {
    let World {
        etcd, cfg, plugin, ..
    } = world();
    let ip = plugin.allocate("c1", 1, 0).ips("ipv4").remove(0);
    // etcd goes away between plumbing and the endpoint write.
    let etcd = std::rc::Rc::new(RefCell::new(etcd));
    let stopper = etcd.clone();
    let dp = Fake {
        during_setup: Some(Box::new(move || stopper.borrow_mut().stop())),
        ..Fake::default()
    };
    let err = isolate(&cfg, &dp, &args("c1", &ip)).unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot write the Calico endpoint"),
        "{err:#}"
    );
    assert!(dp.links.borrow().is_empty(), "the veth was left behind");
    assert_eq!(
        *dp.calls.borrow(),
        vec!["check_pid", "probe", "setup", "teardown"]
    );
    etcd.borrow_mut().restart();
    assert!(etcd.borrow().dump(WEP).is_empty());
}

#[test]
fn a_rerun_replaces_its_own_half_made_veth() {
    let w = world();
    let ip = w.plugin.allocate("c1", 1, 0).ips("ipv4").remove(0);
    let dp = Fake::default();
    dp.links.borrow_mut().insert(host_veth_name("c1"));
    isolate(&w.cfg, &dp, &args("c1", &ip)).unwrap();
    assert_eq!(
        *dp.calls.borrow(),
        vec!["check_pid", "probe", "teardown", "setup"]
    );
    assert_eq!(w.etcd.dump(WEP).len(), 1);
    // The profiles came with the endpoint.
    let profiles = w
        .etcd
        .dump("/calico/resources/v3/projectcalico.org/profiles/");
    assert!(profiles.keys().any(|k| k.ends_with("/mesos.netgroup.web")));
    assert!(profiles.keys().any(|k| k.ends_with("/mesos.host.agent-1")));
}

#[test]
fn cleanup_tries_every_step_and_lists_each_failure() {
    let w = world();
    let ip = w.plugin.allocate("c1", 1, 0).ips("ipv4").remove(0);
    let dp = Fake::default();
    isolate(&w.cfg, &dp, &args("c1", &ip)).unwrap();

    // The link cannot be removed: the addresses and the endpoint still go,
    // and the error says what is left.
    let failing = Fake::failing("teardown");
    *failing.links.borrow_mut() = dp.links.borrow().clone();
    let err = cleanup(&w.cfg, &failing, "c1").unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("cannot remove interface") && text.contains("injected"),
        "{text}"
    );
    assert!(
        check_ipam(&w.etcd).is_empty(),
        "the addresses were not released"
    );
    assert!(w.etcd.dump(WEP).is_empty(), "the endpoint was not deleted");
    // A rerun finishes the job.
    cleanup(&w.cfg, &dp, "c1").unwrap();
    assert!(dp.links.borrow().is_empty());
}
