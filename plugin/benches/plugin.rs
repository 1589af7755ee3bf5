//! Whole-process timings of the plugin against a real etcd, beside the
//! reference costs measured in the same run (one `etcdctl put` process, a
//! no-op start of the binary). Run with `cargo bench -p calico-mesos`.
//! It prints a table; it asserts nothing about time.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{can_run, SimHost};
use common::{Etcd, Plugin};

const RUNS: usize = 40;

struct Row {
    what: String,
    samples: Vec<Duration>,
    /// etcd round trips per run: (reads, writes), from etcd's metrics.
    calls: Option<(f64, f64)>,
}

impl Row {
    fn stat(&self, q: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        s[((s.len() - 1) as f64 * q).round() as usize]
    }
}

fn time<F: FnMut(usize)>(what: &str, runs: usize, mut f: F) -> Row {
    let samples = (0..runs)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect();
    Row {
        what: what.to_string(),
        samples,
        calls: None,
    }
}

/// `time`, plus etcd's own count of round trips per run: every KV call it
/// served, of which writes are the revisions they added (a committed write
/// transaction adds exactly one).
fn counted<F: FnMut(usize)>(etcd: &Etcd, what: &str, runs: usize, f: F) -> Row {
    let (calls0, rev0) = (total_calls(etcd), etcd.revision());
    let mut row = time(what, runs, f);
    let (calls1, rev1) = (total_calls(etcd), etcd.revision());
    let writes = (rev1 - rev0) as f64 / runs as f64;
    let all = (calls1 - calls0) as f64 / runs as f64;
    row.calls = Some((all - writes, writes));
    row
}

fn total_calls(etcd: &Etcd) -> u64 {
    etcd.kv_calls()
        .iter()
        .filter(|(m, _)| m.as_str() != "Compact")
        .map(|(_, n)| n)
        .sum()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn print(rows: &[Row]) {
    let reference = rows[0].stat(0.5).as_secs_f64();
    println!(
        "{:<48} {:>5} {:>10} {:>10} {:>10} {:>13}",
        "operation", "runs", "median", "p95", "x etcdctl", "etcd r + w"
    );
    for r in rows {
        let calls = r
            .calls
            .map(|(rd, wr)| format!("{rd:.1} + {wr:.1}"))
            .unwrap_or_default();
        println!(
            "{:<48} {:>5} {:>10} {:>10} {:>10.2} {:>13}",
            r.what,
            r.samples.len(),
            ms(r.stat(0.5)),
            ms(r.stat(0.95)),
            r.stat(0.5).as_secs_f64() / reference,
            calls
        );
    }
}

/// Fills the node's pool up to `target` addresses in use.
fn fill_to(p: &Plugin, in_use: &mut usize, target: usize) {
    let mut batch = 0;
    while *in_use < target {
        let n = (target - *in_use).min(16);
        p.allocate(&format!("fill-{target}-{batch}"), n as u32, 0)
            .ok();
        *in_use += n;
        batch += 1;
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would too: only
    // run for real under cargo bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let etcd = Etcd::start();
    etcd.seed_calico(&["bench-1"]);
    let p = Plugin::new(&etcd, "bench-1");
    // 1024 addresses, 16 blocks. The release-by-ips rows free addresses
    // no endpoint lists: with no grace period, as an operator's clean-up
    // would.
    p.add_pool("198.18.0.0/22", 26);
    p.set_config("[ipam]\nrelease_grace_seconds = 0\n");

    let mut rows = vec![
        time("reference: one `etcdctl put` process", RUNS, |i| {
            etcdctl_put(&etcd, &format!("/bench/{i}"));
        }),
        time("reference: `calico-mesos --version`", RUNS, |_| {
            assert!(p.cli(&["--version"]).status.success());
        }),
        counted(&etcd, "allocate 1 IPv4 (empty pool)", RUNS, |i| {
            p.allocate(&format!("a{i}"), 1, 0).ok();
        }),
        counted(&etcd, "release by uid", RUNS, |i| {
            p.release_uid(&format!("a{i}")).ok();
        }),
    ];

    // `cargo bench -p calico-mesos -- cycle`: only the container cycle's
    // rows and the interleaved table, for working on them.
    if std::env::args().any(|a| a == "cycle") {
        if can_run() {
            rows.extend(dataplane_rows(&etcd));
        }
        print(&rows);
        return;
    }
    let pool_size = 1024;
    let mut in_use = 0;
    for pct in [10, 90] {
        fill_to(&p, &mut in_use, pool_size * pct / 100);
        let mut got = Vec::with_capacity(RUNS);
        rows.push(time(
            &format!("allocate 1 IPv4 at {pct} % pool fill"),
            RUNS,
            |i| {
                got.push(
                    p.allocate(&format!("f{pct}-{i}"), 1, 0)
                        .ok()
                        .ips("ipv4")
                        .remove(0),
                );
            },
        ));
        rows.push(time(
            &format!("release by ips at {pct} % pool fill"),
            RUNS,
            |i| {
                p.release_ips(&[got[i].as_str()]).ok();
            },
        ));
    }
    let many = many_addresses_rows();
    let (rss_many, many_vs_empty) = (
        many.rss,
        many.many.stat(0.5).as_secs_f64() / many.empty.stat(0.5).as_secs_f64(),
    );
    rows.push(many.many);
    rows.push(many.empty);
    let borrow = borrow_row();
    let borrow_bytes = borrow.1;
    rows.push(borrow.0);
    if can_run() {
        rows.extend(dataplane_rows(&etcd));
    }
    print(&rows);
    println!(
        "allocate with 10,000 addresses on the host / empty pool, in turn: {many_vs_empty:.2} \
         (goal <= 1.30)"
    );
    println!(
        "bytes etcd sent per borrowing allocate: {:.1} KiB (goal <= 64 KiB)",
        borrow_bytes / 1024.0
    );
    let median = |name: &str| {
        rows.iter()
            .find(|r| r.what.starts_with(name))
            .map(|r| r.stat(0.5).as_secs_f64())
    };
    if let (Some(cycle), Some(put)) = (median("full cycle"), median("reference: one")) {
        print!(
            "full cycle / etcdctl put, rows above: {:.2} (goal <= 1.50; the interleaved table is the measure)",
            cycle / put
        );
        match median("CNI ptp ADD+DEL") {
            Some(ptp) => println!("; / CNI ptp ADD+DEL: {:.2} (goal <= 0.60)", cycle / ptp),
            None => println!(),
        }
    }
    let alloc = serde_json::json!({"command": "allocate", "args": {
        "hostname": "bench-1", "uid": "rss-1", "num_ipv4": 1, "num_ipv6": 0}});
    println!(
        "peak RSS of one allocate: {:.1} MB on a 90 % full /22, {rss_many:.1} MB with 157 full own \
         blocks and no hint (goal <= 20 MB, flat)",
        peak_rss(&p, &alloc)
    );
    println!();
    concurrent_table();
    println!();
    failover_table();
}

/// A three-member cluster, `timeout_ms = 1000` (default deadline): the
/// slowest of 20 allocate/release requests with a frozen member or a
/// blackholed endpoint listed first, and the time to the error with all
/// members down. The goals are the failover issue's.
fn failover_table() {
    let etcd = Etcd::cluster(3);
    etcd.seed_calico(&["fo-1"]);
    Plugin::new(&etcd, "fo-1").add_pool("198.18.0.0/22", 26);
    let urls: Vec<String> = etcd.members.iter().map(|m| m.client_url.clone()).collect();
    let plugin = |endpoints: &str| {
        let p = Plugin::with_endpoints(endpoints, "fo-1");
        p.set_config("[etcd]\ntimeout_ms = 1000\n");
        p
    };
    let slowest = |p: &Plugin, tag: &str| {
        (0..20)
            .map(|i| {
                let t = Instant::now();
                if i % 2 == 0 {
                    p.allocate(&format!("{tag}{}", i / 2), 1, 0).ok();
                } else {
                    p.release_uid(&format!("{tag}{}", i / 2)).ok();
                }
                t.elapsed()
            })
            .max()
            .unwrap()
    };
    println!(
        "{:<52} {:>11} {:>9}",
        "etcd trouble (timeout_ms = 1000)", "measured", "goal"
    );
    let follower = (etcd.leader() + 1) % 3;
    let mut order = vec![urls[follower].clone()];
    order.extend(urls.iter().filter(|u| **u != urls[follower]).cloned());
    etcd.freeze(follower, true);
    let frozen = slowest(&plugin(&order.join(",")), "fz");
    etcd.freeze(follower, false);
    println!(
        "{:<52} {:>11} {:>9}",
        "max request, frozen member listed first",
        ms(frozen),
        "2500 ms"
    );
    let hole = common::etcd::Blackhole::new();
    let holed = slowest(&plugin(&format!("{},{}", hole.url, urls.join(","))), "bh");
    println!(
        "{:<52} {:>11} {:>9}",
        "max request, blackholed endpoint listed first",
        ms(holed),
        "2500 ms"
    );
    let mut etcd = etcd;
    etcd.stop();
    let p = plugin(&urls.join(","));
    let t = Instant::now();
    assert_eq!(p.allocate("down", 1, 0).status, 1);
    println!(
        "{:<52} {:>11} {:>9}",
        "time to the error, all members down",
        ms(t.elapsed()),
        "16000 ms"
    );
    etcd.restart();
    for i in 0..3 {
        etcd.freeze(i, true);
    }
    let t = Instant::now();
    assert_eq!(p.allocate("frozen", 1, 0).status, 1);
    println!(
        "{:<52} {:>11} {:>9}",
        "time to the error, all members frozen",
        ms(t.elapsed()),
        "16000 ms"
    );
    for i in 0..3 {
        etcd.freeze(i, false);
    }
}

/// 20 concurrent workers x 10 allocations, on one host (queued on the
/// host lock) and spread over 10 hosts (racing through guarded
/// transactions): etcd calls per allocation from etcd's own metrics.
fn concurrent_table() {
    const WORKERS: usize = 20;
    const EACH: usize = 10;
    println!(
        "{:<34} {:>16} {:>11} {:>11} {:>15}",
        "20 workers x 10 allocations", "etcd calls/alloc", "median", "p95", "blocks (needed)"
    );
    for hosts in [1usize, 10] {
        let nodes: Vec<String> = (0..hosts).map(|h| format!("conc-{h}")).collect();
        let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
        let etcd = Etcd::start();
        etcd.seed_calico(&names);
        Plugin::new(&etcd, names[0]).add_pool("198.18.0.0/22", 26);
        let before = etcd.kv_calls();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(WORKERS));
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (endpoints, node, barrier) =
                    (etcd.endpoints(), nodes[w % hosts].clone(), barrier.clone());
                std::thread::spawn(move || {
                    let p = Plugin::with_endpoints(&endpoints, &node);
                    barrier.wait();
                    (0..EACH)
                        .map(|i| {
                            let t = Instant::now();
                            p.allocate(&format!("w{w}-{i}"), 1, 0).ok();
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let samples: Vec<Duration> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        let after = etcd.kv_calls();
        let calls: u64 = after
            .iter()
            .map(|(m, c)| c - before.get(m).copied().unwrap_or(0))
            .sum();
        let blocks = etcd.dump("/calico/ipam/v2/assignment/").len();
        let needed: usize = (0..hosts)
            .map(|h| {
                (WORKERS * EACH / hosts + usize::from(h < (WORKERS * EACH) % hosts)).div_ceil(64)
            })
            .sum();
        let row = Row {
            what: String::new(),
            samples,
            calls: None,
        };
        println!(
            "{:<34} {:>16.2} {:>11} {:>11} {:>15}",
            format!("{hosts} host(s)"),
            calls as f64 / (WORKERS * EACH) as f64,
            ms(row.stat(0.5)),
            ms(row.stat(0.95)),
            format!("{blocks} ({needed})")
        );
    }
}

/// allocate on a host that already holds 10,000 addresses in 157 blocks:
/// the block hint and lazy block reads keep it near the empty-pool cost.
/// allocate on a host holding 10,000 addresses, and on a host of an
/// empty pool configured alike (an etcd of its own), one after the other
/// in each round so that the ratio of the two sees the same load.
fn many_addresses_rows() -> ManyAddresses {
    let ipam_config = serde_json::json!({"strict_affinity": true, "auto_allocate_blocks": true,
        "maxBlocksPerHost": 1000});
    let start = |node: &str| {
        let etcd = Etcd::start();
        etcd.seed_calico(&[node]);
        etcd.put("/calico/ipam/v2/config", &ipam_config);
        let p = Plugin::new(&etcd, node);
        p.add_pool("198.18.0.0/17", 26);
        (etcd, p)
    };
    let (etcd, p) = start("many-1");
    let (_empty_etcd, empty) = start("empty-1");
    let mut in_use = 0;
    fill_to(&p, &mut in_use, 10_000);
    let (mut many_samples, mut empty_samples) = (Vec::new(), Vec::new());
    let mut many = counted(
        &etcd,
        "allocate 1 IPv4, 10,000 addresses on this host",
        RUNS,
        |i| {
            empty_samples.push(
                timed(|| {
                    empty.allocate(&format!("e{i}"), 1, 0).ok();
                })
                .1,
            );
            many_samples.push(
                timed(|| {
                    p.allocate(&format!("m{i}"), 1, 0).ok();
                })
                .1,
            );
        },
    );
    many.samples = many_samples;
    // The largest shape: a fresh handle, the hint gone, every block read.
    let _ = std::fs::remove_dir_all(common::etcd::lock_dir_for(&etcd.endpoints()));
    let req = serde_json::json!({"command": "allocate", "args": {
        "hostname": "many-1", "uid": "rss-many", "num_ipv4": 1, "num_ipv6": 0}});
    let rss = peak_rss(&p, &req);
    ManyAddresses {
        empty: Row {
            what: "  the same, empty pool (in turn with the row above)".into(),
            samples: empty_samples,
            calls: None,
        },
        many,
        rss,
    }
}

struct ManyAddresses {
    many: Row,
    /// The empty-pool allocate timed in the same rounds.
    empty: Row,
    /// Peak RSS (MB) of the largest shape.
    rss: f64,
}

/// allocate on a host without blocks of its own, every block of the pool
/// claimed by another host, borrowing on: the bytes etcd sends per run.
fn borrow_row() -> (Row, f64) {
    let etcd = Etcd::start();
    etcd.seed_calico(&["owner-1", "borrower-1"]);
    let owner = Plugin::new(&etcd, "owner-1");
    owner.add_pool("198.18.0.0/20", 26); // 64 blocks
    for b in 0..64 {
        owner.allocate(&format!("own{b}"), 1, 0).ok();
        // A block per allocation: claim the next one.
        owner.reserve(
            &format!("claim{b}"),
            &[&format!("198.18.{}.{}", b / 4, (b % 4) * 64 + 1)],
            &[],
        );
    }
    let p = Plugin::new(&etcd, "borrower-1");
    p.set_config("[ipam]\nborrow = true\n");
    let before = etcd.metric("etcd_network_client_grpc_sent_bytes_total");
    let row = counted(
        &etcd,
        "allocate 1 IPv4 by borrowing (all blocks claimed)",
        RUNS,
        |i| {
            p.allocate(&format!("b{i}"), 1, 0).ok();
        },
    );
    let after = etcd.metric("etcd_network_client_grpc_sent_bytes_total");
    // The counted() metric reads themselves are not KV calls: negligible.
    (row, (after - before) / RUNS as f64)
}

/// Peak resident memory (MB) of one plugin process running `req`, from GNU
/// time's %M (NaN when /usr/bin/time is not installed).
fn peak_rss(plugin: &Plugin, req: &serde_json::Value) -> f64 {
    if !std::path::Path::new("/usr/bin/time").exists() {
        return f64::NAN;
    }
    {
        use std::io::Write;
        let plain = plugin.command();
        let mut timed = Command::new("/usr/bin/time");
        timed
            .args(["-f", "%M"])
            .arg(plain.get_program())
            .args(plain.get_args())
            .env_clear();
        for (k, v) in plain.get_envs() {
            if let Some(v) = v {
                timed.env(k, v);
            }
        }
        let mut child = timed
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(req.to_string().as_bytes());
        let out = child.wait_with_output().unwrap();
        let kib: f64 = String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(f64::NAN);
        kib / 1024.0
    }
}

fn isolate_req(cid: &str, pid: u32, v4: &[String]) -> serde_json::Value {
    serde_json::json!({"command": "isolate", "args": {
        "hostname": "bench-1", "container_id": cid, "pid": pid, "ipv4_addrs": v4,
        "netgroups": ["bench"]}})
}

fn cleanup_req(cid: &str) -> serde_json::Value {
    serde_json::json!({"command": "cleanup", "args": {"hostname": "bench-1", "container_id": cid}})
}

/// One container's whole cycle, as Mesos runs it: allocate, isolate; the
/// container's processes (and so its namespace, and with it the veth) are
/// gone before cleanup; then release. Returns the time of each of the four
/// plugin runs, not the wait for the kernel.
fn container_cycle(p: &Plugin, host: &SimHost, cid: &str) -> CycleSteps {
    let ctr = host.container();
    let (v4, allocate) = timed(|| p.allocate(cid, 1, 0).ok().ips("ipv4"));
    let ((), isolate) = timed(|| {
        p.request(&isolate_req(cid, ctr.pid, &v4)).ok();
    });
    drop(ctr);
    let veth = calico_mesos::dataplane::host_veth_name(cid);
    while host.ns.link(&veth).is_some() {
        std::thread::sleep(Duration::from_millis(2));
    }
    let ((), cleanup) = timed(|| {
        p.request(&cleanup_req(cid)).ok();
    });
    let ((), release) = timed(|| {
        p.release_uid(cid).ok();
    });
    CycleSteps([allocate, isolate, cleanup, release])
}

/// What `f` returns, and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let value = f();
    (value, t.elapsed())
}

/// The four plugin runs of one container's cycle, in order.
#[derive(Clone, Copy)]
struct CycleSteps([Duration; 4]);

impl CycleSteps {
    const NAMES: [&'static str; 4] = ["allocate", "isolate", "cleanup", "release"];

    fn total(&self) -> Duration {
        self.0.iter().sum()
    }
}

fn etcdctl_put(etcd: &Etcd, key: &str) -> Duration {
    put_with(Command::new("etcdctl"), etcd, key)
}

/// One `etcdctl put` run the way the plugin is run in the cycle: entered
/// into the simulated agent host, reaching etcd through its relay.
fn etcdctl_put_from(host: &SimHost, etcd: &Etcd, key: &str) -> Duration {
    put_with(host.ns.command("etcdctl"), etcd, key)
}

fn put_with(mut etcdctl: Command, etcd: &Etcd, key: &str) -> Duration {
    let t = Instant::now();
    let ok = etcdctl
        .args(["--endpoints", etcd.endpoint(), "put", key, "x"])
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok);
    t.elapsed()
}

/// isolate and cleanup inside a simulated host (needs root).
fn dataplane_rows(etcd: &Etcd) -> Vec<Row> {
    let mut host = SimHost::new();
    host.reach_etcd(&etcd.endpoints());
    let p = Plugin::new(etcd, "bench-1").on_host(host.ns.pid);
    let mut prepared = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let cid = format!("bench-{i}");
        let v4 = p.allocate(&cid, 1, 0).ok().ips("ipv4");
        prepared.push((cid, host.container(), v4));
    }
    let isolate = counted(etcd, "isolate (veth, routes, endpoint)", RUNS, |i| {
        let (cid, ctr, v4) = &prepared[i];
        p.request(&isolate_req(cid, ctr.pid, v4)).ok();
    });
    let cleanup = counted(
        etcd,
        "cleanup, container alive (kernel veth delete)",
        RUNS,
        |i| {
            p.request(&cleanup_req(&prepared[i].0)).ok();
        },
    );
    drop(prepared);

    let cycles: Vec<CycleSteps> = (0..RUNS)
        .map(|i| container_cycle(&p, &host, &format!("cycle-{i}")))
        .collect();
    let mut rows = vec![isolate, cleanup];
    for (step, name) in CycleSteps::NAMES.iter().enumerate() {
        rows.push(Row {
            what: format!("  in the cycle: {name}"),
            samples: cycles.iter().map(|c| c.0[step]).collect(),
            calls: None,
        });
    }
    rows.push(Row {
        what: "full cycle: allocate+isolate+cleanup+release".into(),
        samples: cycles.iter().map(CycleSteps::total).collect(),
        calls: None,
    });
    let ptp = CniPtp::new();
    if let Some(ptp) = &ptp {
        rows.extend(ptp.rows(&host));
    }
    interleaved(etcd, &p, &host, ptp.as_ref());
    rows
}

/// The goals' ratios, measured so that load that comes and goes hits
/// every side alike: 3 repetitions of 20 rounds, each round one `etcdctl
/// put` from the machine, one from the simulated agent host, one full
/// cycle and one CNI ptp ADD+DEL, one after the other; the ratios are of
/// the medians of each repetition. The goal's put is the one from the
/// agent host: it starts the way the plugin does there (entered into the
/// host's namespace, etcd through the host's relay), as the ptp pair does
/// too; the put from
/// the machine is printed beside it, with the cycle's ratio to it.
fn interleaved(etcd: &Etcd, p: &Plugin, host: &SimHost, ptp: Option<&CniPtp>) {
    const REPS: usize = 3;
    const ROUNDS: usize = 20;
    println!();
    println!(
        "interleaved rounds ({REPS} x {ROUNDS}; each: etcdctl put from the machine and from the \
         agent host, full cycle, CNI ptp ADD+DEL)"
    );
    println!(
        "{:<4} {:>13} {:>13} {:>11} {:>11} {:>22} {:>22} {:>16}",
        "rep",
        "put, machine",
        "put, host",
        "full cycle",
        "CNI ptp",
        "cycle/put host (<=1.5)",
        "cycle/ptp (<= 0.60)",
        "cycle/put machine"
    );
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let ms = |s: f64| format!("{:.2} ms", s * 1e3);
    for rep in 0..REPS {
        let (mut machine, mut from_host) = (Vec::new(), Vec::new());
        let (mut cycle, mut cni) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let id = format!("il-{rep}-{round}");
            machine.push(etcdctl_put(etcd, &format!("/bench/{id}")));
            from_host.push(etcdctl_put_from(host, etcd, &format!("/bench/h-{id}")));
            cycle.push(container_cycle(p, host, &id).total());
            if let Some(ptp) = ptp {
                let ctr = host.container();
                let t = Instant::now();
                ptp.run(host, "ADD", &id, ctr.pid);
                ptp.run(host, "DEL", &id, ctr.pid);
                cni.push(t.elapsed());
            }
        }
        let (machine, from_host, cycle) = (median(machine), median(from_host), median(cycle));
        let (cni_ms, vs_cni) = if cni.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            let c = median(cni);
            (ms(c), format!("{:.2}", cycle / c))
        };
        println!(
            "{:<4} {:>13} {:>13} {:>11} {:>11} {:>22.2} {:>22} {:>16.2}",
            rep + 1,
            ms(machine),
            ms(from_host),
            ms(cycle),
            cni_ms,
            cycle / from_host,
            vs_cni,
            cycle / machine
        );
    }
    println!();
}

/// Debian's containernetworking-plugins ptp + host-local, ADD then DEL in
/// the same simulated host: the closest runnable peer (Go, one exec, veth
/// + /32, IPAM in local files).
struct CniPtp {
    conf: String,
    _data: tempfile::TempDir,
}

impl CniPtp {
    fn new() -> Option<CniPtp> {
        if !std::path::Path::new("/usr/lib/cni/ptp").exists() {
            println!(
                "(CNI ptp not installed: `apt install containernetworking-plugins` for its rows)"
            );
            return None;
        }
        let data = tempfile::tempdir().unwrap();
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "bench", "type": "ptp",
            "ipMasq": false, "ipam": {"type": "host-local", "subnet": "198.18.128.0/20",
            "dataDir": data.path()}})
        .to_string();
        Some(CniPtp { conf, _data: data })
    }

    fn run(&self, host: &SimHost, cmd: &str, id: &str, pid: u32) {
        use std::io::Write;
        let mut child = host
            .ns
            .command("/usr/lib/cni/ptp")
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", format!("/proc/{pid}/ns/net"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(self.conf.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "ptp {cmd}");
    }

    fn rows(&self, host: &SimHost) -> Vec<Row> {
        let ctrs: Vec<_> = (0..RUNS).map(|_| host.container()).collect();
        let add = time("CNI ptp ADD (reference)", RUNS, |i| {
            self.run(host, "ADD", &format!("p{i}"), ctrs[i].pid)
        });
        let del = time("CNI ptp DEL (reference)", RUNS, |i| {
            self.run(host, "DEL", &format!("p{i}"), ctrs[i].pid)
        });
        let both = Row {
            what: "CNI ptp ADD+DEL (reference)".into(),
            samples: add
                .samples
                .iter()
                .zip(&del.samples)
                .map(|(a, d)| *a + *d)
                .collect(),
            calls: None,
        };
        vec![add, del, both]
    }
}
