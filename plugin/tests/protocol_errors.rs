//! Every row of the protocol's error table, and hostile input, through the
//! real binary: the exact error text, exit status 1, and an etcd revision
//! that did not move.

mod common;

use common::{Etcd, Plugin};
use serde_json::{json, Value};

fn assert_refused(etcd: &Etcd, plugin: &Plugin, input: &[u8], expected: &str) {
    let rev = etcd.revision();
    let r = plugin.raw(input);
    assert_eq!(
        r.status,
        1,
        "exit status for {:?}",
        String::from_utf8_lossy(&input[..input.len().min(200)])
    );
    let msg = r
        .error()
        .unwrap_or_else(|| panic!("no error for {input:?}: {r:?}"));
    assert!(
        msg.starts_with(expected),
        "expected {expected:?}, got {msg:?}"
    );
    let keys: Vec<&String> = r.json.as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["error"], "an error answer holds only `error`");
    assert_eq!(etcd.revision(), rev, "a refused request changed etcd");
}

fn setup() -> (Etcd, Plugin) {
    let etcd = Etcd::start();
    etcd.seed_calico(&["agent-1"]);
    let plugin = Plugin::new(&etcd, "agent-1");
    plugin.add_pool("198.18.0.0/24", 26);
    plugin.allocate("existing", 1, 0).ok();
    (etcd, plugin)
}

fn req(command: &str, args: Value) -> Vec<u8> {
    json!({"command": command, "args": args})
        .to_string()
        .into_bytes()
}

#[test]
fn error_table_rows() {
    let (etcd, p) = setup();
    let alloc = |args: Value| req("allocate", args);
    let rows: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "Invalid JSON"),
        (b"".to_vec(), "Invalid JSON"),
        (br#"{"args":{}}"#.to_vec(), "Missing command"),
        (br#"{"command":"allocate"}"#.to_vec(), "Missing args"),
        (req("explode", json!({})), "Unknown command: explode"),
        (
            alloc(json!({"uid": "u", "num_ipv4": 1, "num_ipv6": 0})),
            "Missing hostname",
        ),
        (
            req("cleanup", json!({"hostname": "h"})),
            "Missing container_id",
        ),
        // A gc that names nobody must never be read as "nobody survived".
        (req("gc", json!({"hostname": "h"})), "Missing containers"),
        (req("gc", json!({"containers": []})), "Missing hostname"),
        (
            req("gc", json!({"hostname": "h", "containers": "existing"})),
            "containers must be a list of strings",
        ),
        (
            req("gc", json!({"hostname": "h", "containers": ["../x"]})),
            "container_id '../x' must not contain '/'",
        ),
        (
            req(
                "isolate",
                json!({"hostname": "h", "container_id": "c", "ipv4_addrs": ["198.18.0.9"]}),
            ),
            "Missing pid",
        ),
        (
            alloc(json!({"hostname": "h", "num_ipv4": 1, "num_ipv6": 0})),
            "Missing uid",
        ),
        (
            alloc(json!({"hostname": "h", "uid": "u", "num_ipv6": 0})),
            "Missing num_ipv4",
        ),
        (
            alloc(json!({"hostname": "h", "uid": "u", "num_ipv4": 0})),
            "Missing num_ipv6",
        ),
        (
            req(
                "reserve",
                json!({"hostname": "h", "uid": "u", "ipv4_addrs": ["198.18.0.999"]}),
            ),
            "IP address could not be parsed: 198.18.0.999",
        ),
        (
            req("release", json!({"ips": ["banana"]})),
            "IP address could not be parsed: banana",
        ),
        (
            req(
                "reserve",
                json!({"hostname": "h", "uid": "u", "ipv4_addrs": ["fd00::1"]}),
            ),
            "IPv6 address must not be placed in IPv4 address field.",
        ),
        (
            req(
                "reserve",
                json!({"hostname": "h", "uid": "u", "ipv6_addrs": ["198.18.0.9"]}),
            ),
            "IPv4 address must not be placed in IPv6 address field.",
        ),
        (
            req("reserve", json!({"hostname": "h", "uid": "u"})),
            "Must provide at least one IPv4 or IPv6 address.",
        ),
        (
            req(
                "isolate",
                json!({"hostname": "h", "container_id": "c", "pid": 1}),
            ),
            "Must provide at least one IPv4 or IPv6 address.",
        ),
        (req("release", json!({})), "Must supply either uid or ips."),
        (
            req("release", json!({"uid": "u", "ips": ["198.18.0.9"]})),
            "Supply either uid or ips, not both.",
        ),
        (req("release", json!({"uid": 12})), "uid must be a string"),
    ];
    for (input, expected) in rows {
        assert_refused(&etcd, &p, &input, expected);
    }
}

#[test]
fn hostile_input_changes_nothing() {
    let (etcd, p) = setup();
    let alloc = |args: Value| req("allocate", args);
    let long = "x".repeat(300);
    let rows: Vec<(Vec<u8>, &str)> = vec![
        (
            alloc(json!({"hostname": "h", "uid": "u", "num_ipv4": "1", "num_ipv6": 0})),
            "num_ipv4 must be an integer",
        ),
        (
            alloc(json!({"hostname": "h", "uid": "u", "num_ipv4": -1, "num_ipv6": 0})),
            "num_ipv4 must be an integer",
        ),
        (
            alloc(json!({"hostname": "h", "uid": "u", "num_ipv4": 1.5, "num_ipv6": 0})),
            "num_ipv4 must be an integer",
        ),
        (
            alloc(json!({"hostname": "h", "uid": "u", "num_ipv4": 1000000, "num_ipv6": 0})),
            "num_ipv4 must be an integer from 0 to 16",
        ),
        (
            alloc(json!({"hostname": 7, "uid": "u", "num_ipv4": 1, "num_ipv6": 0})),
            "hostname must be a string",
        ),
        (
            alloc(json!({"hostname": "h", "uid": ["u"], "num_ipv4": 1, "num_ipv6": 0})),
            "uid must be a string",
        ),
        (
            alloc(json!({"hostname": "h", "uid": "../../handle/x", "num_ipv4": 1, "num_ipv6": 0})),
            "uid '../../handle/x' must not contain '/'",
        ),
        (
            alloc(json!({"hostname": "h", "uid": "a\u{7}b", "num_ipv4": 1, "num_ipv6": 0})),
            "uid 'a\\u{7}b' must not contain control characters",
        ),
        (
            alloc(json!({"hostname": "h", "uid": "", "num_ipv4": 1, "num_ipv6": 0})),
            "uid must not be empty",
        ),
        (
            alloc(json!({"hostname": "h", "uid": long, "num_ipv4": 1, "num_ipv6": 0})),
            "uid is longer than 253 characters",
        ),
        (
            alloc(json!({"hostname": "a/b", "uid": "u", "num_ipv4": 1, "num_ipv6": 0})),
            "hostname 'a/b' must not contain '/'",
        ),
        (
            alloc(
                json!({"hostname": "h", "uid": "u", "num_ipv4": 1, "num_ipv6": 0, "netgroups": ["ok", "bad/group"]}),
            ),
            "netgroup 'bad/group' must not contain '/'",
        ),
        (
            alloc(
                json!({"hostname": "h", "uid": "u", "num_ipv4": 1, "num_ipv6": 0, "netgroups": [""]}),
            ),
            "netgroup must not be empty",
        ),
        (
            alloc(
                json!({"hostname": "h", "uid": "u", "num_ipv4": 1, "num_ipv6": 0, "netgroups": [1]}),
            ),
            "netgroups must be a list of strings",
        ),
        (
            alloc(
                json!({"hostname": "h", "uid": "u", "num_ipv4": 1, "num_ipv6": 0, "labels": "rack=1"}),
            ),
            "labels must be a list",
        ),
        (
            alloc(
                json!({"hostname": "h", "uid": "u", "num_ipv4": 1, "num_ipv6": 0, "labels": [{"key": "a/b", "value": "x"}]}),
            ),
            "label key 'a/b' must not contain '/'",
        ),
        (
            alloc(
                json!({"hostname": "h", "uid": "u", "num_ipv4": 1, "num_ipv6": 0, "labels": [{"value": "x"}]}),
            ),
            "every label needs a string key",
        ),
        (
            alloc(
                json!({"hostname": "h", "uid": "u", "num_ipv4": 1, "num_ipv6": 0, "labels": [{"key": "ipv4_addrs", "value": "__import__('os').system('true')"}]}),
            ),
            "label ipv4_addrs must hold a JSON list",
        ),
        (
            req(
                "isolate",
                json!({"hostname": "h", "container_id": "Bad_Id", "pid": 1, "ipv4_addrs": ["198.18.0.9"]}),
            ),
            "container_id 'Bad_Id' is not usable",
        ),
        (
            req(
                "isolate",
                json!({"hostname": "h", "container_id": "c", "pid": 0, "ipv4_addrs": ["198.18.0.9"]}),
            ),
            "pid must be an integer from 1",
        ),
        (
            req(
                "isolate",
                json!({"hostname": "h", "container_id": "c", "pid": -5, "ipv4_addrs": ["198.18.0.9"]}),
            ),
            "pid must be an integer from 1",
        ),
        (
            req(
                "reserve",
                json!({"hostname": "h", "uid": "u", "ipv4_addrs": "198.18.0.9"}),
            ),
            "ipv4_addrs must be a list of strings",
        ),
        (
            req(
                "reserve",
                json!({"hostname": "h", "uid": "u", "ipv4_addrs": ["198.18.0.9", "198.18.0.9"]}),
            ),
            "IP '198.18.0.9' is listed twice.",
        ),
        (
            br#"{"command":"allocate","args":[1,2]}"#.to_vec(),
            "args must be a JSON object",
        ),
        (b"[\"allocate\"]".to_vec(), "Invalid JSON"),
        (b"\xff\xfe\x00garbage".to_vec(), "Invalid JSON"),
    ];
    for (input, expected) in rows {
        assert_refused(&etcd, &p, &input, expected);
    }
    // Huge stdin: refused without parsing it.
    let mut huge = br#"{"command":"allocate","args":{"hostname":"h","uid":"u","num_ipv4":1,"num_ipv6":0,"pad":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
    huge.extend(b"\"}}");
    assert_refused(&etcd, &p, &huge, "Request too large");
}

#[test]
fn unreachable_etcd_names_the_endpoints() {
    // A port nobody listens on: bind then drop it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let p = Plugin::with_endpoints(&endpoint, "agent-1");
    let r = p.allocate("u", 1, 0);
    assert_eq!(r.status, 1);
    let msg = r.error().unwrap();
    assert!(msg.starts_with("etcd is unreachable"), "{msg}");
    assert!(
        msg.contains(&endpoint) && msg.contains("Check the etcd settings"),
        "{msg}"
    );
}

#[test]
fn bad_config_is_a_json_error_naming_the_file_and_line() {
    let (etcd, p) = setup();
    std::fs::write(p.config_file(), "[etcd]\ntimeout_ms = \"soon\"\n").unwrap();
    let expected = format!("config file {}, line 2", p.config_file().display());
    assert_refused(
        &etcd,
        &p,
        &req("release", json!({"uid": "existing"})),
        &expected,
    );
}

#[test]
fn every_log_line_carries_version_and_command_and_a_bad_log_file_is_harmless() {
    let (etcd, mut p) = setup();
    p.allocate("logged", 1, 0).ok();
    let log = std::fs::read_to_string(p.log_file()).expect("log file written");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("logged") || l.contains("request done"))
        .collect();
    assert!(!lines.is_empty(), "{log}");
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    for line in log.lines().filter(|l| l.contains("command=")) {
        assert!(line.contains(&version), "{line}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("command=\"allocate\"") && l.contains(&version)),
        "{log}"
    );

    // A log file that cannot be opened does not fail the request.
    p.extra_env.push((
        "CALICO_MESOS_LOG_FILE".into(),
        "/proc/version/nope.log".into(),
    ));
    let r = p.allocate("still-works", 1, 0);
    r.ok();
    assert!(r.stderr.contains("cannot open log file"), "{}", r.stderr);
    drop(etcd);
}
