//! Command-line interface: the clap definitions for the operator subcommands.
//! No subcommand at all means protocol mode (see `main.rs`).

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "calico-mesos",
    version,
    about = "Calico networking for Apache Mesos",
    long_about = "Calico IP-per-container networking for Apache Mesos.\n\n\
        Run with no arguments, calico-mesos reads one net-modules plugin request \
        (JSON) on stdin and answers on stdout; the Mesos network isolator module \
        runs it that way. With a subcommand it inspects and repairs Calico state."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the manual page (roff) to stdout.
    #[command(hide = true)]
    Man,
}

/// The clap command tree, for the man page generator.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Renders the man page of `calico-mesos` as roff.
pub fn render_man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(command()).render(out)
}
