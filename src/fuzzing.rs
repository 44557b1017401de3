//! The bodies of the fuzz targets (fuzz/fuzz_targets/*.rs call them), here
//! so that the normal test suite replays the committed corpus and every
//! crash found through the same code (tests/fuzz_corpus.rs). Each takes
//! arbitrary bytes, feeds them to a parser of outside input, and panics
//! only on a broken invariant, never on bad input.

use std::collections::BTreeMap;
use std::path::Path;

use crate::node::sync::plan::{self, Action, Placed, Stat};
use crate::shared::cloud::imds::ImdsError;
use crate::shared::cloud::{Metadata, ObjectEntry};
use crate::shared::secrets::{format, Context, Secret};

/// A fuzz target's body: any bytes in, no panic out.
pub type Target = fn(&[u8]);

/// The targets by name, as `cargo fuzz run NAME` knows them.
pub const TARGETS: [(&str, Target); 8] = [
    ("env_file", env_file),
    ("secret_envelope", secret_envelope),
    ("imds_answers", imds_answers),
    ("state_files", state_files),
    ("sync_listing", sync_listing),
    ("sync_index", sync_index),
    ("backup_envelope", backup_envelope),
    ("etcd_wal", etcd_wal),
];

/// `etcd::wal::parse_head`: the first records of a WAL segment, as the etcd
/// stage reads a volume's data (a snapshot or a copy may hold anything).
/// An identity is read only from a complete metadata record, the same each time.
pub fn etcd_wal(data: &[u8]) {
    if let Ok(id) = crate::shared::etcd::wal::parse_head(data) {
        assert_eq!(crate::shared::etcd::wal::parse_head(data), Ok(id));
        assert!(data.len() >= 16, "an identity from fewer bytes than two frames");
    }
}

/// `env::from_text`: parse (HCL), typed fields, validation.
pub fn env_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(diagnostics) = crate::operator::env::from_text(Path::new("fuzz.tfvars"), &text) {
        // Every diagnostic renders (file:line: field: message).
        let _ = diagnostics.to_string();
    }
}

/// `secrets::format`: parse the envelope (format 1 or 4), then open it
/// under a fixed data key and context, through every slot of a format 4
/// one (a random input almost never authenticates; the parsers and the
/// length arithmetic are what is under test).
pub fn secret_envelope(data: &[u8]) {
    let key = Secret::new(vec![7; 32]);
    let context = Context {
        environment: "fuzz".into(),
        path: "common/ca.crt".into(),
    };
    if let Ok(envelope) = format::parse(data) {
        if let Ok(plain) = format::open(&envelope, &key, &context) {
            assert!(plain.len() + 16 <= data.len(), "opened more bytes than were stored");
        }
    }
    if let Ok(envelope) = format::parse_bundled(data) {
        assert!((1..=format::MAX_SLOTS).contains(&envelope.slots.len()));
        for slot in 0..envelope.slots.len() {
            if let Ok(plain) = format::open_bundled(&envelope, slot, &key, &context) {
                assert!(
                    plain.len() + 16 + 48 <= data.len(),
                    "opened more bytes than were stored"
                );
            }
        }
    }
}

/// Metadata that answers each path asked with the next NUL-separated piece
/// of the input, or 404 when the piece is `\x01` or the input is used up.
struct Answers<'a> {
    pieces: std::cell::RefCell<std::vec::IntoIter<&'a [u8]>>,
}

impl Metadata for Answers<'_> {
    fn get(&self, _path: &str) -> Result<Option<String>, ImdsError> {
        Ok(match self.pieces.borrow_mut().next() {
            None | Some(b"\x01") => None,
            Some(piece) => Some(String::from_utf8_lossy(piece).into_owned()),
        })
    }
}

/// `stage::discover::observe`: identity, placement, addresses, every interface.
pub fn imds_answers(data: &[u8]) {
    let pieces: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    let md = Answers {
        pieces: std::cell::RefCell::new(pieces.into_iter()),
    };
    if let Ok(identity) = crate::node::stage::discover::observe(&md) {
        assert!(identity.instance_id.starts_with("i-"));
        assert!(identity.availability_zone.starts_with(&identity.region));
        assert!(identity
            .interfaces
            .windows(2)
            .all(|w| w[0].device_number <= w[1].device_number));
    }
}

/// node.json, claim.json, facts.json: the first byte picks the file.
pub fn state_files(data: &[u8]) {
    let Some((which, json)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(config) = serde_json::from_slice::<crate::shared::node_config::NodeConfig>(json) {
                // What the sync derives from it must not panic either.
                let _ = crate::node::sync::sources(&crate::node::root::Root("/nonexistent-fuzz-root".into()), &config);
            }
        }
        1 => {
            let _ = serde_json::from_slice::<crate::node::stage::attach::Claim>(json);
        }
        _ => {
            let _ = serde_json::from_slice::<crate::node::stage::discover::Facts>(json);
        }
    }
}

/// S3 listings (keys and ETags from the input, one entry per line,
/// `key\tetag`, a line `--` starting the next prefix's listing) into the
/// sync planner, against a record and local files also drawn from the
/// input; checks the planner's safety rules on every plan.
pub fn sync_listing(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let prefixes = ["manifests/etcd/", "secure/"];
    let mut listings: Vec<(&str, Vec<ObjectEntry>)> = prefixes.iter().map(|p| (*p, Vec::new())).collect();
    let mut current = 0;
    let mut record = BTreeMap::new();
    let mut local = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line == "--" {
            current = (current + 1) % listings.len();
            continue;
        }
        let (key, etag) = line.split_once('\t').unwrap_or((line, "\"e\""));
        // Every third line also stands for a file placed earlier, half of
        // them unchanged since.
        if i % 3 == 0 {
            if let Ok(name) = crate::shared::secrets::ObjectPath::parse(key.rsplit('/').next().unwrap_or(key)) {
                let stat = Stat {
                    len: i as u64,
                    mtime_ns: i as i128,
                    inode: i as u64,
                };
                record.insert(
                    name.clone(),
                    Placed {
                        key: key.to_string(),
                        etag: etag.to_string(),
                        stat,
                    },
                );
                if i % 2 == 0 {
                    local.insert(name, stat);
                } else {
                    local.insert(name, Stat { len: 0, ..stat });
                }
            }
        }
        listings[current].1.push(ObjectEntry {
            key: key.to_string(),
            etag: etag.to_string(),
            size: 0,
        });
    }
    let member = data.first().map(|b| u32::from(*b % 4));
    let (remote, marked, _) = crate::node::sync::remote_from_listings(&listings, member);
    for (name, object) in &remote {
        assert!(!name.as_str().is_empty() && !object.key.as_str().ends_with('/'));
        assert_ne!(name.as_str(), plan::EMPTY_MARKER, "the marker is never a file");
        assert!(member.is_none_or(|m| !crate::shared::secrets::layout::is_other_members_key(object.key.as_str(), m)));
    }
    let actions = plan::plan(&remote, &record, &local);
    for action in &actions {
        if let Action::Delete { name } = action {
            assert!(!remote.contains_key(name), "deletes a file whose object is listed");
            assert_eq!(
                local.get(name),
                Some(&record[name].stat),
                "deletes a file changed since it was placed"
            );
        }
    }
    if remote.is_empty() && !marked {
        let refused = plan::refused_to_empty(&remote, marked, &actions);
        let deletes = actions.iter().filter(|a| matches!(a, Action::Delete { .. })).count();
        assert_eq!(
            refused,
            (deletes > 0).then_some(deletes),
            "an empty unmarked listing empties nothing"
        );
    }
}

/// A prefix's index as a node reads it from the bucket, and the file of
/// what a pass remembers (`<record name>.listings`), from the same bytes: an
/// index reads back as itself, describes the listing it names, and is
/// remembered with that listing; a remembered listing is only used on a 304.
pub fn sync_index(data: &[u8]) {
    use crate::node::sync::poll::{self, IndexAnswer, Seen};
    use crate::shared::secrets::index::{self, Index};
    if let Ok(parsed) = Index::parse(data) {
        assert_eq!(
            Index::parse(&parsed.to_bytes()).as_ref(),
            Ok(&parsed),
            "reads back as itself"
        );
        let listing = index::listing(&parsed.objects);
        let described = index::entries(&listing);
        assert_eq!(parsed.describes(&listing), parsed.objects == described);
        let answer = IndexAnswer::Changed {
            etag: "\"e\"".into(),
            index: parsed.clone(),
        };
        let seen = poll::after_listing(None, &answer, described.clone(), 1);
        assert_eq!(seen.is_some(), parsed.objects == described);
        assert!(
            poll::cached(seen.as_ref(), &answer, 1, false).is_none(),
            "only a 304 reuses a listing"
        );
    }
    if let Ok(saved) = serde_json::from_slice::<BTreeMap<String, Seen>>(data) {
        for seen in saved.values() {
            let used = poll::cached(Some(seen), &IndexAnswer::NotModified, seen.listed_at, false);
            assert_eq!(used, Some(seen.listing.as_slice()));
            let _ = index::listing(&seen.listing);
        }
    }
}

/// `backup::format` (formats 2 and 3): the first byte picks the size of the
/// pieces the rest arrives in (as S3's body does); the rest is a stored
/// backup, parsed and opened under a fixed key and context. Then the rest is
/// sealed as plaintext in chunks of a size the first byte picks, and must
/// open back to itself with the same digest.
pub fn backup_envelope(data: &[u8]) {
    use crate::shared::backup::format::{self, Opener, Sealer};
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first % 64) + 1;
    let key = Secret::new(vec![7; 32]);
    let mut pieces = rest.chunks(piece);
    let mut stored = Vec::new();
    let header = loop {
        match format::parse_header(&stored) {
            Ok(Some(header)) => break Some(header),
            Ok(None) => match pieces.next() {
                Some(p) => stored.extend_from_slice(p),
                None => break None,
            },
            Err(_) => break None,
        }
    };
    if let Some(header) = header {
        assert!(header.len() <= stored.len(), "a header longer than its bytes");
        let again = format::parse_header(&rest[..header.len()]).expect("the same bytes parse again");
        assert_eq!(again.map(|h| h.metadata), Some(header.metadata.clone()));
        let mut opener = Opener::new(&header, &key, b"ctx").expect("a 32-byte key");
        let mut out = Vec::new();
        let mut fed = opener.update(&stored[header.len()..], &mut out);
        for p in pieces {
            if fed.is_ok() {
                fed = opener.update(p, &mut out);
            }
        }
        if fed.is_ok() {
            if let Ok(digest) = opener.finish(&mut out) {
                assert_eq!(digest.size, out.len() as u64);
            }
        }
        assert!(out.len() <= rest.len(), "opened more bytes than were stored");
    }
    let chunk = u32::from(first % 32) + 1;
    let (mut sealer, mut sealed) =
        Sealer::with(&key, b"wrapped", b"ctx", b"{}", chunk, format::VERSION).expect("a valid chunk size");
    for p in rest.chunks(piece) {
        sealer.update(p, &mut sealed).expect("sealing");
    }
    let digest = sealer.finish(&mut sealed).expect("sealing");
    let header = format::parse_header(&sealed).expect("its own header").expect("whole");
    let mut opener = Opener::new(&header, &key, b"ctx").expect("a 32-byte key");
    let mut out = Vec::new();
    opener.update(&sealed[header.len()..], &mut out).expect("opens");
    assert_eq!(opener.finish(&mut out).expect("opens"), digest);
    assert!(out == rest, "round trip");
}
