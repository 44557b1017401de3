//! Which etcd version may follow which: etcd supports upgrading one minor
//! version at a time (3.4 -> 3.5 -> 3.6, each with the whole cluster on the
//! older minor first) and no downgrade of a minor version (the v3.5 and
//! v3.6 upgrade guides). Patch releases within a minor go either way.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// `3.5.17` (a leading `v` is allowed).
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.trim().trim_start_matches('v').split('.').map(|p| p.parse::<u32>().ok());
        let v = Version { major: parts.next()??, minor: parts.next()??, patch: parts.next()??};
        parts.next().is_none().then_some(v)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why a version change is refused; `Ok` when allowed.
pub fn check_change(running: &str, wanted: &str) -> Result<(), String> {
    let parse = |s: &str, what: &str| Version::parse(s).ok_or_else(|| format!("{what} etcd version {s:?} is not MAJOR.MINOR.PATCH"));
    let (from, to) = (parse(running, "the cluster's")?, parse(wanted, "the wanted")?);
    if from.major != to.major {
        return Err(format!("etcd {from} -> {to} changes the major version; etcd upgrades one minor version at a time"));
    }
    match to.minor.cmp(&from.minor) {
        Ordering::Less => Err(format!(
            "etcd {from} -> {to} is a downgrade; etcd cannot go back a minor version (restore a backup taken on {to} instead)"
        )),
        Ordering::Greater if to.minor - from.minor > 1 => Err(format!(
            "etcd {from} -> {to} skips a minor version; upgrade to {}.{}.x first and let every member run it",
            from.major,
            from.minor + 1
        )),
        // Patch releases within a minor go either way.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_minor_up_at_a_time_never_down() {
        let table = [
            ("3.5.17", "3.5.17", true),
            ("3.5.17", "3.5.21", true),
            ("3.5.17", "3.5.9", true),
            ("3.4.23", "3.5.17", true),
            ("3.5.17", "3.6.0", true),
            ("3.4.23", "3.6.0", false),
            ("3.5.17", "3.4.23", false),
            ("3.6.1", "3.4.23", false),
            ("3.5.17", "4.0.0", false),
            ("3.5.17", "2.3.8", false),
            ("v3.5.17", "3.6.2", true),
            ("3.5", "3.5.1", false),
            ("3.5.17", "latest", false),
        ];
        for (from, to, ok) in table {
            assert_eq!(check_change(from, to).is_ok(), ok, "{from} -> {to}: {:?}", check_change(from, to));
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        assert!(check_change("3.4.23", "3.6.0").unwrap_err().contains("upgrade to 3.5.x first"));
        assert!(check_change("3.5.17", "3.4.23").unwrap_err().contains("downgrade"));
    }
}
