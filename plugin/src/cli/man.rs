//! The man page: clap_mangen's title, synopsis, description and options,
//! then one COMMANDS section describing every subcommand with its options
//! (clap_mangen would only point at per-subcommand pages, which are not
//! shipped), and how to enable the hourly gc timer.

use std::io::Write;

/// Escapes text for a roff line.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

fn paragraphs(w: &mut dyn Write, text: &str) -> std::io::Result<()> {
    for (i, p) in text.split("\n\n").enumerate() {
        if i > 0 {
            writeln!(w, ".PP")?;
        }
        writeln!(w, "{}", roff(p.trim()))?;
    }
    Ok(())
}

/// `--name VALUE`, `--flag` or `<POSITIONAL>`; None for help/version.
fn arg_text(a: &clap::Arg) -> Option<String> {
    let id = a.get_id().as_str();
    if a.is_hide_set() || id == "help" || id == "version" {
        return None;
    }
    if a.is_positional() {
        return Some(format!("<{}>", id.to_uppercase()));
    }
    let value = match a.get_action().takes_values() {
        true => a
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| format!(" {v}"))
            .unwrap_or_else(|| format!(" {}", id.to_uppercase())),
        false => String::new(),
    };
    Some(format!("--{}{value}", a.get_long()?))
}

fn usage_of(cmd: &clap::Command, path: &str) -> String {
    let mut parts = vec![path.to_string()];
    for a in cmd.get_arguments() {
        if let Some(t) = arg_text(a) {
            parts.push(if a.is_positional() {
                t
            } else {
                format!("[{t}]")
            });
        }
    }
    parts.join(" ")
}

fn render_command(w: &mut dyn Write, cmd: &clap::Command, path: &str) -> std::io::Result<()> {
    let subs: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .collect();
    if !subs.is_empty() {
        for s in subs {
            render_command(w, s, &format!("{path} {}", s.get_name()))?;
        }
        return Ok(());
    }
    writeln!(w, ".SS \"{}\"", roff(&usage_of(cmd, path)))?;
    let about = cmd
        .get_long_about()
        .or(cmd.get_about())
        .map(|s| s.to_string())
        .unwrap_or_default();
    paragraphs(w, &about)?;
    for a in cmd.get_arguments() {
        let Some(name) = arg_text(a) else { continue };
        let mut help = a
            .get_long_help()
            .or(a.get_help())
            .map(|s| s.to_string())
            .unwrap_or_default();
        if let Some(env) = a.get_env() {
            help.push_str(&format!(" (environment: {})", env.to_string_lossy()));
        }
        if let Some(d) = a.get_default_values().first() {
            help.push_str(&format!(" (default: {})", d.to_string_lossy()));
        }
        writeln!(w, ".TP")?;
        writeln!(w, "\\fB{}\\fR", roff(&name))?;
        writeln!(w, "{}", roff(help.trim()))?;
    }
    Ok(())
}

/// Renders the whole page.
pub fn render(cmd: clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    writeln!(w, ".SH COMMANDS")?;
    render_command(w, &cmd, cmd.get_name())?;
    writeln!(w, ".SH \"LEAK REPAIR\"")?;
    paragraphs(
        w,
        "At agent start the Mesos module sends the plugin's gc command with every container it \
         recovered; the plugin frees what this node holds for any other container. Between \
         restarts, calico-mesos-gc.timer runs `calico-mesos gc --apply` hourly. The packages \
         install it disabled; enable it with `systemctl enable --now calico-mesos-gc.timer`, \
         and check with `calico-mesos ipam check` and `calico-mesos doctor`.",
    )?;
    man.render_version_section(w)?;
    Ok(())
}
