//! Output of the repair and diagnosis subcommands: gc, ipam check, doctor.

use std::time::Duration;

use super::{DoctorArgs, GcArgs};
use crate::config::Config;
use crate::dataplane::Kernel;
use crate::datastore::Datastore;
use crate::doctor::{self, Paths};
use crate::gc::{self, kind_name, Survivors};
use crate::ipam::check;

pub async fn gc(config: &Config, ds: &Datastore, args: GcArgs) -> anyhow::Result<i32> {
    let grace = Duration::from_secs(args.grace.unwrap_or(config.ipam.release_grace_seconds));
    let report = gc::run(config, ds, &Kernel, &Survivors::Probed, grace, args.apply).await?;
    let failed = report.failures();
    if args.format.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if report.repairs.is_empty() {
            println!("Nothing to repair on node {}.", report.node);
        } else if !args.apply {
            println!(
                "Dry run on node {}: nothing was changed. `calico-mesos gc --apply` would repair:",
                report.node
            );
        }
        for r in &report.repairs {
            let container = r
                .container
                .as_deref()
                .map(|c| format!(" (container {c})"))
                .unwrap_or_default();
            let outcome = r
                .outcome
                .as_deref()
                .map(|o| format!(": {o}"))
                .unwrap_or_default();
            println!(
                "{} {}{container}: {}; {}{outcome}",
                kind_name(r.kind),
                r.name,
                r.why,
                r.action
            );
        }
        for k in &report.kept {
            println!("left alone {}: {}", k.name, k.why);
        }
    }
    Ok(if failed.is_empty() { 0 } else { 1 })
}

pub async fn ipam_check(ds: &Datastore, as_json: bool) -> anyhow::Result<i32> {
    let report = check::check(&check::read(ds).await?);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!("{}: {}", p.key, p.problem);
        }
        let summary = format!(
            "{} block(s), {} handle(s), {} affinity key(s), {} endpoint(s) checked",
            report.blocks, report.handles, report.affinities, report.endpoints
        );
        if report.consistent {
            println!("IPAM is consistent: {summary}.");
        } else {
            println!("{} problem(s); {summary}.", report.problems.len());
        }
    }
    Ok(if report.consistent { 0 } else { 1 })
}

pub async fn doctor(args: DoctorArgs) -> anyhow::Result<i32> {
    let paths = Paths {
        modules_json: args.modules_json,
        agent_flags_dir: args.agent_flags_dir,
        module: args.module,
        node_env: args.node_env,
        mesos_slave: args.mesos_slave,
    };
    let config = Config::load().map_err(|e| e.to_string());
    let report = doctor::run(config, &paths).await;
    if args.format.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.checks {
            match &f.fix {
                None => println!("ok       {}: {}", f.check, f.detail),
                Some(fix) => println!("PROBLEM  {}: {}. To fix: {fix}.", f.check, f.detail),
            }
        }
        let problems = report.checks.iter().filter(|f| !f.ok).count();
        if report.healthy {
            println!("healthy");
        } else {
            println!("{problems} problem(s)");
        }
    }
    Ok(if report.healthy { 0 } else { 1 })
}
