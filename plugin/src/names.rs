//! Rules for the identifiers that end up in etcd keys and Calico names.
//! Anything that could not be stored safely is refused before any work.

/// A DNS-1123 subdomain, the rule for every v3 resource name.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Node names are etcd key segments and segment 0 of endpoint names.
pub fn check_node_name(name: &str) -> Result<(), String> {
    if is_dns1123_subdomain(name) {
        Ok(())
    } else {
        Err(format!(
            "node name '{}' is not a valid Calico node name (lower-case letters, digits, '-' and '.'); \
             set NODENAME or [node] name",
            printable(name)
        ))
    }
}

/// A free-form identifier that becomes part of an etcd key or a Calico name:
/// no `/`, no control characters, not empty, bounded length.
pub fn check_identifier(field: &str, value: &str, max_len: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if value.len() > max_len {
        return Err(format!("{field} is longer than {max_len} characters"));
    }
    if value.contains('/') {
        return Err(format!(
            "{field} '{}' must not contain '/'",
            printable(value)
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "{field} '{}' must not contain control characters",
            printable(value)
        ));
    }
    Ok(())
}

/// Mesos container ids become the workload segment of the endpoint name and
/// `spec.workload`, which must be a DNS subdomain; Mesos uses UUIDs.
pub fn check_container_id(value: &str) -> Result<(), String> {
    check_identifier("container_id", value, 128)?;
    if is_dns1123_subdomain(value) {
        Ok(())
    } else {
        Err(format!(
            "container_id '{}' is not usable as a Calico workload name: use lower-case letters, \
             digits, '-' and '.', starting and ending with a letter or digit",
            printable(value)
        ))
    }
}

/// Renders untrusted text for an error message: control characters escaped,
/// long values cut.
pub fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_subdomains() {
        assert!(is_dns1123_subdomain("agent-1"));
        assert!(is_dns1123_subdomain("ba11f1de-fc4d-46fd-9f15-424f4ef05a3a"));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        for bad in ["", "-a", "a-", "A", "a..b", "a_b", "a/b", &"a".repeat(254)] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn identifiers() {
        assert!(check_identifier("uid", "0cd47986-24ad", 10).is_err());
        assert!(check_identifier("uid", "ok.ID_1", 64).is_ok());
        assert_eq!(
            check_identifier("uid", "a/b", 64).unwrap_err(),
            "uid 'a/b' must not contain '/'"
        );
        assert_eq!(
            check_identifier("uid", "a\nb", 64).unwrap_err(),
            "uid 'a\\nb' must not contain control characters"
        );
        assert_eq!(
            check_identifier("uid", "", 64).unwrap_err(),
            "uid must not be empty"
        );
        assert!(check_container_id("Upper").is_err());
        assert!(check_container_id("ba11f1de-fc4d-46fd-9f15-424f4ef05a3a").is_ok());
    }
}
