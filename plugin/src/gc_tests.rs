//! gc's judgement, on hand-made states (the integration tests in
//! tests/gc.rs run it against etcd and the kernel).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::*;
use crate::datastore::model::AllocationAttribute;
use crate::endpoint::{build_endpoint, EndpointInput};
use crate::ipam::block::{new_block, BlockView};

const NODE: &str = "agent-1";
const GRACE: Duration = Duration::from_secs(600);

fn entry(key: String, value: &impl serde::Serialize) -> RawEntry {
    RawEntry {
        key,
        value: serde_json::to_vec(value).unwrap(),
        mod_revision: 7,
    }
}

fn endpoint(node: &str, cid: &str, ip: &str, handle: &str) -> RawEntry {
    let ip: IpAddr = ip.parse().unwrap();
    let handles = BTreeMap::from([(ip, handle.to_string())]);
    let ep = build_endpoint(&EndpointInput {
        node,
        container_id: cid,
        ips: &[ip],
        profiles: vec![],
        interface_name: &host_veth_name(cid),
        mac: "02:00:00:00:00:01",
        mesos_labels: &BTreeMap::new(),
        netgroups: &[],
        handles: &handles,
    });
    entry(endpoint_key(node, cid), &ep)
}

/// One /26 block with the given (ordinal, handle, node, age in s).
fn block(allocs: &[(usize, &str, &str, u64)], now: SystemTime) -> RawEntry {
    let cidr: IpNetwork = "198.18.0.0/26".parse().unwrap();
    let mut doc = new_block(cidr, NODE, 1, "t".into());
    let mut view = BlockView::new(&mut doc, &cidr).unwrap();
    for (o, handle, node, age) in allocs {
        let t = humantime::format_rfc3339_nanos(now - Duration::from_secs(*age)).to_string();
        let attr = AllocationAttribute {
            handle_id: Some(handle.to_string()),
            secondary: Some(BTreeMap::from([
                ("node".to_string(), node.to_string()),
                (
                    "timestamp".to_string(),
                    format!(
                        "{} +0000 UTC",
                        t.trim_end_matches('Z').replacen('T', " ", 1)
                    ),
                ),
            ])),
            extra: Default::default(),
        };
        view.assign(address_at(&cidr, *o), &attr).unwrap();
    }
    entry(keys::block(&cidr), &doc)
}

fn link(cid: &str, marked: bool, alive: bool) -> HostLink {
    HostLink {
        name: host_veth_name(cid),
        alias: marked.then(|| crate::dataplane::ownership_mark(cid)),
        leads_to_container: alive,
    }
}

fn state(
    endpoints: Vec<RawEntry>,
    block: RawEntry,
    handles: &[&str],
    links: Vec<HostLink>,
) -> State {
    State {
        endpoints,
        blocks: vec![block],
        handles: handles.iter().map(|h| h.to_string()).collect(),
        links,
    }
}

fn listed(ids: &[&str]) -> Survivors {
    Survivors::Listed(ids.iter().map(|s| s.to_string()).collect())
}

fn names(r: &Report, kind: Kind) -> Vec<&str> {
    r.repairs
        .iter()
        .filter(|x| x.kind == kind)
        .map(|x| x.name.as_str())
        .collect()
}

#[test]
fn the_recovered_list_decides_which_endpoints_go() {
    let now = SystemTime::now();
    let s = state(
        vec![
            endpoint(NODE, "alive", "198.18.0.1", "mesos.alive"),
            endpoint(NODE, "gone", "198.18.0.2", "mesos.r4nd0m"),
            endpoint("agent-2", "elsewhere", "198.18.0.3", "mesos.elsewhere"),
        ],
        block(
            &[
                (1, "mesos.alive", NODE, 5),
                (2, "mesos.r4nd0m", NODE, 5),
                (3, "mesos.elsewhere", "agent-2", 5),
            ],
            now,
        ),
        &[
            "mesos.alive",
            "mesos.r4nd0m",
            "mesos.gone",
            "mesos.elsewhere",
        ],
        vec![link("alive", true, true), link("gone", true, true)],
    );
    let r = plan(NODE, &listed(&["alive"]), &s, now, GRACE);
    assert_eq!(names(&r, Kind::Endpoint), vec![endpoint_key(NODE, "gone")]);
    let ep = &r.repairs[0];
    assert_eq!(ep.handles, vec!["mesos.gone", "mesos.r4nd0m"]);
    assert!(ep
        .why
        .contains("not among the containers the agent recovered"));
    assert!(ep.action.contains("remove link"), "{}", ep.action);
    // Nothing else: the live container, the other node, the gone one's
    // handles (its endpoint repair covers them).
    assert_eq!(r.repairs.len(), 1, "{:#?}", r.repairs);
}

#[test]
fn the_kernel_decides_without_a_list() {
    let now = SystemTime::now();
    let s = state(
        vec![
            endpoint(NODE, "alive", "198.18.0.1", "mesos.alive"),
            endpoint(NODE, "no-veth", "198.18.0.2", "mesos.no-veth"),
            endpoint(NODE, "no-netns", "198.18.0.3", "mesos.no-netns"),
        ],
        block(
            &[
                (1, "mesos.alive", NODE, 5),
                (2, "mesos.no-veth", NODE, 5),
                (3, "mesos.no-netns", NODE, 5),
            ],
            now,
        ),
        &["mesos.alive", "mesos.no-veth", "mesos.no-netns"],
        vec![link("alive", true, true), link("no-netns", true, false)],
    );
    let r = plan(NODE, &Survivors::Probed, &s, now, GRACE);
    let gone = names(&r, Kind::Endpoint);
    assert_eq!(
        gone,
        vec![
            endpoint_key(NODE, "no-veth"),
            endpoint_key(NODE, "no-netns")
        ]
    );
    assert!(r.repairs[0].why.contains("is gone"));
    assert!(r.repairs[1]
        .why
        .contains("no longer leads into a container"));
    assert_eq!(r.repairs.len(), 2);
}

#[test]
fn handles_without_endpoint_go_only_past_the_grace_period() {
    let now = SystemTime::now();
    let s = state(
        vec![],
        block(
            &[
                (1, "mesos.young", NODE, 5),
                (2, "mesos.old", NODE, 601),
                (3, "mesos.listed", NODE, 601),
                (4, "mesos.split", NODE, 601),
                (5, "mesos.split", "agent-2", 601),
                (6, "ipip-tunnel-addr-agent-1", NODE, 9999),
                (7, "mesos.other-node", "agent-2", 9999),
            ],
            now,
        ),
        &["mesos.young", "mesos.old", "mesos.listed", "mesos.split"],
        vec![],
    );
    for survivors in [listed(&["listed"]), Survivors::Probed] {
        let r = plan(NODE, &survivors, &s, now, GRACE);
        let mut want = vec!["mesos.old"];
        if survivors == Survivors::Probed {
            want.push("mesos.listed");
        }
        want.sort();
        assert_eq!(names(&r, Kind::Handle), want, "{survivors:?}");
        let kept: BTreeMap<&str, &str> = r
            .kept
            .iter()
            .map(|k| (k.name.as_str(), k.why.as_str()))
            .collect();
        assert!(kept["mesos.young"].contains("younger than the grace period"));
        assert!(kept["mesos.split"].contains("agent-2"));
        assert!(!kept.contains_key("ipip-tunnel-addr-agent-1"));
        assert!(!kept.contains_key("mesos.other-node"));
    }
    // With no grace, the young one goes too.
    let r = plan(NODE, &Survivors::Probed, &s, now, Duration::ZERO);
    assert!(names(&r, Kind::Handle).contains(&"mesos.young"));
}

#[test]
fn only_our_links_without_endpoint_are_removed() {
    let now = SystemTime::now();
    let foreign = HostLink {
        alias: Some("someone else".into()),
        ..link("foreign", false, true)
    };
    let s = state(
        vec![endpoint(NODE, "alive", "198.18.0.1", "mesos.alive")],
        block(
            &[(1, "mesos.alive", NODE, 5), (2, "mesos.half", NODE, 5)],
            now,
        ),
        &["mesos.alive", "mesos.half", "mesos.marked"],
        vec![
            link("alive", true, true),
            link("marked", true, true),
            // Killed before it was marked: named for a container we know.
            link("half", false, true),
            link("unknown", false, true),
            foreign,
            link("listed", true, true),
        ],
    );
    let r = plan(NODE, &listed(&["alive", "listed"]), &s, now, GRACE);
    let mut want = vec![host_veth_name("marked"), host_veth_name("half")];
    want.sort();
    let mut got = names(&r, Kind::Link);
    got.sort();
    assert_eq!(got, want);
    // With the list, the container of a left-over link is gone: its
    // handle goes with the link, young or not.
    let half = r
        .repairs
        .iter()
        .find(|x| x.container.as_deref() == Some("half"))
        .unwrap();
    assert_eq!(half.handles, vec!["mesos.half"]);
    assert!(names(&r, Kind::Handle).is_empty(), "{:#?}", r.repairs);

    // Without the list the handle waits for the grace period.
    let r = plan(NODE, &Survivors::Probed, &s, now, GRACE);
    assert!(r.repairs.iter().all(|x| x.handles.is_empty()));
    assert!(names(&r, Kind::Link).contains(&host_veth_name("listed").as_str()));
}

#[test]
fn unreadable_documents_never_stop_gc() {
    let now = SystemTime::now();
    let mut s = state(
        vec![RawEntry {
            key: endpoint_key(NODE, "x"),
            value: b"{not json".to_vec(),
            mod_revision: 1,
        }],
        RawEntry {
            key: keys::block(&"198.18.0.64/26".parse().unwrap()),
            value: b"[]".to_vec(),
            mod_revision: 1,
        },
        &[],
        vec![],
    );
    s.blocks.push(block(&[(1, "mesos.old", NODE, 700)], now));
    let r = plan(NODE, &Survivors::Probed, &s, now, GRACE);
    assert_eq!(names(&r, Kind::Handle), vec!["mesos.old"]);
    assert!(r.kept.iter().any(|k| k.why.contains("corrupt block")));
}
