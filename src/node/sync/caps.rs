//! Dropping the capabilities the long-running sync does not need. It runs
//! as root to write root-owned directories, which needs no capability at
//! all; giving files to another owner needs three. Called before any thread
//! starts (capabilities are per thread), and the bounding set is cut too,
//! so a reload command cannot get the rest back either.

use caps::{CapSet, Capability, CapsHashSet};

/// What a sync needs: nothing, or what chowning files into a directory
/// that belongs to someone else takes.
pub fn needed(gives_files_away: bool) -> CapsHashSet {
    if gives_files_away {
        [
            Capability::CAP_CHOWN,
            Capability::CAP_DAC_OVERRIDE,
            Capability::CAP_FOWNER,
        ]
        .into_iter()
        .collect()
    } else {
        CapsHashSet::new()
    }
}

/// Keeps only `keep` (of what the process has) in every set; returns the
/// names kept, sorted. Without CAP_SETPCAP (not root) the bounding set
/// stays as it is, which loses nothing: such a process has nothing to drop.
pub fn keep_only(keep: &CapsHashSet) -> Result<Vec<String>, caps::errors::CapsError> {
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)? {
        for cap in caps::read(None, CapSet::Bounding)?.difference(keep) {
            caps::drop(None, CapSet::Bounding, *cap)?;
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    let kept: CapsHashSet = caps::read(None, CapSet::Permitted)?
        .intersection(keep)
        .copied()
        .collect();
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)?;
    let mut names: Vec<String> = kept.iter().map(|c| c.to_string()).collect();
    names.sort();
    Ok(names)
}
