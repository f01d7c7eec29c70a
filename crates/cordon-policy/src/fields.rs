//! The names of a config file's fields, in one place for the parser (the
//! unknown-field error and its suggestion) and the error's message, which
//! lists them. A leaf: it depends on nothing else in the crate.

/// The keys a config file may contain (besides `$schema`), in documentation order.
pub const KNOWN_FIELDS: &[&str] = &[
    "allow_write",
    "allow_read",
    "deny_read",
    "read_only",
    "unprotect",
    "hide_home",
    "home_visible",
    "env",
    "net",
    "allow_domain",
    "deny_domain",
    "allow_preset",
    "allow_local",
    "secret",
    "resolve",
    "upstream_ca",
    "timeout",
    "memory",
    "pids",
    "cpus",
    "nested_userns",
    "unix_sockets",
    "mount",
    "caches",
    "pi",
];

/// The known field nearest to `field` by edit distance, if it is close (a typo).
pub(crate) fn closest_field(field: &str) -> Option<&'static str> {
    if field.len() > 64 {
        return None;
    }
    let lower = field.to_ascii_lowercase().replace('-', "_");
    KNOWN_FIELDS
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest() {
        assert_eq!(closest_field("timout"), Some("timeout"));
        assert_eq!(closest_field("deny-read"), Some("deny_read"));
        assert_eq!(closest_field("network"), None);
        assert_eq!(closest_field(&"x".repeat(1000)), None);
    }
}
