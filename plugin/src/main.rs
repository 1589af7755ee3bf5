use calico_mesos::cli::{Cli, Command};
use clap::Parser;

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Man) => {
            if let Err(e) = calico_mesos::cli::render_man_page(&mut std::io::stdout()) {
                eprintln!("calico-mesos: {e}");
                std::process::exit(1);
            }
        }
        None => {
            eprintln!("calico-mesos: protocol mode is not built yet");
            std::process::exit(1);
        }
    }
}
