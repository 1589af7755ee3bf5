use calico_mesos::cli::Cli;
use clap::Parser;

fn main() {
    // No arguments: the Mesos module is talking to us.
    if std::env::args_os().len() == 1 {
        std::process::exit(calico_mesos::commands::run_protocol_mode());
    }
    let cli = Cli::parse();
    std::process::exit(calico_mesos::cli::run(cli));
}
