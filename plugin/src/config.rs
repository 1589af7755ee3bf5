//! Configuration: `/etc/calico/calico-mesos.toml` (path from
//! `CALICO_MESOS_CONFIG`), overridden by the environment the agent passes.
//! Every setting has a default, so no file at all talks to a local etcd.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/calico/calico-mesos.toml";
pub const DEFAULT_ETCD_ENDPOINT: &str = "http://127.0.0.1:2379";
pub const DEFAULT_LOG_FILE: &str = "/var/log/calico/calico-mesos.log";
pub const DEFAULT_MTU_FILE: &str = "/var/lib/calico/mtu";
pub const NODENAME_FILE: &str = "/var/lib/calico/nodename";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {detail}")]
    File { path: String, detail: String },
    #[error("config file {path}, line {line}: {detail}")]
    Syntax {
        path: String,
        line: usize,
        detail: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The settings every command uses, after file and environment are merged.
#[derive(Debug, Clone)]
pub struct Config {
    pub etcd: EtcdConfig,
    pub node_name: String,
    pub log: LogConfig,
    pub ipam: IpamSettings,
    pub dataplane: DataplaneSettings,
    /// The file the settings came from, if one was read.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub ca_cert_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// One etcd call (and the retry of a lost answer) at most this long.
    pub timeout_ms: u64,
    /// Connecting to one member at most this long (a blackholed member
    /// costs no more).
    pub connect_timeout_ms: u64,
    /// Every etcd call of one request together, retries included.
    pub deadline_ms: u64,
}

/// The bounds both etcd timeouts must lie in.
const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=120_000;

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// None: log to stderr only.
    pub file: Option<PathBuf>,
    pub level: tracing::Level,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpamSettings {
    /// Restrict automatic IPv4 allocation to these pools (names or CIDRs).
    pub ipv4_pools: Vec<String>,
    /// Restrict automatic IPv6 allocation to these pools (names or CIDRs).
    pub ipv6_pools: Vec<String>,
    /// Take addresses from other hosts' blocks when this host's blocks are
    /// full and no new block can be claimed (ignored with strict affinity).
    pub borrow: bool,
    /// An address that no endpoint references is freed by a release by
    /// address (or by `gc`) only once its allocation is this old: a late
    /// release must not free what another container reserved just now.
    pub release_grace_seconds: u64,
    /// Where the host-wide IPAM lock lives (env `CALICO_MESOS_LOCK_DIR`).
    pub lock_dir: PathBuf,
    /// How long a request waits for the other plugins of this host.
    pub lock_timeout_ms: u64,
}

pub const DEFAULT_RELEASE_GRACE_SECONDS: u64 = 600;

impl Default for IpamSettings {
    fn default() -> Self {
        IpamSettings {
            ipv4_pools: Vec::new(),
            ipv6_pools: Vec::new(),
            borrow: false,
            release_grace_seconds: DEFAULT_RELEASE_GRACE_SECONDS,
            lock_dir: PathBuf::from("/run/calico-mesos"),
            lock_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DataplaneSettings {
    /// None: read `mtu_file`, else 1500.
    pub mtu: Option<u32>,
    pub mtu_file: PathBuf,
}

// ---- the file's shape -------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    etcd: EtcdSection,
    node: NodeSection,
    log: LogSection,
    ipam: IpamSettings,
    dataplane: DataplaneSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EtcdSection {
    endpoints: Option<Vec<String>>,
    ca_cert_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    deadline_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NodeSection {
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LogSection {
    file: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DataplaneSection {
    mtu: Option<u32>,
    mtu_file: Option<String>,
}

/// Where settings come from: lets tests supply environment and files.
pub trait Sources {
    fn env(&self, name: &str) -> Option<String>;
    fn read(&self, path: &Path) -> std::io::Result<String>;
    fn hostname(&self) -> Option<String>;
}

/// The real process environment and filesystem.
pub struct SystemSources;

impl Sources for SystemSources {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn read(&self, path: &Path) -> std::io::Result<String> {
        let bytes = crate::files::read_bounded(path)?;
        String::from_utf8(bytes)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
    }
    fn hostname(&self) -> Option<String> {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
    }
}

impl Config {
    /// Loads the configuration the way the agent-run plugin sees it.
    pub fn load() -> Result<Config, ConfigError> {
        Self::load_from(&SystemSources)
    }

    pub fn load_from(src: &dyn Sources) -> Result<Config, ConfigError> {
        let explicit = src.env("CALICO_MESOS_CONFIG");
        let path = PathBuf::from(explicit.as_deref().unwrap_or(DEFAULT_CONFIG_PATH));
        let (file, source) = match src.read(&path) {
            Ok(text) => (parse_file(&path, &text)?, Some(path)),
            // No file at the default path is fine; a named file must exist.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
                (FileConfig::default(), None)
            }
            Err(e) => {
                return Err(ConfigError::File {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                })
            }
        };
        Self::merge(file, source, src)
    }

    fn merge(
        file: FileConfig,
        source: Option<PathBuf>,
        src: &dyn Sources,
    ) -> Result<Config, ConfigError> {
        let endpoints = if let Some(list) = src.env("ETCD_ENDPOINTS") {
            list.split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect()
        } else if let Some(authority) = src.env("ETCD_AUTHORITY") {
            // The 2016 plugin's variables: host:port plus a scheme.
            let scheme = src.env("ETCD_SCHEME").unwrap_or_else(|| "http".into());
            vec![format!("{scheme}://{authority}")]
        } else {
            file.etcd
                .endpoints
                .unwrap_or_else(|| vec![DEFAULT_ETCD_ENDPOINT.to_string()])
        };
        validate_endpoints(&endpoints)?;

        let etcd = EtcdConfig {
            endpoints,
            ca_cert_file: src.env("ETCD_CA_CERT_FILE").or(file.etcd.ca_cert_file),
            cert_file: src.env("ETCD_CERT_FILE").or(file.etcd.cert_file),
            key_file: src.env("ETCD_KEY_FILE").or(file.etcd.key_file),
            timeout_ms: file.etcd.timeout_ms.unwrap_or(5000),
            connect_timeout_ms: 0,
            deadline_ms: file.etcd.deadline_ms.unwrap_or(15_000),
        };
        let etcd = EtcdConfig {
            connect_timeout_ms: file
                .etcd
                .connect_timeout_ms
                .unwrap_or(etcd.timeout_ms.min(1000)),
            ..etcd
        };
        validate_timeouts(&etcd)?;

        let node_name = resolve_node_name(file.node.name, src)?;

        let level_text = src
            .env("CALICO_MESOS_LOG_LEVEL")
            .or(file.log.level)
            .unwrap_or_else(|| "info".into());
        let level = level_text.parse::<tracing::Level>().map_err(|_| {
            ConfigError::Invalid(format!(
                "log level '{level_text}' is not one of error, warn, info, debug, trace"
            ))
        })?;
        let log_file = src
            .env("CALICO_MESOS_LOG_FILE")
            .or(file.log.file)
            .unwrap_or_else(|| DEFAULT_LOG_FILE.into());
        let log = LogConfig {
            // An empty setting turns file logging off.
            file: (!log_file.is_empty() && log_file != "none").then(|| PathBuf::from(log_file)),
            level,
        };

        let dataplane = DataplaneSettings {
            mtu: file.dataplane.mtu.filter(|m| *m > 0),
            mtu_file: PathBuf::from(
                file.dataplane
                    .mtu_file
                    .unwrap_or_else(|| DEFAULT_MTU_FILE.into()),
            ),
        };
        if let Some(mtu) = dataplane.mtu {
            if !(576..=65535).contains(&mtu) {
                return Err(ConfigError::Invalid(format!(
                    "dataplane mtu {mtu} is outside 576..65535"
                )));
            }
        }

        let mut ipam = file.ipam;
        if let Some(dir) = src.env("CALICO_MESOS_LOCK_DIR") {
            ipam.lock_dir = PathBuf::from(dir);
        }
        if !(1..=600_000).contains(&ipam.lock_timeout_ms) {
            return Err(ConfigError::Invalid(format!(
                "ipam lock_timeout_ms {} is outside 1..600000",
                ipam.lock_timeout_ms
            )));
        }

        Ok(Config {
            etcd,
            node_name,
            log,
            ipam,
            dataplane,
            source,
        })
    }
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let line = text[..offset.min(text.len())].matches('\n').count() + 1;
        ConfigError::Syntax {
            path: path.display().to_string(),
            line,
            detail: e.message().trim().to_string(),
        }
    })
}

fn validate_timeouts(etcd: &EtcdConfig) -> Result<(), ConfigError> {
    for (name, v) in [
        ("timeout_ms", etcd.timeout_ms),
        ("deadline_ms", etcd.deadline_ms),
    ] {
        if !TIMEOUT_RANGE_MS.contains(&v) {
            return Err(ConfigError::Invalid(format!(
                "etcd {name} {v} is outside {}..{}",
                TIMEOUT_RANGE_MS.start(),
                TIMEOUT_RANGE_MS.end()
            )));
        }
    }
    if etcd.timeout_ms > etcd.deadline_ms {
        return Err(ConfigError::Invalid(format!(
            "etcd timeout_ms {} is longer than deadline_ms {}",
            etcd.timeout_ms, etcd.deadline_ms
        )));
    }
    if !(10..=etcd.timeout_ms).contains(&etcd.connect_timeout_ms) {
        return Err(ConfigError::Invalid(format!(
            "etcd connect_timeout_ms {} is outside 10..timeout_ms ({})",
            etcd.connect_timeout_ms, etcd.timeout_ms
        )));
    }
    Ok(())
}

fn validate_endpoints(endpoints: &[String]) -> Result<(), ConfigError> {
    if endpoints.is_empty() {
        return Err(ConfigError::Invalid("no etcd endpoints configured".into()));
    }
    for e in endpoints {
        check_endpoint(e)
            .map_err(|why| ConfigError::Invalid(format!("etcd endpoint '{e}' {why}")))?;
    }
    Ok(())
}

/// `http(s)://host[:port][/]`: a known scheme, a host, a port in 1..65535.
fn check_endpoint(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
        return Err("must be scheme://host:port, nothing more".into());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or("has an unclosed [")?;
            addr.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("has an invalid IPv6 address {addr}"))?;
            (addr, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(format!("has port '{p}' outside 1..65535")),
        }
    }
    Ok(())
}

/// The Calico node name, decided as calico/node does it (calico-datastore.md
/// §1.5): `NODENAME`, the config file, `/var/lib/calico/nodename`, then the
/// lower-cased kernel hostname.
fn resolve_node_name(from_file: Option<String>, src: &dyn Sources) -> Result<String, ConfigError> {
    let name = src
        .env("NODENAME")
        .or(from_file.filter(|n| !n.is_empty()))
        .or_else(|| {
            src.read(Path::new(NODENAME_FILE))
                .ok()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
        })
        .or_else(|| src.hostname().map(|h| h.to_lowercase()))
        .ok_or_else(|| ConfigError::Invalid("cannot determine the node name".into()))?;
    crate::names::check_node_name(&name).map_err(ConfigError::Invalid)?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        env: HashMap<&'static str, &'static str>,
        files: HashMap<&'static str, &'static str>,
    }

    impl Sources for Fake {
        fn env(&self, name: &str) -> Option<String> {
            self.env.get(name).map(|v| v.to_string())
        }
        fn read(&self, path: &Path) -> std::io::Result<String> {
            self.files
                .get(path.to_str().unwrap())
                .map(|v| v.to_string())
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        }
        fn hostname(&self) -> Option<String> {
            Some("Agent-7".into())
        }
    }

    fn fake(env: &[(&'static str, &'static str)], files: &[(&'static str, &'static str)]) -> Fake {
        Fake {
            env: env.iter().copied().collect(),
            files: files.iter().copied().collect(),
        }
    }

    #[test]
    fn no_file_gives_local_etcd_and_hostname() {
        let cfg = Config::load_from(&fake(&[], &[])).unwrap();
        assert_eq!(cfg.etcd.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(cfg.node_name, "agent-7");
        assert_eq!(cfg.log.file.as_deref(), Some(Path::new(DEFAULT_LOG_FILE)));
        assert_eq!(cfg.log.level, tracing::Level::INFO);
        assert!(cfg.source.is_none());
    }

    #[test]
    fn environment_beats_the_file() {
        let file = "[etcd]\nendpoints = [\"http://10.0.0.1:2379\"]\n[node]\nname = \"from-file\"\n";
        let cfg = Config::load_from(&fake(
            &[
                ("ETCD_ENDPOINTS", "http://a:1, http://b:2"),
                ("NODENAME", "from-env"),
            ],
            &[(DEFAULT_CONFIG_PATH, file)],
        ))
        .unwrap();
        assert_eq!(cfg.etcd.endpoints, vec!["http://a:1", "http://b:2"]);
        assert_eq!(cfg.node_name, "from-env");

        let cfg = Config::load_from(&fake(&[], &[(DEFAULT_CONFIG_PATH, file)])).unwrap();
        assert_eq!(cfg.etcd.endpoints, vec!["http://10.0.0.1:2379"]);
        assert_eq!(cfg.node_name, "from-file");
    }

    #[test]
    fn legacy_etcd_authority_and_scheme() {
        let cfg = Config::load_from(&fake(
            &[("ETCD_AUTHORITY", "etcd1:2379"), ("ETCD_SCHEME", "https")],
            &[],
        ))
        .unwrap();
        assert_eq!(cfg.etcd.endpoints, vec!["https://etcd1:2379"]);
    }

    #[test]
    fn nodename_file_comes_before_hostname() {
        let cfg = Config::load_from(&fake(&[], &[(NODENAME_FILE, "calico-7\n")])).unwrap();
        assert_eq!(cfg.node_name, "calico-7");
    }

    #[test]
    fn malformed_file_names_file_and_line() {
        let err = Config::load_from(&fake(
            &[("CALICO_MESOS_CONFIG", "/tmp/x.toml")],
            &[("/tmp/x.toml", "[etcd]\ntimeout_ms = 5\nendpoints = [\n")],
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("config file /tmp/x.toml, line 3"), "{err}");

        let err = Config::load_from(&fake(
            &[("CALICO_MESOS_CONFIG", "/tmp/x.toml")],
            &[("/tmp/x.toml", "[etcd]\n\nendpoint = \"http://x:1\"\n")],
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 3") && err.contains("endpoint"), "{err}");
    }

    #[test]
    fn a_named_file_must_exist() {
        let err = Config::load_from(&fake(&[("CALICO_MESOS_CONFIG", "/nope.toml")], &[]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config file /nope.toml:"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected() {
        for (env, text) in [
            (("ETCD_ENDPOINTS", "127.0.0.1:2379"), "must start with http"),
            (("CALICO_MESOS_LOG_LEVEL", "loud"), "log level 'loud'"),
            (("NODENAME", "a/b"), "node name"),
        ] {
            let err = Config::load_from(&fake(&[env], &[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(text), "{err}");
        }
    }
}
