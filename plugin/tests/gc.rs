//! Leak repair against a real etcd, in simulated hosts: gc finds and
//! repairs (1) a SIGKILL mid-isolate, (2) a container namespace destroyed
//! without cleanup, (3) an allocate whose isolate never came, (4) an agent
//! restart whose recover() names the survivors, while two live containers
//! on the same host keep their addresses, endpoints and connectivity; and
//! afterwards `ipam check` finds nothing.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use calico_mesos::dataplane::host_veth_name;
use common::consistency::check_ipam;
use common::netns::{can_run, Ns, SimHost};
use common::plugin::Reply;
use common::{Etcd, Plugin};
use serde_json::{json, Value};

const NODE: &str = "agent-1";
const WEP: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints/";

fn isolate_req(cid: &str, pid: u32, ip: &str) -> Value {
    json!({"command": "isolate", "args": {
        "hostname": NODE, "container_id": cid, "pid": pid, "ipv4_addrs": [ip],
        "netgroups": ["web"]}})
}

fn endpoint_key(cid: &str) -> String {
    calico_mesos::endpoint::endpoint_key(NODE, cid)
}

fn holder(etcd: &Etcd, ip: &str) -> Option<String> {
    check_ipam(etcd)
        .get(&ip.parse::<IpAddr>().unwrap())
        .cloned()
}

/// A host with two live containers, `live-a` and `live-b`, that ping each
/// other.
struct Fixture {
    etcd: Etcd,
    host: SimHost,
    p: Plugin,
    live: Vec<(String, Ns, String)>,
}

impl Fixture {
    fn new() -> Fixture {
        let etcd = Etcd::start();
        etcd.seed_calico(&[NODE, "agent-2"]);
        let mut host = SimHost::new();
        host.reach_etcd(&etcd.endpoints());
        let p = Plugin::new(&etcd, NODE).on_host(host.ns.pid);
        p.add_pool("198.18.0.0/24", 26);
        let mut fx = Fixture {
            etcd,
            host,
            p,
            live: Vec::new(),
        };
        for cid in ["live-a", "live-b"] {
            let (ns, ip) = fx.start(cid);
            fx.live.push((cid.to_string(), ns, ip));
        }
        fx.assert_live("at the start");
        fx
    }

    /// allocate + isolate, as the module does for a task.
    fn start(&self, cid: &str) -> (Ns, String) {
        let ip = self.p.allocate(cid, 1, 0).ok().ips("ipv4").remove(0);
        let ns = self.host.container();
        self.p.request(&isolate_req(cid, ns.pid, &ip)).ok();
        (ns, ip)
    }

    /// The live containers still hold their addresses, endpoints and links,
    /// and reach each other.
    fn assert_live(&self, when: &str) {
        let eps = self.etcd.dump(WEP);
        for (cid, ns, ip) in &self.live {
            assert_eq!(
                holder(&self.etcd, ip).as_deref(),
                Some(format!("mesos.{cid}").as_str()),
                "{when}: {cid} lost its address"
            );
            assert!(
                eps.contains_key(&endpoint_key(cid)),
                "{when}: {cid} lost its endpoint"
            );
            assert!(
                self.host.ns.link(&host_veth_name(cid)).is_some(),
                "{when}: {cid} lost its host veth"
            );
            assert!(ns.link("eth0").is_some(), "{when}: {cid} lost its eth0");
        }
        // Three one-second pings at most: a loaded machine may drop one.
        let reaches = |from: &Ns, to: &str| (0..3).any(|_| from.ping(to.parse().unwrap()));
        let (a, b) = (&self.live[0], &self.live[1]);
        assert!(reaches(&a.1, &b.2), "{when}: live-a cannot reach live-b");
        assert!(reaches(&b.1, &a.2), "{when}: live-b cannot reach live-a");
    }

    fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = self.p.cli(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// A dry run lists `names` and changes nothing.
    fn dry_run_lists(&self, names: &[&str]) -> String {
        let rev = self.etcd.revision();
        let links = self.host.ns.link_names();
        let (code, text) = self.cli(&["gc"]);
        assert_eq!(code, 0, "{text}");
        for n in names {
            assert!(text.contains(n), "the dry run does not list {n}: {text}");
        }
        assert_eq!(self.etcd.revision(), rev, "the dry run wrote: {text}");
        assert_eq!(
            self.host.ns.link_names(),
            links,
            "the dry run changed links"
        );
        text
    }

    fn gc_apply(&self, extra: &[&str]) -> String {
        let mut args = vec!["gc", "--apply"];
        args.extend_from_slice(extra);
        let (code, text) = self.cli(&args);
        assert_eq!(code, 0, "gc --apply failed: {text}");
        text
    }

    fn protocol_gc(&self, survivors: &[&str]) -> Reply {
        self.p.request(&json!({"command": "gc", "args": {
            "hostname": NODE, "containers": survivors}}))
    }

    /// `ipam check` finds nothing, and the raw invariants hold.
    fn consistent(&self) {
        let (code, text) = self.cli(&["ipam", "check"]);
        assert_eq!(code, 0, "ipam check: {text}");
        assert!(text.contains("IPAM is consistent"), "{text}");
        check_ipam(&self.etcd);
    }
}

fn wait_gone(host: &SimHost, link: &str) {
    let by = Instant::now() + Duration::from_secs(10);
    while host.ns.link(link).is_some() {
        assert!(Instant::now() < by, "the kernel kept {link}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_sigkill_mid_isolate_is_repaired() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new();
    let mut killed = Vec::new();
    for (cid, fault) in [
        ("killed-plumbed", "isolate:plumbed"),
        // Before the mark: recognised by its name (mesos.<cid> is this node's).
        ("killed-created", "isolate:veth-created"),
    ] {
        let ip = fx.p.allocate(cid, 1, 0).ok().ips("ipv4").remove(0);
        let ns = fx.host.container();
        let out = Plugin::new(&fx.etcd, NODE)
            .on_host(fx.host.ns.pid)
            .with_env("CALICO_MESOS_FAULT", fault)
            .run_raw(&isolate_req(cid, ns.pid, &ip));
        assert!(out.status.code().is_none(), "{fault}: not killed");
        assert!(fx.host.ns.link(&host_veth_name(cid)).is_some());
        killed.push((cid, ns, ip));
    }
    let links: Vec<String> = killed.iter().map(|(c, _, _)| host_veth_name(c)).collect();
    fx.dry_run_lists(&[
        &links[0],
        &links[1],
        "an isolate of container killed-plumbed",
    ]);

    // Within the grace period the links go, the young handles stay.
    let text = fx.gc_apply(&[]);
    for (cid, ns, ip) in &killed {
        assert!(fx.host.ns.link(&host_veth_name(cid)).is_none(), "{text}");
        assert!(
            ns.link("eth0").is_none(),
            "{cid}: eth0 left in the container"
        );
        assert_eq!(
            holder(&fx.etcd, ip).as_deref(),
            Some(format!("mesos.{cid}").as_str()),
            "{text}"
        );
    }
    assert!(text.contains("younger than the grace period"), "{text}");
    fx.assert_live("after the links were removed");

    let text = fx.gc_apply(&["--grace", "0"]);
    for (cid, _, ip) in &killed {
        assert_eq!(holder(&fx.etcd, ip), None, "{cid}: {text}");
    }
    fx.assert_live("after the handles were released");
    fx.consistent();
    // Nothing left: a dry run has nothing to say.
    let (_, text) = fx.cli(&["gc", "--grace", "0"]);
    assert!(text.contains("Nothing to repair"), "{text}");
}

#[test]
fn a_container_destroyed_without_cleanup_is_repaired() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new();
    let (ns, ip) = fx.start("destroyed");
    // Mesos destroyed the container; cleanup never came.
    drop(ns);
    wait_gone(&fx.host, &host_veth_name("destroyed"));
    let key = endpoint_key("destroyed");
    let text = fx.dry_run_lists(&[&key, "is gone"]);
    assert!(text.contains("release mesos.destroyed"), "{text}");

    let text = fx.gc_apply(&[]);
    assert!(text.contains("repaired"), "{text}");
    assert!(!fx.etcd.dump(WEP).contains_key(&key), "{text}");
    assert_eq!(holder(&fx.etcd, &ip), None, "{text}");
    fx.assert_live("after the dead endpoint was repaired");
    fx.consistent();
}

#[test]
fn an_allocate_never_isolated_is_released_past_the_grace_period() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new();
    let ip =
        fx.p.allocate("never-isolated", 1, 0)
            .ok()
            .ips("ipv4")
            .remove(0);
    // Young: an isolate may still come.
    let text = fx.gc_apply(&[]);
    assert!(
        text.contains("left alone mesos.never-isolated") && text.contains("grace period"),
        "{text}"
    );
    assert_eq!(
        holder(&fx.etcd, &ip).as_deref(),
        Some("mesos.never-isolated")
    );

    fx.dry_run_lists(&["left alone mesos.never-isolated"]);
    let (_, text) = fx.cli(&["gc", "--grace", "0", "--json"]);
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["applied"], false);
    assert_eq!(report["repairs"][0]["kind"], "handle");
    assert_eq!(report["repairs"][0]["name"], "mesos.never-isolated");

    // The configured grace period rules the timer's runs too.
    fx.p.set_config("[ipam]\nrelease_grace_seconds = 0\n");
    fx.gc_apply(&[]);
    assert_eq!(holder(&fx.etcd, &ip), None);
    fx.assert_live("after the leak was released");
    fx.consistent();
}

#[test]
fn recover_names_the_survivors_and_gc_frees_the_rest() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new();
    // Gone while the agent was down, but its namespace still exists (the
    // agent's list is what counts).
    let (_lingering, ip_gone) = fx.start("gone-1");
    // Its isolate was killed and the agent did not recover it.
    let ip_half = fx.p.allocate("half", 1, 0).ok().ips("ipv4").remove(0);
    let half_ns = fx.host.container();
    let out = Plugin::new(&fx.etcd, NODE)
        .on_host(fx.host.ns.pid)
        .with_env("CALICO_MESOS_FAULT", "isolate:plumbed")
        .run_raw(&isolate_req("half", half_ns.pid, &ip_half));
    assert!(out.status.code().is_none());
    // Allocated, never isolated, unknown to the agent: may be a container
    // being prepared, so it waits for the grace period.
    let ip_young = fx.p.allocate("young", 1, 0).ok().ips("ipv4").remove(0);
    // A container of another node is not ours to judge.
    let other = Plugin::new(&fx.etcd, "agent-2");
    let ip_other = other.allocate("elsewhere", 1, 0).ok().ips("ipv4").remove(0);

    fx.protocol_gc(&["live-a", "live-b"]).ok();
    assert!(!fx.etcd.dump(WEP).contains_key(&endpoint_key("gone-1")));
    assert_eq!(holder(&fx.etcd, &ip_gone), None);
    assert!(fx.host.ns.link(&host_veth_name("gone-1")).is_none());
    assert!(fx.host.ns.link(&host_veth_name("half")).is_none());
    assert_eq!(
        holder(&fx.etcd, &ip_half),
        None,
        "the killed isolate's handle"
    );
    assert_eq!(holder(&fx.etcd, &ip_young).as_deref(), Some("mesos.young"));
    assert_eq!(
        holder(&fx.etcd, &ip_other).as_deref(),
        Some("mesos.elsewhere")
    );
    fx.assert_live("after the recovery gc");

    // Sent again (a second agent start): nothing more, still success; past
    // the grace period the young one goes too.
    fx.protocol_gc(&["live-a", "live-b"]).ok();
    assert_eq!(holder(&fx.etcd, &ip_young).as_deref(), Some("mesos.young"));
    fx.p.set_config("[ipam]\nrelease_grace_seconds = 0\n");
    fx.protocol_gc(&["live-a", "live-b"]).ok();
    assert_eq!(holder(&fx.etcd, &ip_young), None);
    assert_eq!(
        holder(&fx.etcd, &ip_other).as_deref(),
        Some("mesos.elsewhere")
    );
    fx.assert_live("after the second gc");
    fx.consistent();
}

#[test]
fn gc_waits_for_an_isolate_in_progress() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new();
    // An isolate holding its container's lock (as a running one does).
    let lock_dir = common::etcd::lock_dir_for(&fx.etcd.endpoints());
    let busy = calico_mesos::ipam::lock::ContainerLock::try_acquire(&lock_dir, "busy")
        .unwrap()
        .unwrap();
    let ip = fx.p.allocate("busy", 1, 0).ok().ips("ipv4").remove(0);
    let ns = fx.host.container();
    // This isolate is killed half-way; its locks live elsewhere, so that it
    // runs while the test holds the container's lock.
    let its_locks = tempfile::tempdir().unwrap();
    let out = Plugin::new(&fx.etcd, NODE)
        .on_host(fx.host.ns.pid)
        .with_env("CALICO_MESOS_FAULT", "isolate:plumbed")
        .with_env(
            "CALICO_MESOS_LOCK_DIR",
            its_locks.path().join("run").to_str().unwrap(),
        )
        .run_raw(&isolate_req("busy", ns.pid, &ip));
    assert!(out.status.code().is_none());
    let text = fx.gc_apply(&["--grace", "0"]);
    assert!(
        text.contains("skipped: another calico-mesos is working on container busy"),
        "{text}"
    );
    assert!(fx.host.ns.link(&host_veth_name("busy")).is_some());
    assert_eq!(holder(&fx.etcd, &ip).as_deref(), Some("mesos.busy"));
    drop(busy);
    fx.gc_apply(&["--grace", "0"]);
    assert!(fx.host.ns.link(&host_veth_name("busy")).is_none());
    assert_eq!(holder(&fx.etcd, &ip), None);
    fx.assert_live("at the end");
    fx.consistent();
}
