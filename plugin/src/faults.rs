//! Fault points for the interruption tests: with `CALICO_MESOS_FAULT` set
//! to a point's name, the plugin kills itself with SIGKILL right there, as
//! an agent restart or the OOM killer would. Unset (always, in production)
//! a point costs one environment lookup.

/// Stops the process with SIGKILL if `CALICO_MESOS_FAULT` names `name`.
pub fn point(name: &str) {
    if std::env::var_os("CALICO_MESOS_FAULT").is_some_and(|v| v == name) {
        tracing::warn!(point = name, "fault point reached: killing the process");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
}
