//! etcd versions and the upgrade rule: etcd supports moving one minor
//! version at a time (3.4 → 3.5 → 3.6), so data last run by 3.4 must not be
//! opened by 3.6, nor 3.6 data by 3.4.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = String;

    /// `3.5.16`, `v3.5.16`, `3.5` (patch 0); a suffix such as `-rc.1` is ignored.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().trim_start_matches('v');
        let core = t.split(['-', '+', ' ']).next().unwrap_or("");
        let parts: Vec<&str> = core.split('.').collect();
        let num = |i: usize| -> Result<u32, String> {
            parts.get(i).map_or(Ok(0), |p| {
                p.parse()
                    .map_err(|_| format!("{s:?} is not an etcd version such as 3.5.16"))
            })
        };
        if !(2..=3).contains(&parts.len()) {
            return Err(format!("{s:?} is not an etcd version such as 3.5.16"));
        }
        Ok(Version {
            major: num(0)?,
            minor: num(1)?,
            patch: num(2)?,
        })
    }
}

impl Version {
    /// The version `etcd --version` prints on its first line (`etcd Version: 3.5.16`).
    pub fn from_etcd_output(output: &str) -> Option<Version> {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix("etcd Version:"))
            .and_then(|v| v.parse().ok())
    }

    /// How many minor versions apart two versions are; `None` across majors.
    pub fn minor_distance(self, other: Version) -> Option<u32> {
        (self.major == other.major).then(|| self.minor.abs_diff(other.minor))
    }

    /// Whether `binary` may open data that `data` (the version that last ran
    /// on it) wrote: same major, at most one minor apart either way.
    pub fn may_open(binary: Version, data: Version) -> bool {
        binary.minor_distance(data).is_some_and(|d| d <= 1)
    }
}

/// Why changing the cluster's etcd from `running` to `wanted` (the
/// environment's `etcd_version`) is refused; `Ok` when allowed. Stricter
/// than [`Version::may_open`]: an operator's change goes one minor version
/// up at a time (3.4 -> 3.5 -> 3.6, the whole cluster on the older minor
/// first) and never down a minor version (the v3.5 and v3.6 upgrade
/// guides); patch releases within a minor go either way.
pub fn check_change(running: &str, wanted: &str) -> Result<(), String> {
    let parse = |s: &str, what: &str| s.parse::<Version>().map_err(|e| format!("{what} etcd version: {e}"));
    let (from, to) = (parse(running, "the cluster's")?, parse(wanted, "the wanted")?);
    if from.major != to.major {
        return Err(format!(
            "etcd {from} -> {to} changes the major version; etcd upgrades one minor version at a time"
        ));
    }
    match to.minor.cmp(&from.minor) {
        std::cmp::Ordering::Less => Err(format!(
            "etcd {from} -> {to} is a downgrade; etcd cannot go back a minor version (restore a backup taken on {to} instead)"
        )),
        std::cmp::Ordering::Greater if to.minor - from.minor > 1 => Err(format!(
            "etcd {from} -> {to} skips a minor version; upgrade to {}.{}.x first and let every member run it",
            from.major,
            from.minor + 1
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_goes_one_minor_up_at_a_time_never_down() {
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
            ("3.5.17", "latest", false),
        ];
        for (from, to, ok) in table {
            assert_eq!(
                check_change(from, to).is_ok(),
                ok,
                "{from} -> {to}: {:?}",
                check_change(from, to)
            );
        }
        assert!(check_change("3.4.23", "3.6.0")
            .unwrap_err()
            .contains("upgrade to 3.5.x first"));
        assert!(check_change("3.5.17", "3.4.23").unwrap_err().contains("downgrade"));
    }

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn versions_parse_in_every_form_etcd_and_the_environment_use() {
        assert_eq!(
            v("3.5.16"),
            Version {
                major: 3,
                minor: 5,
                patch: 16
            }
        );
        assert_eq!(v("v3.5.17"), v("3.5.17"));
        assert_eq!(v("3.6"), v("3.6.0"));
        assert_eq!(v("3.6.0-rc.1"), v("3.6.0"));
        assert!("3".parse::<Version>().is_err());
        assert!("three.five".parse::<Version>().is_err());
        let out = "etcd Version: 3.5.16\nGit SHA: Not provided\nGo Version: go1.24.0\n";
        assert_eq!(Version::from_etcd_output(out), Some(v("3.5.16")));
        assert_eq!(Version::from_etcd_output("garbage"), None);
    }

    #[test]
    fn a_binary_opens_data_at_most_one_minor_away() {
        let table = [
            ("3.5.16", "3.5.0", true),
            ("3.6.0", "3.5.16", true),
            ("3.5.16", "3.6.0", true),
            ("3.6.0", "3.4.23", false),
            ("3.4.23", "3.6.1", false),
            ("4.0.0", "3.9.0", false),
        ];
        for (binary, data, ok) in table {
            assert_eq!(
                Version::may_open(v(binary), v(data)),
                ok,
                "binary {binary} on data of {data}"
            );
        }
    }
}
