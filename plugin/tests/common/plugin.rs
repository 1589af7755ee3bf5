//! Runs the real `calico-mesos` binary against a test etcd.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::Etcd;

pub const BIN: &str = env!("CARGO_BIN_EXE_calico-mesos");

/// The plugin as one agent host runs it: its node name, its etcd, its
/// config and log file in a temp dir.
pub struct Plugin {
    pub node: String,
    pub endpoints: String,
    pub dir: tempfile::TempDir,
    pub extra_env: Vec<(String, String)>,
    /// Run inside this network namespace (a simulated host).
    pub netns_pid: Option<u32>,
}

#[derive(Debug)]
pub struct Reply {
    pub status: i32,
    pub json: Value,
    pub stderr: String,
}

impl Reply {
    pub fn error(&self) -> Option<&str> {
        self.json["error"].as_str()
    }

    pub fn ok(&self) -> &Self {
        assert_eq!(self.status, 0, "plugin failed: {self:?}");
        assert!(
            self.json["error"].is_null(),
            "plugin answered an error: {self:?}"
        );
        self
    }

    pub fn ips(&self, family: &str) -> Vec<String> {
        self.json[family]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|v| v.as_str().expect("address string").to_string())
            .collect()
    }
}

impl Plugin {
    pub fn new(etcd: &Etcd, node: &str) -> Plugin {
        Self::with_endpoints(&etcd.endpoints(), node)
    }

    pub fn with_endpoints(endpoints: &str, node: &str) -> Plugin {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("calico-mesos.toml"), "# test config\n").unwrap();
        Plugin {
            node: node.to_string(),
            endpoints: endpoints.to_string(),
            dir,
            extra_env: Vec::new(),
            netns_pid: None,
        }
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("calico-mesos.log")
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("calico-mesos.toml")
    }

    /// One more environment variable for every run.
    pub fn with_env(mut self, key: &str, value: &str) -> Plugin {
        self.extra_env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs one request and returns the raw process output: for runs that
    /// are killed and answer nothing (fault points).
    pub fn run_raw(&self, req: &Value) -> Output {
        self.output(req.to_string().as_bytes())
    }

    /// Runs the plugin with `input` on stdin and waits for it.
    fn output(&self, input: &[u8]) -> Output {
        let mut child = self
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("plugin starts");
        // The plugin may stop reading early (oversized input): ignore EPIPE.
        let _ = child.stdin.take().unwrap().write_all(input);
        child.wait_with_output().expect("plugin runs")
    }

    /// Replaces the plugin's config file.
    pub fn set_config(&self, toml: &str) {
        std::fs::write(self.config_file(), toml).unwrap();
    }

    /// Runs the plugin inside the simulated host `pid`, as the agent there
    /// would: started from inside that namespace (`netns::command_in`).
    pub fn on_host(mut self, pid: u32) -> Plugin {
        self.netns_pid = Some(pid);
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = match self.netns_pid {
            Some(pid) => super::netns::command_in(pid, BIN),
            None => Command::new(BIN),
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ETCD_ENDPOINTS", &self.endpoints)
            .env("NODENAME", &self.node)
            .env("CALICO_MESOS_CONFIG", self.config_file())
            .env("CALICO_MESOS_LOG_FILE", self.log_file())
            .env(
                "CALICO_MESOS_LOCK_DIR",
                super::etcd::lock_dir_for(&self.endpoints),
            );
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Protocol mode: `input` on stdin, the JSON answer parsed.
    pub fn raw(&self, input: &[u8]) -> Reply {
        let out = self.output(input);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}): {stdout:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Reply {
            status: out.status.code().unwrap_or(-1),
            json,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn request(&self, req: &Value) -> Reply {
        self.raw(req.to_string().as_bytes())
    }

    pub fn allocate(&self, uid: &str, v4: u32, v6: u32) -> Reply {
        self.request(&serde_json::json!({"command": "allocate", "args": {
            "hostname": self.node, "uid": uid, "num_ipv4": v4, "num_ipv6": v6}}))
    }

    pub fn reserve(&self, uid: &str, v4: &[&str], v6: &[&str]) -> Reply {
        self.request(&serde_json::json!({"command": "reserve", "args": {
            "hostname": self.node, "uid": uid, "ipv4_addrs": v4, "ipv6_addrs": v6}}))
    }

    pub fn release_uid(&self, uid: &str) -> Reply {
        self.request(&serde_json::json!({"command": "release", "args": {"uid": uid}}))
    }

    pub fn release_ips(&self, ips: &[&str]) -> Reply {
        self.request(&serde_json::json!({"command": "release", "args": {"ips": ips}}))
    }

    /// An operator subcommand.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("plugin runs")
    }

    /// `calico-mesos pool add`, asserted to succeed.
    pub fn add_pool(&self, cidr: &str, block_size: u8) {
        let out = self.cli(&["pool", "add", cidr, "--block-size", &block_size.to_string()]);
        assert!(
            out.status.success(),
            "pool add {cidr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
