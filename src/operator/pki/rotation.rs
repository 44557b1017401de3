//! The Secrets encryption key's staged rotation, as the upstream guide
//! ("Rotating a decryption key", Kubernetes' encrypt-data task) orders it,
//! so that no API server ever meets a Secret it cannot read:
//!
//! 1. the new key is added **second** (every API server that restarts reads
//!    it; none writes with it yet), then every API server restarts;
//! 2. the new key is made **first** (it writes; the old one is still read),
//!    then every API server restarts again;
//! 3. every Secret is rewritten (now under the new key), then the old key is
//!    dropped.
//!
//! One `pki --rotate encryption-key` makes one step. Which step the tree is
//! at is read from the file itself (`step`): key names are `key-<unix time
//! they were made>`, so the newer key is known whichever place it holds.
//! Both functions are pure; `advance` takes the new key from its caller.

use std::fmt;

/// Where a rotation stands, from the key names of an `EncryptionConfiguration`
/// (the writing key first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// One key reads and writes: no rotation under way.
    Steady { writing: String },
    /// Step 1 of 3 made: `new` is listed second (read, never written).
    Added { writing: String, new: String },
    /// Step 2 of 3 made: `writing` is the new key, `old` is still read.
    Promoted { writing: String, old: String },
}

/// What `advance` refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The names do not tell which key is newer (not nodeboot's `key-<time>`,
    /// the same time twice, or more than two keys).
    Unknown(String),
    /// Step 3 drops the old key: only once every Secret was rewritten.
    NotRewritten { old: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unknown(detail) => write!(f, "cannot tell which step the key rotation is at: {detail}"),
            Refusal::NotRewritten { old } => write!(
                f,
                "dropping {old} would leave every Secret still written with it unreadable: once every \
                 kube-apiserver restarted with the current file, rewrite every Secret ({REWRITE}), \
                 then run `nodeboot pki --rotate encryption-key --secrets-rewritten`"
            ),
        }
    }
}

/// Rewrites every Secret through the API (each is stored again with the
/// writing key), as the upstream guide does it.
pub const REWRITE: &str = "kubectl get secrets --all-namespaces -o json | kubectl replace -f -";

/// The time a key was made, from its name (`key-<unix seconds>`).
pub fn made_at(name: &str) -> Option<i64> {
    name.strip_prefix("key-")?.parse().ok()
}

/// The step the key names (writing key first) show.
pub fn step(names: &[String]) -> Result<Step, Refusal> {
    match names {
        [writing] => Ok(Step::Steady {
            writing: writing.clone(),
        }),
        [first, second] => {
            let time = |n: &String| made_at(n).ok_or_else(|| Refusal::Unknown(format!("{n} is not key-<unix time>")));
            let (a, b) = (time(first)?, time(second)?);
            if a == b {
                return Err(Refusal::Unknown(format!(
                    "{first} and {second} were made at the same time"
                )));
            }
            Ok(if a < b {
                Step::Added {
                    writing: first.clone(),
                    new: second.clone(),
                }
            } else {
                Step::Promoted {
                    writing: first.clone(),
                    old: second.clone(),
                }
            })
        }
        _ => Err(Refusal::Unknown(format!(
            "{} aescbc keys ({}); nodeboot keeps one, or two while rotating",
            names.len(),
            names.join(", ")
        ))),
    }
}

/// The name of a key made at `now`: after every existing key, so the order
/// of the names stays the order they were made in.
pub fn new_key_name(names: &[String], now: i64) -> String {
    let latest = names.iter().filter_map(|n| made_at(n)).max();
    format!("key-{}", latest.map_or(now, |l| now.max(l + 1)))
}

/// The key order after the next step (names only; the caller keeps the
/// key bytes with their names). `new` names the key step 1 adds.
pub fn advance(names: &[String], new: &str, secrets_rewritten: bool) -> Result<Vec<String>, Refusal> {
    Ok(match step(names)? {
        Step::Steady { writing } => vec![writing, new.to_string()],
        Step::Added { writing, new } => vec![new, writing],
        Step::Promoted { writing, old } => {
            if !secrets_rewritten {
                return Err(Refusal::NotRewritten { old });
            }
            vec![writing]
        }
    })
}

impl Step {
    /// What the step means and what the operator does next (the runbook's
    /// lines, printed by `pki`).
    pub fn describe(&self) -> String {
        const UPLOAD: &str = "`nodeboot secrets upload` (or `up`), then wait until every control-plane node's \
             `nodeboot sync secrets` restarted kube-apiserver with it (each one passes /readyz before the next \
             restarts; `kubectl -n kube-system get pods -l component=kube-apiserver -o wide` shows every one \
             Ready and started after the upload)";
        match self {
            Step::Steady { writing } => format!(
                "encryption key: {writing} writes and reads every Secret; no rotation under way \
                 (`nodeboot pki --rotate encryption-key` starts one: 3 steps)"
            ),
            Step::Added { writing, new } => format!(
                "encryption key rotation: step 1 of 3 made: {new} is added second (read, not written), {writing} \
                 still writes. Next: {UPLOAD}; then `nodeboot pki --rotate encryption-key` makes {new} first"
            ),
            Step::Promoted { writing, old } => format!(
                "encryption key rotation: step 2 of 3 made: {writing} writes, {old} is still read. Next: {UPLOAD}; \
                 then rewrite every Secret ({REWRITE}) and run `nodeboot pki --rotate encryption-key \
                 --secrets-rewritten`, which drops {old}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_step_is_read_from_which_key_is_newer() {
        for (keys, expected) in [
            (
                &["key-100"][..],
                Ok(Step::Steady {
                    writing: "key-100".into(),
                }),
            ),
            (
                &["key-100", "key-200"][..],
                Ok(Step::Added {
                    writing: "key-100".into(),
                    new: "key-200".into(),
                }),
            ),
            (
                &["key-200", "key-100"][..],
                Ok(Step::Promoted {
                    writing: "key-200".into(),
                    old: "key-100".into(),
                }),
            ),
        ] {
            assert_eq!(step(&names(keys)), expected, "{keys:?}");
        }
        for keys in [
            &[][..],
            &["key-1", "key-2", "key-3"][..],
            &["key-1", "key-1"][..],
            &["mine", "key-1"][..],
        ] {
            assert!(matches!(step(&names(keys)), Err(Refusal::Unknown(_))), "{keys:?}");
        }
    }

    #[test]
    fn three_steps_add_second_then_promote_then_drop_only_once_rewritten() {
        let start = names(&["key-100"]);
        let new = new_key_name(&start, 200);
        let one = advance(&start, &new, false).unwrap();
        assert_eq!(one, ["key-100", "key-200"]);
        let two = advance(&one, "unused", false).unwrap();
        assert_eq!(two, ["key-200", "key-100"]);
        assert_eq!(
            advance(&two, "unused", false),
            Err(Refusal::NotRewritten { old: "key-100".into() })
        );
        let three = advance(&two, "unused", true).unwrap();
        assert_eq!(three, ["key-200"]);
        assert!(matches!(step(&three), Ok(Step::Steady { .. })));
    }

    #[test]
    fn a_new_key_is_named_after_every_existing_one_even_with_a_clock_behind() {
        assert_eq!(new_key_name(&names(&["key-500"]), 200), "key-501");
        assert_eq!(new_key_name(&names(&["key-100"]), 200), "key-200");
        assert_eq!(new_key_name(&names(&["hand-made"]), 200), "key-200");
    }

    #[test]
    fn each_step_says_what_comes_next() {
        let added = step(&names(&["key-1", "key-2"])).unwrap().describe();
        assert!(
            added.contains("step 1 of 3") && added.contains("makes key-2 first"),
            "{added}"
        );
        let promoted = step(&names(&["key-2", "key-1"])).unwrap().describe();
        assert!(
            promoted.contains("step 2 of 3") && promoted.contains(REWRITE) && promoted.contains("drops key-1"),
            "{promoted}"
        );
    }
}
