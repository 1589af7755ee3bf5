//! Command-line interface for operators: the clap definitions (which the
//! man page follows) and the dispatch; `admin.rs` prints the inspection
//! and pool commands, `repair.rs` gc, `ipam check` and doctor (plain text
//! for people, `--json` for scripts). No subcommand at all means protocol
//! mode (see `main.rs`).

mod admin;
mod man;
mod repair;

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::Config;
use crate::datastore::Datastore;

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
    /// Find and repair what no running container of this node holds: endpoints of containers
    /// that are gone, cali links no endpoint names, mesos.* handles no endpoint holds. Dry run
    /// unless --apply.
    #[command(
        long_about = "Find and repair, on this node, what no running container holds any more.\n\n\
        An endpoint whose host veth is gone, or no longer leads into a container network \
        namespace, is deleted and the handles it recorded (and mesos.<container id>) released; \
        a cali… host link of ours that no endpoint names (an interrupted isolate) is removed; \
        a mesos.* handle with no endpoint, whose addresses are all on this node, is released \
        once its allocations are older than the grace period. A running container (its link \
        exists and leads into its namespace) is never touched, nor is a container that an \
        isolate is working on.\n\n\
        Without --apply nothing changes: gc lists what it would repair and why, and exits 0. \
        calico-mesos-gc.timer runs `gc --apply` hourly once enabled."
    )]
    Gc(GcArgs),
    /// Check this host's Calico and Mesos set-up; one line per problem with what to do.
    #[command(
        long_about = "Check this host's Calico and Mesos set-up: the config file parses; every \
        etcd endpoint answers (TLS files included); ClusterInformation is ready; the Node of \
        this node exists; a usable pool per family in use; Felix accepts container-to-host \
        traffic; modules.json is valid and names files that exist; the module is built for \
        the installed Mesos; the agent's flag files name our modules file, isolator and hook. \
        Exits 0 when healthy, else 1 with one line per problem saying what to do. Read-only."
    )]
    Doctor(DoctorArgs),
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
    /// Check the IPAM invariants over the whole datastore; exit 1 listing each problem and its
    /// key. Read-only.
    #[command(
        long_about = "Check the IPAM invariants over the whole datastore, like `calicoctl ipam \
        check`: every allocation has a handle document, every handle counts what the blocks \
        hold for it, every endpoint address is allocated (to the handle the endpoint \
        recorded), every block is inside a pool with its block size, affinities and blocks \
        name each other, and every document parses. Exits 0 when consistent, else 1 with one \
        line per problem naming its key. Never changes anything."
    )]
    Check(JsonFlag),
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Repair what is found (default: list it and change nothing).
    #[arg(long)]
    pub apply: bool,
    /// Release handles with no endpoint only when older than this (default:
    /// [ipam] release_grace_seconds, 600).
    #[arg(long, value_name = "SECONDS")]
    pub grace: Option<u64>,
    #[command(flatten)]
    pub format: JsonFlag,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The agent's modules file.
    #[arg(
        long,
        value_name = "FILE",
        env = "CALICO_MESOS_MODULES_JSON",
        default_value = "/etc/calico/modules.json"
    )]
    pub modules_json: PathBuf,
    /// The agent's flag directory (modules, isolation, hooks).
    #[arg(
        long,
        value_name = "DIR",
        env = "CALICO_MESOS_AGENT_FLAGS_DIR",
        default_value = "/etc/mesos-slave"
    )]
    pub agent_flags_dir: PathBuf,
    /// The module (default: the file modules.json names).
    #[arg(long, value_name = "FILE", env = "CALICO_MESOS_MODULE")]
    pub module: Option<PathBuf>,
    /// calico-node's environment file (Felix settings).
    #[arg(
        long,
        value_name = "FILE",
        env = "CALICO_MESOS_NODE_ENV",
        default_value = "/etc/calico/calico-node.env"
    )]
    pub node_env: PathBuf,
    /// The agent binary, asked for its version.
    #[arg(
        long,
        value_name = "PROGRAM",
        env = "CALICO_MESOS_MESOS_SLAVE",
        default_value = "mesos-slave"
    )]
    pub mesos_slave: String,
    #[command(flatten)]
    pub format: JsonFlag,
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
    man::render(command(), out)
}

/// Runs a subcommand; returns the exit status (1 also for "problems
/// found"). Errors are one line on stderr.
pub fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        None => {
            let _ = command().print_help();
            Ok(0)
        }
        Some(Command::Man) => render_man_page(&mut std::io::stdout())
            .map(|()| 0)
            .map_err(anyhow::Error::from),
        Some(Command::Doctor(args)) => runtime().and_then(|rt| {
            let result = rt.block_on(repair::doctor(args));
            rt.shutdown_background();
            result
        }),
        Some(cmd) => with_datastore(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("calico-mesos: error: {e:#}");
            1
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    crate::logging::init(&crate::config::LogConfig {
        file: None,
        level: tracing::Level::WARN,
    });
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn with_datastore(cmd: Command) -> anyhow::Result<i32> {
    let config = Config::load()?;
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let ds = Datastore::connect(&config.etcd).await?;
        let done = |r: anyhow::Result<()>| r.map(|()| 0);
        match cmd {
            Command::Pool(p) => done(admin::pool(&ds, p).await),
            Command::Ipam(IpamCommand::Show(f)) => done(admin::ipam_show(&ds, f.json).await),
            Command::Ipam(IpamCommand::Check(f)) => repair::ipam_check(&ds, f.json).await,
            Command::Endpoint(EndpointCommand::List { node, format }) => {
                done(admin::endpoint_list(&ds, node.as_deref(), format.json).await)
            }
            Command::Gc(args) => repair::gc(&config, &ds, args).await,
            Command::Man | Command::Doctor(_) => unreachable!("handled without a datastore"),
        }
    });
    // A name lookup still blocked in a resolver thread must not hold the
    // command past its deadline.
    runtime.shutdown_background();
    result
}
