//! DNS labels from cluster names, as Mesos-DNS makes them (`records/labels`).
//!
//! A name becomes one label: ASCII letters are lowercased, letters and digits kept, `-`, `.`
//! and `_` become `-`, anything else is dropped; leading dashes (and, in RFC 952 mode, leading
//! digits) are trimmed, the label is cut at 63 characters (24 in RFC 952 mode) and trailing
//! dashes are trimmed. So Marathon's task `web.shop` (the app `/shop/web`) is `web-shop`.
//! A framework name is a domain fragment: each dot-separated part becomes a label, empty
//! labels are dropped.

/// The longest label RFC 1123 allows.
pub const RFC1123_MAX: usize = 63;
/// The longest label Mesos-DNS makes in RFC 952 mode (`EnforceRFC952`).
pub const RFC952_MAX: usize = 24;

/// One DNS label from `name` (possibly empty, when nothing of `name` is valid).
pub fn label(name: &str, rfc952: bool) -> String {
    let (max, left_trim): (usize, &[char]) = if rfc952 {
        (RFC952_MAX, &['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
    } else {
        (RFC1123_MAX, &['-'])
    };
    let mapped: String = name.chars().filter_map(map_char).collect();
    let trimmed = mapped.trim_start_matches(left_trim);
    // Every kept character is ASCII, so byte and char counts agree.
    let cut = &trimmed[..trimmed.len().min(max)];
    cut.trim_end_matches('-').to_owned()
}

fn map_char(c: char) -> Option<char> {
    match c {
        'A'..='Z' => Some(c.to_ascii_lowercase()),
        'a'..='z' | '0'..='9' => Some(c),
        '-' | '.' | '_' => Some('-'),
        _ => None,
    }
}

/// A dotted domain fragment from `name`: each part a label, empty parts dropped.
pub fn domain_frag(name: &str, rfc952: bool) -> String {
    let parts: Vec<String> = name.split('.').map(|part| label(part, rfc952)).filter(|l| !l.is_empty()).collect();
    parts.join(".")
}

/// The agent part of a canonical task name: the last `-`-separated field of the agent id,
/// as Mesos-DNS takes `S4` from `20150101-...-S4`.
/// RFC 1123 rules always: RFC 952 trimming would strip a numeric tail to nothing, and the
/// tail never starts a label.
pub fn agent_id_tail(agent_id: &str) -> String {
    let tail = agent_id.rsplit('-').next().unwrap_or(agent_id);
    label(tail, false)
}

/// A five-character, lowercase base-32 digest of a task id: stable for the task, different
/// between instances of one app. Mesos-DNS uses a digest of the task id the same way so that
/// SRV targets name one instance (`nginx-qmxxu-s4.marathon.mesos`).
pub fn task_id_hash(task_id: &str) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut hash = fnv1a64(task_id.as_bytes());
    let mut out = String::with_capacity(5);
    for _ in 0..5 {
        out.push(char::from(ALPHABET[(hash & 31) as usize]));
        hash >>= 5;
    }
    out
}

/// FNV-1a, 64 bits: small, stable across releases and platforms (std's hasher is neither).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1123_labels() {
        assert_eq!(label("web.shop", false), "web-shop");
        assert_eq!(label("My_App", false), "my-app");
        assert_eq!(label("--a b!c--", false), "abc");
        assert_eq!(label("1st", false), "1st");
        assert_eq!(label("ünï", false), "n");
        assert_eq!(label("!!!", false), "");
        let long = "a".repeat(70);
        assert_eq!(label(&long, false).len(), 63);
        let dashy = format!("{}-{}", "a".repeat(62), "b");
        assert_eq!(label(&dashy, false), "a".repeat(62), "cut at 63 then trailing dash trimmed");
    }

    #[test]
    fn rfc952_labels() {
        assert_eq!(label("apiserver.myservice", true), "apiserver-myservice");
        assert_eq!(label("1st-app", true), "st-app");
        assert_eq!(label(&"b".repeat(30), true).len(), 24);
    }

    #[test]
    fn fragments_and_tails() {
        assert_eq!(domain_frag("Marathon", false), "marathon");
        assert_eq!(domain_frag("a..B_c.", false), "a.b-c");
        assert_eq!(agent_id_tail("20150101-0000-S4"), "s4");
        assert_eq!(agent_id_tail("agent1"), "agent1");
    }

    #[test]
    fn task_hash_is_stable_and_short() {
        let h = task_id_hash("web.1234");
        assert_eq!(h.len(), 5);
        assert_eq!(h, task_id_hash("web.1234"));
        assert_ne!(h, task_id_hash("web.1235"));
        assert!(h.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }
}
