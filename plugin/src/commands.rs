//! Protocol mode: one request on stdin, one answer on stdout, exit 0 or 1.

use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;

use crate::config::Config;
use crate::dataplane::{Dataplane, Kernel};
use crate::datastore::Datastore;
use crate::gc::{self, Survivors};
use crate::ipam::{handle_for_uid, Ipam};
use crate::logging;
use crate::protocol::{parse_request, ReleaseArgs, Request, Response, MAX_REQUEST_BYTES};
use crate::workload;

/// Runs one request end to end and returns the process exit status.
pub fn run_protocol_mode() -> i32 {
    let response = handle_stdin();
    let text = response.to_json().to_string();
    println!("{text}");
    if response.is_error() {
        1
    } else {
        0
    }
}

fn handle_stdin() -> Response {
    let mut input = Vec::new();
    // Read one byte past the limit so an oversized request is detected.
    let read = std::io::stdin()
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut input);
    let config = Config::load();
    match &config {
        Ok(cfg) => logging::init(&cfg.log),
        Err(_) => logging::init_stderr(),
    }
    if let Err(e) = read {
        return fail(
            "unknown",
            format!("Cannot read the request from stdin: {e}"),
        );
    }
    let request = match parse_request(&input) {
        Ok(r) => r,
        Err(msg) => return fail("unknown", msg),
    };
    let span = logging::request_span(request.command());
    let _guard = span.enter();
    let config = match config {
        Ok(c) => c,
        Err(e) => return fail(request.command(), e.to_string()),
    };
    tracing::info!(node = %config.node_name, request = ?request, "request");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(request.command(), format!("cannot start the runtime: {e}")),
    };
    let response = runtime.block_on(execute(&config, request));
    // A name lookup still blocked in a resolver thread (deadline passed)
    // must not hold the answer back.
    runtime.shutdown_background();
    match &response {
        Response::Error(msg) => tracing::error!(error = %msg, "request failed"),
        other => tracing::info!(answer = %other.to_json(), "request done"),
    }
    response
}

fn fail(command: &str, msg: String) -> Response {
    let span = logging::request_span(command);
    let _guard = span.enter();
    tracing::error!(error = %msg, "request refused");
    Response::Error(msg)
}

/// Carries out a validated request.
pub async fn execute(config: &Config, request: Request) -> Response {
    match execute_inner(config, request).await {
        Ok(r) => r,
        Err(e) => Response::Error(format!("{e:#}")),
    }
}

async fn execute_inner(config: &Config, request: Request) -> anyhow::Result<Response> {
    let ds = Datastore::connect(&config.etcd).await?;
    let ipam = Ipam::new(&ds, &config.node_name, &config.ipam);
    Ok(match request {
        Request::Allocate(a) => {
            let specific: Vec<IpAddr> = a.label_ipv4.iter().copied().map(IpAddr::V4).collect();
            let ips = ipam
                .allocate(&handle_for_uid(&a.uid), a.num_ipv4, a.num_ipv6, &specific)
                .await?;
            addresses(ips)
        }
        Request::Reserve(r) => {
            let specific: Vec<IpAddr> = r
                .ipv4
                .iter()
                .copied()
                .map(IpAddr::V4)
                .chain(r.ipv6.iter().copied().map(IpAddr::V6))
                .collect();
            let ips = ipam
                .allocate(&handle_for_uid(&r.uid), 0, 0, &specific)
                .await?;
            addresses(ips)
        }
        Request::Release(ReleaseArgs::Uid(uid)) => {
            let freed = ipam.release_uid_handle(&handle_for_uid(&uid)).await?;
            tracing::info!(freed, "released by uid");
            Response::Ok
        }
        Request::Release(ReleaseArgs::Ips(ips)) => {
            // Which containers still run here decides who may lose an
            // address (ipam/ownership.rs).
            let links = Kernel.host_links().await?;
            let released = ipam.release_ips(&ips, &links).await?;
            tracing::info!(
                freed = released.freed,
                kept = released.kept.len(),
                "released by address"
            );
            Response::Ok
        }
        Request::Isolate(args) => {
            workload::isolate(config, &ds, &Kernel, &args).await?;
            Response::Ok
        }
        Request::Cleanup(args) => {
            workload::cleanup(config, &ds, &Kernel, &args).await?;
            Response::Ok
        }
        Request::Gc(args) => {
            let grace = Duration::from_secs(config.ipam.release_grace_seconds);
            let survivors = Survivors::Listed(args.containers);
            let report = gc::run(config, &ds, &Kernel, &survivors, grace, true).await?;
            tracing::info!(
                repairs = report.repairs.len(),
                kept = report.kept.len(),
                "gc done"
            );
            let failed = report.failures();
            if !failed.is_empty() {
                anyhow::bail!(
                    "gc could not repair everything (the next gc tries again): {}",
                    failed.join("; ")
                );
            }
            Response::Ok
        }
    })
}

fn addresses(ips: Vec<IpAddr>) -> Response {
    let (ipv4, ipv6) = ips.into_iter().partition(IpAddr::is_ipv4);
    Response::Addresses { ipv4, ipv6 }
}
