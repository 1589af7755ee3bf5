//! Command-line interface for operators: the clap definitions and the
//! output of each subcommand (plain text for people, `--json` for
//! scripts). No subcommand at all means protocol mode (see `main.rs`).

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::json;

use crate::config::Config;
use crate::datastore::{keys, Datastore};
use crate::endpoint::{self, WorkloadEndpoint};
use crate::ipam::admin::{self, NewPool};

#[derive(Debug, Parser)]
#[command(
    name = "calico-mesos",
    version,
    about = "Calico networking for Apache Mesos",
    long_about = "Calico IP-per-container networking for Apache Mesos.\n\n\
        Run with no arguments, calico-mesos reads one net-modules plugin request \
        (JSON) on stdin and answers on stdout; the Mesos network isolator module \
        runs it that way. With a subcommand it inspects and repairs Calico state.\n\n\
        Settings come from /etc/calico/calico-mesos.toml (CALICO_MESOS_CONFIG names \
        another file); ETCD_ENDPOINTS, ETCD_CA_CERT_FILE, ETCD_CERT_FILE, \
        ETCD_KEY_FILE and NODENAME override it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage Calico IP pools (the address ranges containers get addresses from).
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Inspect Calico IPAM state.
    #[command(subcommand)]
    Ipam(IpamCommand),
    /// Inspect the Calico endpoints of Mesos containers.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Print the manual page (roff) to stdout.
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Add an IP pool.
    Add(PoolAddArgs),
    /// List IP pools.
    List(JsonFlag),
    /// Delete an IP pool; refused while any of its addresses is in use.
    Delete {
        /// The pool's CIDR or name.
        pool: String,
    },
}

#[derive(Debug, Args)]
pub struct PoolAddArgs {
    /// The pool's CIDR, e.g. 198.18.0.0/16 or fd00:18::/64.
    pub cidr: String,
    /// Prefix length of the blocks hosts claim (IPv4 20-32, default 26; IPv6 116-128, default 122).
    #[arg(long)]
    pub block_size: Option<u8>,
    /// Masquerade traffic from the pool to destinations outside all pools.
    #[arg(long)]
    pub nat_outgoing: bool,
    /// Create the pool disabled (no new allocations from it).
    #[arg(long)]
    pub disabled: bool,
    /// The pool's name (default: mesos- and the CIDR).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    /// Show pools, blocks, their host affinity and how many addresses are used.
    Show(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// List the endpoints of Mesos containers.
    List {
        /// Only the endpoints of this node.
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        format: JsonFlag,
    },
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON for scripts instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The clap command tree, for the man page generator.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Renders the man page of `calico-mesos` as roff.
pub fn render_man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(command()).render(out)
}

/// Runs a subcommand; returns the exit status. Errors are one line on
/// stderr.
pub fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        None => {
            let _ = command().print_help();
            Ok(())
        }
        Some(Command::Man) => render_man_page(&mut std::io::stdout()).map_err(anyhow::Error::from),
        Some(cmd) => with_datastore(cmd),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("calico-mesos: error: {e:#}");
            1
        }
    }
}

fn with_datastore(cmd: Command) -> anyhow::Result<()> {
    let config = Config::load()?;
    crate::logging::init(&crate::config::LogConfig {
        file: None,
        level: tracing::Level::WARN,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let ds = Datastore::connect(&config.etcd).await?;
        match cmd {
            Command::Pool(p) => pool(&ds, p).await,
            Command::Ipam(IpamCommand::Show(f)) => ipam_show(&ds, f.json).await,
            Command::Endpoint(EndpointCommand::List { node, format }) => {
                endpoint_list(&ds, node.as_deref(), format.json).await
            }
            Command::Man => unreachable!("handled without a datastore"),
        }
    });
    // A name lookup still blocked in a resolver thread must not hold the
    // command past its deadline.
    runtime.shutdown_background();
    result
}

async fn pool(ds: &Datastore, cmd: PoolCommand) -> anyhow::Result<()> {
    match cmd {
        PoolCommand::Add(a) => {
            let p = admin::add_pool(
                ds,
                NewPool {
                    cidr: a.cidr,
                    name: a.name,
                    block_size: a.block_size,
                    nat_outgoing: a.nat_outgoing,
                    disabled: a.disabled,
                },
            )
            .await?;
            println!(
                "Added IP pool {} ({}, blocks of /{})",
                p.name, p.cidr, p.block_size
            );
        }
        PoolCommand::List(f) => {
            let pools = admin::list_pools(ds).await?;
            if f.json {
                let list: Vec<_> = pools
                    .iter()
                    .map(|p| {
                        json!({
                            "name": p.name,
                            "cidr": p.cidr.to_string(),
                            "block_size": p.block_size,
                            "nat_outgoing": p.doc.value.spec.nat_outgoing,
                            "disabled": p.disabled(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<32} {:<24} {:>6} {:>4} {:>8}",
                    "NAME", "CIDR", "BLOCK", "NAT", "DISABLED"
                );
                for p in &pools {
                    println!(
                        "{:<32} {:<24} {:>6} {:>4} {:>8}",
                        p.name,
                        p.cidr.to_string(),
                        format!("/{}", p.block_size),
                        yes_no(p.doc.value.spec.nat_outgoing),
                        yes_no(p.disabled())
                    );
                }
            }
        }
        PoolCommand::Delete { pool } => {
            let p = admin::delete_pool(ds, &pool).await?;
            println!("Deleted IP pool {} ({})", p.name, p.cidr);
        }
    }
    Ok(())
}

async fn ipam_show(ds: &Datastore, as_json: bool) -> anyhow::Result<()> {
    let report = admin::report(ds).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for p in &report.pools {
        println!(
            "Pool {} {}{}: {} of {} addresses in use, {} block(s) of /{}",
            p.name,
            p.cidr,
            if p.disabled { " (disabled)" } else { "" },
            p.in_use,
            p.size,
            p.blocks.len(),
            p.block_size
        );
        for b in &p.blocks {
            println!(
                "  block {:<28} {:<24} used {:>5}  free {:>5}",
                b.cidr,
                b.affinity.as_deref().unwrap_or("(no affinity)"),
                b.in_use,
                b.free
            );
        }
    }
    if report.pools.is_empty() {
        println!("No IP pools. Add one with `calico-mesos pool add <CIDR>`.");
    }
    for b in &report.orphan_blocks {
        println!(
            "Block {} is in no pool ({}, {} in use)",
            b.cidr,
            b.affinity.as_deref().unwrap_or("no affinity"),
            b.in_use
        );
    }
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

async fn endpoint_list(ds: &Datastore, node: Option<&str>, as_json: bool) -> anyhow::Result<()> {
    let endpoints: Vec<WorkloadEndpoint> = ds
        .list::<WorkloadEndpoint>(&keys::workload_endpoints_prefix(endpoint::NAMESPACE))
        .await?
        .into_iter()
        .map(|v| v.value)
        .filter(|ep| ep.spec.orchestrator == endpoint::ORCHESTRATOR)
        .filter(|ep| node.is_none_or(|n| ep.spec.node == n))
        .collect();
    if as_json {
        let list: Vec<_> = endpoints
            .iter()
            .map(|ep| {
                json!({
                    "name": ep.metadata.name,
                    "node": ep.spec.node,
                    "container_id": ep.spec.container_id,
                    "interface": ep.spec.interface_name,
                    "mac": ep.spec.mac,
                    "ip_networks": ep.spec.ip_networks,
                    "profiles": ep.spec.profiles,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<38} {:<16} {:<34} PROFILES",
        "NODE", "CONTAINER", "INTERFACE", "ADDRESSES"
    );
    for ep in &endpoints {
        println!(
            "{:<16} {:<38} {:<16} {:<34} {}",
            ep.spec.node,
            ep.spec.container_id,
            ep.spec.interface_name,
            ep.spec.ip_networks.join(","),
            ep.spec.profiles.join(",")
        );
    }
    Ok(())
}
