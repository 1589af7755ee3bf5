//! The net-modules plugin protocol (plugin-protocol.md): one JSON request
//! in, one JSON answer out. Parsing validates everything, so a request that
//! is refused here has touched nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{json, Map, Value};

use crate::names::{check_container_id, check_identifier, printable};

/// More than this on stdin is refused unread.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Most addresses one container may ask for, per family.
pub const MAX_ADDRESSES_PER_FAMILY: u64 = 16;
/// Linux's PID_MAX_LIMIT.
const MAX_PID: u64 = 4_194_304;
const MAX_LIST_ITEMS: usize = 64;
/// Most containers one `gc` may name (an agent runs far fewer; the stdin
/// limit bounds the request anyway).
pub const MAX_GC_CONTAINERS: usize = 8192;
const MAX_LABELS: usize = 128;
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_VALUE_LEN: usize = 4096;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Allocate(AllocateArgs),
    Reserve(ReserveArgs),
    Release(ReleaseArgs),
    Isolate(IsolateArgs),
    Cleanup(CleanupArgs),
    Gc(GcArgs),
}

impl Request {
    pub fn command(&self) -> &'static str {
        match self {
            Request::Allocate(_) => "allocate",
            Request::Reserve(_) => "reserve",
            Request::Release(_) => "release",
            Request::Isolate(_) => "isolate",
            Request::Cleanup(_) => "cleanup",
            Request::Gc(_) => "gc",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AllocateArgs {
    /// The agent's idea of its hostname; logged, Calico uses its node name.
    pub hostname: String,
    pub uid: String,
    /// Addresses still to pick (the `ipv4_addrs` label's ones subtracted).
    pub num_ipv4: u32,
    pub num_ipv6: u32,
    /// Static IPv4 addresses from the legacy `ipv4_addrs` label.
    pub label_ipv4: Vec<Ipv4Addr>,
    pub netgroups: Vec<String>,
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReserveArgs {
    pub hostname: String,
    pub uid: String,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReleaseArgs {
    Uid(String),
    Ips(Vec<IpAddr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct IsolateArgs {
    pub hostname: String,
    pub container_id: String,
    pub pid: u32,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    pub netgroups: Vec<String>,
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CleanupArgs {
    pub hostname: String,
    pub container_id: String,
}

/// `gc`: the containers that survived an agent restart; everything else
/// of this node is freed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcArgs {
    pub hostname: String,
    pub containers: BTreeSet<String>,
}

/// The answer. Only the documented fields are ever emitted: the 2016 module
/// parses the rest strictly.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Addresses {
        ipv4: Vec<IpAddr>,
        ipv6: Vec<IpAddr>,
    },
    Ok,
    Error(String),
}

impl Response {
    pub fn to_json(&self) -> Value {
        match self {
            Response::Addresses { ipv4, ipv6 } => json!({
                "ipv4": ipv4.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
                "ipv6": ipv6.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
                "error": null,
            }),
            Response::Ok => json!({ "error": null }),
            Response::Error(msg) => json!({ "error": msg }),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Response::Error(_))
    }
}

/// Parses and validates one request.
pub fn parse_request(input: &[u8]) -> Result<Request, String> {
    if input.len() > MAX_REQUEST_BYTES {
        return Err(format!(
            "Request too large: more than {MAX_REQUEST_BYTES} bytes on stdin"
        ));
    }
    let doc: Value = serde_json::from_slice(input).map_err(|e| format!("Invalid JSON: {e}"))?;
    let Value::Object(top) = doc else {
        return Err("Invalid JSON: the request must be a JSON object".into());
    };
    let command = match top.get("command") {
        None | Some(Value::Null) => return Err("Missing command".into()),
        Some(Value::String(c)) => c.as_str(),
        Some(_) => return Err("command must be a string".into()),
    };
    let args = match top.get("args") {
        None | Some(Value::Null) => return Err("Missing args".into()),
        Some(Value::Object(a)) => Args(a),
        Some(_) => return Err("args must be a JSON object".into()),
    };
    match command {
        "allocate" => parse_allocate(&args).map(Request::Allocate),
        "reserve" => parse_reserve(&args).map(Request::Reserve),
        "release" => parse_release(&args).map(Request::Release),
        "isolate" => parse_isolate(&args).map(Request::Isolate),
        "cleanup" => parse_cleanup(&args).map(Request::Cleanup),
        "gc" => parse_gc(&args).map(Request::Gc),
        other => Err(format!("Unknown command: {}", printable(other))),
    }
}

fn parse_allocate(a: &Args) -> Result<AllocateArgs, String> {
    let hostname = a.hostname()?;
    let uid = a.uid()?;
    let num_ipv4 = a.count("num_ipv4")?;
    let num_ipv6 = a.count("num_ipv6")?;
    let netgroups = a.netgroups()?;
    let labels = a.labels()?;
    let label_ipv4 = match labels.get("ipv4_addrs") {
        Some(text) => parse_ipv4_addrs_label(text)?,
        None => Vec::new(),
    };
    // The label's addresses count against num_ipv4 (Marathon asked for one
    // address and named it in the label).
    let num_ipv4 = num_ipv4.saturating_sub(label_ipv4.len() as u32);
    Ok(AllocateArgs {
        hostname,
        uid,
        num_ipv4,
        num_ipv6,
        label_ipv4,
        netgroups,
        labels,
    })
}

fn parse_reserve(a: &Args) -> Result<ReserveArgs, String> {
    let hostname = a.hostname()?;
    let uid = a.uid()?;
    let (ipv4, ipv6) = a.addresses()?;
    // Validated for type safety even though reserve does not use them.
    a.netgroups()?;
    a.labels()?;
    Ok(ReserveArgs {
        hostname,
        uid,
        ipv4,
        ipv6,
    })
}

fn parse_release(a: &Args) -> Result<ReleaseArgs, String> {
    let uid = a.present("uid");
    let ips = a.present("ips");
    match (uid, ips) {
        (None, None) => Err("Must supply either uid or ips.".into()),
        (Some(_), Some(_)) => Err("Supply either uid or ips, not both.".into()),
        (Some(uid), None) => {
            let Value::String(uid) = uid else {
                return Err("uid must be a string".into());
            };
            check_identifier("uid", uid, MAX_NAME_LEN)?;
            Ok(ReleaseArgs::Uid(uid.clone()))
        }
        (None, Some(_)) => {
            let list = a.string_list("ips")?;
            let ips = list
                .iter()
                .map(|s| parse_ip(s))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ReleaseArgs::Ips(ips))
        }
    }
}

fn parse_isolate(a: &Args) -> Result<IsolateArgs, String> {
    let hostname = a.hostname()?;
    let container_id = a.container_id()?;
    let pid = match a.present("pid") {
        None => return Err("Missing pid".into()),
        Some(v) => match v.as_u64() {
            Some(p) if (1..=MAX_PID).contains(&p) => p as u32,
            _ => return Err(format!("pid must be an integer from 1 to {MAX_PID}")),
        },
    };
    let (ipv4, ipv6) = a.addresses()?;
    Ok(IsolateArgs {
        hostname,
        container_id,
        pid,
        ipv4,
        ipv6,
        netgroups: a.netgroups()?,
        labels: a.labels()?,
    })
}

fn parse_cleanup(a: &Args) -> Result<CleanupArgs, String> {
    Ok(CleanupArgs {
        hostname: a.hostname()?,
        container_id: a.container_id()?,
    })
}

fn parse_gc(a: &Args) -> Result<GcArgs, String> {
    let hostname = a.hostname()?;
    // Required, so that a sender that forgot it never frees everything.
    if a.present("containers").is_none() {
        return Err("Missing containers".into());
    }
    let ids = a.bounded_string_list("containers", MAX_GC_CONTAINERS)?;
    let mut containers = BTreeSet::new();
    for id in ids {
        check_container_id(id)?;
        containers.insert(id.to_string());
    }
    Ok(GcArgs {
        hostname,
        containers,
    })
}

/// The `args` object, with typed accessors whose errors are the protocol's.
struct Args<'a>(&'a Map<String, Value>);

impl Args<'_> {
    /// A member that is there and not null (stout omits empty fields; some
    /// senders write null instead).
    fn present(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn required_str(&self, name: &str) -> Result<&str, String> {
        match self.present(name) {
            None => Err(format!("Missing {name}")),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(format!("{name} must be a string")),
        }
    }

    /// `hostname` is required but may be empty: the 2016 module sent ""
    /// until its hook had seen a task.
    fn hostname(&self) -> Result<String, String> {
        let h = self.required_str("hostname")?;
        if !h.is_empty() {
            check_identifier("hostname", h, MAX_NAME_LEN)?;
        }
        Ok(h.to_string())
    }

    fn uid(&self) -> Result<String, String> {
        let uid = self.required_str("uid")?;
        check_identifier("uid", uid, MAX_NAME_LEN)?;
        Ok(uid.to_string())
    }

    fn container_id(&self) -> Result<String, String> {
        let id = self.required_str("container_id")?;
        check_container_id(id)?;
        Ok(id.to_string())
    }

    fn count(&self, name: &str) -> Result<u32, String> {
        match self.present(name) {
            None => Err(format!("Missing {name}")),
            Some(v) => match v.as_u64() {
                Some(n) if n <= MAX_ADDRESSES_PER_FAMILY => Ok(n as u32),
                _ => Err(format!(
                    "{name} must be an integer from 0 to {MAX_ADDRESSES_PER_FAMILY}"
                )),
            },
        }
    }

    fn string_list(&self, name: &str) -> Result<Vec<&str>, String> {
        self.bounded_string_list(name, MAX_LIST_ITEMS)
    }

    fn bounded_string_list(&self, name: &str, max: usize) -> Result<Vec<&str>, String> {
        let Some(v) = self.present(name) else {
            return Ok(Vec::new());
        };
        let err = || format!("{name} must be a list of strings");
        let items = v.as_array().ok_or_else(err)?;
        if items.len() > max {
            return Err(format!("{name} has more than {max} entries"));
        }
        items.iter().map(|i| i.as_str().ok_or_else(err)).collect()
    }

    fn netgroups(&self) -> Result<Vec<String>, String> {
        let groups = self.string_list("netgroups")?;
        let mut out: Vec<String> = Vec::with_capacity(groups.len());
        for g in groups {
            check_identifier("netgroup", g, MAX_NAME_LEN)?;
            if !out.iter().any(|seen| seen == g) {
                out.push(g.to_string());
            }
        }
        Ok(out)
    }

    /// `ipv4_addrs` / `ipv6_addrs`; at least one address in total.
    fn addresses(&self) -> Result<(Vec<Ipv4Addr>, Vec<Ipv6Addr>), String> {
        let v4 = parse_family_list(&self.string_list("ipv4_addrs")?, false)?;
        let v6 = parse_family_list(&self.string_list("ipv6_addrs")?, true)?;
        if v4.is_empty() && v6.is_empty() {
            return Err("Must provide at least one IPv4 or IPv6 address.".into());
        }
        let ipv4 = v4.into_iter().filter_map(as_v4).collect::<Vec<_>>();
        let ipv6 = v6.into_iter().filter_map(as_v6).collect::<Vec<_>>();
        check_family_count("ipv4_addrs", ipv4.len())?;
        check_family_count("ipv6_addrs", ipv6.len())?;
        Ok((ipv4, ipv6))
    }

    /// Mesos labels: a list of `{"key", "value"}` (value optional), or the
    /// `mesos.Labels` message `{"labels": [...]}` that the 2016 module sent.
    fn labels(&self) -> Result<Labels, String> {
        let Some(v) = self.present("labels") else {
            return Ok(Labels::new());
        };
        let list = match v {
            Value::Array(items) => items,
            Value::Object(o) => match o.get("labels") {
                Some(Value::Array(items)) => items,
                None | Some(Value::Null) => return Ok(Labels::new()),
                Some(_) => return Err(LABELS_SHAPE.into()),
            },
            _ => return Err(LABELS_SHAPE.into()),
        };
        if list.len() > MAX_LABELS {
            return Err(format!("labels has more than {MAX_LABELS} entries"));
        }
        let mut labels = Labels::new();
        for item in list {
            let obj = item.as_object().ok_or(LABELS_SHAPE)?;
            let key = match obj.get("key") {
                Some(Value::String(k)) => k,
                _ => return Err("every label needs a string key".into()),
            };
            check_identifier("label key", key, MAX_NAME_LEN)?;
            let value = match obj.get("value") {
                None | Some(Value::Null) => "",
                Some(Value::String(s)) => s.as_str(),
                Some(_) => {
                    return Err(format!(
                        "label '{}' must have a string value",
                        printable(key)
                    ))
                }
            };
            if value.len() > MAX_LABEL_VALUE_LEN {
                return Err(format!(
                    "label '{}' has a value longer than {MAX_LABEL_VALUE_LEN} characters",
                    printable(key)
                ));
            }
            labels.insert(key.clone(), value.to_string());
        }
        Ok(labels)
    }
}

const LABELS_SHAPE: &str = "labels must be a list of {\"key\": ..., \"value\": ...} objects";

fn check_family_count(name: &str, n: usize) -> Result<(), String> {
    if n as u64 > MAX_ADDRESSES_PER_FAMILY {
        Err(format!(
            "{name} has more than {MAX_ADDRESSES_PER_FAMILY} addresses"
        ))
    } else {
        Ok(())
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.trim()
        .parse::<IpAddr>()
        .map_err(|_| format!("IP address could not be parsed: {}", printable(text)))
}

/// Parses a list meant for one family; the wrong family is the protocol's
/// own error.
fn parse_family_list(items: &[&str], v6: bool) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let ip = parse_ip(item)?;
        match (ip, v6) {
            (IpAddr::V6(_), false) => {
                return Err("IPv6 address must not be placed in IPv4 address field.".into())
            }
            (IpAddr::V4(_), true) => {
                return Err("IPv4 address must not be placed in IPv6 address field.".into())
            }
            _ if out.contains(&ip) => {
                return Err(format!("IP '{ip}' is listed twice."));
            }
            _ => out.push(ip),
        }
    }
    Ok(out)
}

/// The legacy label: a string holding a JSON list of address strings
/// (Python's single-quoted repr is accepted too). Parsed, never evaluated.
fn parse_ipv4_addrs_label(text: &str) -> Result<Vec<Ipv4Addr>, String> {
    let normalised = text.trim().replace('\'', "\"");
    let list: Vec<String> = serde_json::from_str(&normalised).map_err(|_| {
        format!(
            "label ipv4_addrs must hold a JSON list of addresses, got: {}",
            printable(text)
        )
    })?;
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    let ips = parse_family_list(&refs, false)?;
    check_family_count("label ipv4_addrs", ips.len())?;
    Ok(ips.into_iter().filter_map(as_v4).collect())
}

fn as_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

fn as_v6(ip: IpAddr) -> Option<Ipv6Addr> {
    match ip {
        IpAddr::V6(v6) => Some(v6),
        IpAddr::V4(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(input: &str) -> String {
        parse_request(input.as_bytes()).unwrap_err()
    }

    #[test]
    fn accepts_the_2016_module_shapes() {
        let req = parse_request(
            br#"{"args":{"hostname":"","labels":{"labels":[{"key":"rack","value":"3A"},{"key":"flag"}]},"netgroups":["prod","prod"],"num_ipv4":1,"num_ipv6":0,"uid":"0cd4"},"command":"allocate"}"#,
        )
        .unwrap();
        let Request::Allocate(a) = req else { panic!() };
        assert_eq!(a.num_ipv4, 1);
        assert_eq!(a.netgroups, vec!["prod"]);
        assert_eq!(a.labels.get("rack").map(String::as_str), Some("3A"));
        assert_eq!(a.labels.get("flag").map(String::as_str), Some(""));

        let Request::Release(r) =
            parse_request(br#"{"command":"release","args":{"ips":["198.18.0.1","fd00::1"]}}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            r,
            ReleaseArgs::Ips(vec![
                "198.18.0.1".parse().unwrap(),
                "fd00::1".parse().unwrap()
            ])
        );
    }

    #[test]
    fn ipv4_addrs_label_counts_against_num_ipv4() {
        let Request::Allocate(a) = parse_request(
            br#"{"command":"allocate","args":{"hostname":"h","uid":"u","num_ipv4":2,"num_ipv6":0,
                "labels":[{"key":"ipv4_addrs","value":"['198.18.0.9']"}]}}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(a.label_ipv4, vec![Ipv4Addr::new(198, 18, 0, 9)]);
        assert_eq!(a.num_ipv4, 1);
        assert!(err(
            r#"{"command":"allocate","args":{"hostname":"h","uid":"u","num_ipv4":1,"num_ipv6":0,
                "labels":[{"key":"ipv4_addrs","value":"__import__('os')"}]}}"#
        )
        .starts_with("label ipv4_addrs must hold a JSON list"));
    }

    #[test]
    fn error_table() {
        assert!(err("{nope").starts_with("Invalid JSON"));
        assert!(err("[1]").starts_with("Invalid JSON"));
        assert_eq!(err(r#"{"args":{}}"#), "Missing command");
        assert_eq!(err(r#"{"command":"allocate"}"#), "Missing args");
        assert_eq!(
            err(r#"{"command":"frobnicate","args":{}}"#),
            "Unknown command: frobnicate"
        );
        assert_eq!(
            err(r#"{"command":"allocate","args":{"uid":"u","num_ipv4":1,"num_ipv6":0}}"#),
            "Missing hostname"
        );
        assert_eq!(
            err(r#"{"command":"allocate","args":{"hostname":"h","num_ipv4":1,"num_ipv6":0}}"#),
            "Missing uid"
        );
        assert_eq!(
            err(r#"{"command":"allocate","args":{"hostname":"h","uid":"u","num_ipv6":0}}"#),
            "Missing num_ipv4"
        );
        assert_eq!(
            err(r#"{"command":"allocate","args":{"hostname":"h","uid":"u","num_ipv4":0}}"#),
            "Missing num_ipv6"
        );
        assert_eq!(
            err(
                r#"{"command":"isolate","args":{"hostname":"h","pid":3,"ipv4_addrs":["198.18.0.1"]}}"#
            ),
            "Missing container_id"
        );
        assert_eq!(
            err(
                r#"{"command":"isolate","args":{"hostname":"h","container_id":"c","ipv4_addrs":["198.18.0.1"]}}"#
            ),
            "Missing pid"
        );
        assert_eq!(
            err(
                r#"{"command":"reserve","args":{"hostname":"h","uid":"u","ipv4_addrs":["300.1.1.1"]}}"#
            ),
            "IP address could not be parsed: 300.1.1.1"
        );
        assert_eq!(
            err(
                r#"{"command":"reserve","args":{"hostname":"h","uid":"u","ipv4_addrs":["fd00::1"]}}"#
            ),
            "IPv6 address must not be placed in IPv4 address field."
        );
        assert_eq!(
            err(
                r#"{"command":"reserve","args":{"hostname":"h","uid":"u","ipv6_addrs":["198.18.0.1"]}}"#
            ),
            "IPv4 address must not be placed in IPv6 address field."
        );
        assert_eq!(
            err(r#"{"command":"reserve","args":{"hostname":"h","uid":"u","ipv4_addrs":[]}}"#),
            "Must provide at least one IPv4 or IPv6 address."
        );
        assert_eq!(
            err(r#"{"command":"release","args":{}}"#),
            "Must supply either uid or ips."
        );
        assert_eq!(
            err(r#"{"command":"release","args":{"uid":"u","ips":[]}}"#),
            "Supply either uid or ips, not both."
        );
        assert_eq!(
            err(r#"{"command":"release","args":{"uid":7}}"#),
            "uid must be a string"
        );
    }

    #[test]
    fn hostile_input() {
        assert_eq!(
            err(
                r#"{"command":"allocate","args":{"hostname":"h","uid":"u","num_ipv4":-1,"num_ipv6":0}}"#
            ),
            "num_ipv4 must be an integer from 0 to 16"
        );
        assert_eq!(
            err(
                r#"{"command":"allocate","args":{"hostname":"h","uid":"u","num_ipv4":1e9,"num_ipv6":0}}"#
            ),
            "num_ipv4 must be an integer from 0 to 16"
        );
        assert_eq!(
            err(
                r#"{"command":"allocate","args":{"hostname":"h","uid":"a/b","num_ipv4":1,"num_ipv6":0}}"#
            ),
            "uid 'a/b' must not contain '/'"
        );
        assert_eq!(
            err(r#"{"command":"cleanup","args":{"hostname":"h","container_id":"x\u0000y"}}"#),
            "container_id 'x\\0y' must not contain control characters"
        );
        assert_eq!(
            err(
                r#"{"command":"allocate","args":{"hostname":"h","uid":"u","num_ipv4":1,"num_ipv6":0,"netgroups":"prod"}}"#
            ),
            "netgroups must be a list of strings"
        );
        assert_eq!(
            err(
                r#"{"command":"isolate","args":{"hostname":"h","container_id":"c","pid":"12","ipv4_addrs":["198.18.0.1"]}}"#
            ),
            "pid must be an integer from 1 to 4194304"
        );
        assert_eq!(
            err(r#"{"command":7,"args":{}}"#),
            "command must be a string"
        );
        let huge = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert!(parse_request(&huge)
            .unwrap_err()
            .starts_with("Request too large"));
    }

    #[test]
    fn gc_takes_a_hostname_and_the_surviving_containers() {
        let Request::Gc(g) =
            parse_request(br#"{"command":"gc","args":{"hostname":"","containers":["b","a","b"]}}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(g.hostname, "");
        assert_eq!(
            g.containers.into_iter().collect::<Vec<_>>(),
            vec!["a".to_string(), "b".to_string()]
        );
        let Request::Gc(g) =
            parse_request(br#"{"command":"gc","args":{"hostname":"h","containers":[]}}"#).unwrap()
        else {
            panic!()
        };
        assert!(g.containers.is_empty());
        assert_eq!(
            err(r#"{"command":"gc","args":{"containers":[]}}"#),
            "Missing hostname"
        );
        assert_eq!(
            err(r#"{"command":"gc","args":{"hostname":"h"}}"#),
            "Missing containers"
        );
        assert_eq!(
            err(r#"{"command":"gc","args":{"hostname":"h","containers":"a"}}"#),
            "containers must be a list of strings"
        );
        assert_eq!(
            err(r#"{"command":"gc","args":{"hostname":"h","containers":[7]}}"#),
            "containers must be a list of strings"
        );
        assert_eq!(
            err(r#"{"command":"gc","args":{"hostname":"h","containers":["a/b"]}}"#),
            "container_id 'a/b' must not contain '/'"
        );
        assert_eq!(
            err(r#"{"command":"gc","args":{"hostname":"h","containers":[""]}}"#),
            "container_id must not be empty"
        );
        let many: Vec<String> = (0..=MAX_GC_CONTAINERS).map(|i| format!("c{i}")).collect();
        let req = json!({"command": "gc", "args": {"hostname": "h", "containers": many}});
        assert_eq!(
            err(&req.to_string()),
            format!("containers has more than {MAX_GC_CONTAINERS} entries")
        );
        assert_eq!(Request::Gc(GcArgs::default()).command(), "gc");
    }

    #[test]
    fn responses_hold_only_documented_fields() {
        let r = Response::Addresses {
            ipv4: vec!["198.18.0.4".parse().unwrap()],
            ipv6: vec![],
        };
        assert_eq!(
            r.to_json().to_string(),
            r#"{"ipv4":["198.18.0.4"],"ipv6":[],"error":null}"#
        );
        assert_eq!(Response::Ok.to_json().to_string(), r#"{"error":null}"#);
    }
}
