//! The index of a prefix: one small object, `<prefix>.nodeboot-index`
//! (`manifests/etcd/.nodeboot-index`), that every upload rewrites after the
//! objects it put or removed. It lists the prefix's objects (key, ETag,
//! size) and a generation that is new on every write, so its ETag changes
//! whenever the prefix changed. A node asks for it with a conditional GET
//! (`If-None-Match`: a 304 when nothing changed, at 1/12.5 of a LIST's
//! price) and lists the prefix only when it changed, is missing or does not
//! describe the listing (see `node::sync::poll`).
//!
//! Not authenticated, on purpose. It names keys, sizes and ETags, which a
//! LIST shows anyway, never contents, and nothing a node writes comes from
//! it: a changed index only makes the node LIST, and a node plans from that
//! listing, never from the index, and opens every object through its
//! envelope (bound to environment and path by KMS and GCM). Whoever can
//! write the index can write the objects too. The worst a forged index can
//! do is hide a change: kept unchanged while the objects change (which is
//! also what a writer that keeps no index does), the nodes see the change
//! at their next full listing (at least one an hour). A MAC over it would
//! need a key that every uploader holds and every node can check, i.e. a
//! KMS call per pass, the cost the index exists to avoid.

use serde::{Deserialize, Serialize};

use crate::shared::cloud::ObjectEntry;

/// The index's file name in its prefix; like the empty marker, never a file
/// on a node, never a secret.
pub const INDEX_NAME: &str = ".nodeboot-index";

/// The format nodeboot writes and reads.
pub const FORMAT: u32 = 1;

/// An index larger than this is not read (a LIST is used instead): 4 MiB
/// is some 20,000 objects.
pub const MAX_INDEX_BYTES: u64 = 4 * 1024 * 1024;

/// User metadata on the index object (`x-amz-meta-nodeboot-index`).
pub const METADATA_KEY: &str = "nodeboot-index";

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub etag: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub format: u32,
    /// New on every write (time and a random number): a rewrite always
    /// changes the index's bytes, so its ETag, whatever S3 derives it from.
    pub generation: String,
    /// The prefix's objects, indexes excluded, sorted by key.
    pub objects: Vec<Entry>,
}

/// The index object of `prefix` (a folder: `manifests/etcd/`).
pub fn key(prefix: &str) -> String {
    format!("{prefix}{INDEX_NAME}")
}

/// Whether `key` is an index object (of any folder).
pub fn is_index(key: &str) -> bool {
    key.rsplit('/').next() == Some(INDEX_NAME)
}

/// A listing as an index holds it: sorted, the indexes of its folders left
/// out (a folder's index changes with every upload below it; the objects
/// are what the index describes).
pub fn entries(listing: &[ObjectEntry]) -> Vec<Entry> {
    let mut out: Vec<Entry> = listing
        .iter()
        .filter(|o| !is_index(&o.key))
        .map(|o| Entry {
            key: o.key.clone(),
            etag: o.etag.clone(),
            size: o.size,
        })
        .collect();
    out.sort();
    out
}

/// The entries back as a listing.
pub fn listing(entries: &[Entry]) -> Vec<ObjectEntry> {
    entries
        .iter()
        .map(|e| ObjectEntry {
            key: e.key.clone(),
            etag: e.etag.clone(),
            size: e.size,
        })
        .collect()
}

impl Index {
    pub fn of(listing: &[ObjectEntry], generation: String) -> Index {
        Index {
            format: FORMAT,
            generation,
            objects: entries(listing),
        }
    }

    /// Whether this index names exactly the objects of `listing`.
    pub fn describes(&self, listing: &[ObjectEntry]) -> bool {
        self.objects == entries(listing)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("an index serialises");
        bytes.push(b'\n');
        bytes
    }

    /// Reads an index; anything else (another format, not JSON, too large)
    /// is an error, and the caller lists the prefix instead.
    pub fn parse(bytes: &[u8]) -> Result<Index, String> {
        if bytes.len() as u64 > MAX_INDEX_BYTES {
            return Err(format!("{} bytes, more than {MAX_INDEX_BYTES}", bytes.len()));
        }
        let index: Index = serde_json::from_slice(bytes).map_err(|e| format!("not an index: {e}"))?;
        if index.format != FORMAT {
            return Err(format!("index format {}, this nodeboot reads {FORMAT}", index.format));
        }
        Ok(index)
    }
}

/// A generation nobody wrote before: the time in nanoseconds and 64 random bits.
pub fn new_generation() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos}-{:016x}", fastrand::u64(..))
}

/// Every folder that holds `key`, as prefixes, outermost first:
/// `secure/etcd/peer.key` is in `secure/` and `secure/etcd/`. A node may
/// sync any folder (node.json's `synced`), so an upload keeps the index of
/// each one up to date.
pub fn folders(key: &str) -> Vec<String> {
    let parts: Vec<&str> = key.split('/').collect();
    (1..parts.len()).map(|n| format!("{}/", parts[..n].join("/"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, etag: &str) -> ObjectEntry {
        ObjectEntry {
            key: key.into(),
            etag: etag.into(),
            size: etag.len() as u64,
        }
    }

    #[test]
    fn an_index_describes_its_listing_in_any_order_and_ignores_other_indexes() {
        let listing = [entry("m/b.yaml", "\"2\""), entry("m/a.yaml", "\"1\"")];
        let index = Index::of(&listing, "g".into());
        let mut shuffled = vec![entry("m/.nodeboot-index", "\"i\""), listing[1].clone()];
        shuffled.push(listing[0].clone());
        shuffled.push(entry("m/sub/.nodeboot-index", "\"j\""));
        assert!(index.describes(&shuffled));
        assert!(!index.describes(&listing[..1]), "an object gone");
        assert!(
            !index.describes(&[listing[0].clone(), entry("m/a.yaml", "\"3\"")]),
            "an object changed"
        );
        let more = [
            listing[0].clone(),
            listing[1].clone(),
            entry("m/.nodeboot-empty", "\"e\""),
        ];
        assert!(!index.describes(&more), "the empty marker counts");
    }

    #[test]
    fn an_index_reads_back_and_anything_else_is_refused() {
        let index = Index::of(&[entry("m/a.yaml", "\"1\"")], new_generation());
        assert_eq!(Index::parse(&index.to_bytes()), Ok(index.clone()));
        assert!(Index::parse(b"{not json").is_err());
        assert!(Index::parse(b"{\"format\": 2, \"generation\": \"g\", \"objects\": []}").is_err());
        assert!(Index::parse(&vec![b' '; MAX_INDEX_BYTES as usize + 1]).is_err());
    }

    #[test]
    fn every_write_has_another_generation() {
        assert_ne!(new_generation(), new_generation());
    }

    #[test]
    fn index_keys_and_folders() {
        assert_eq!(key("manifests/etcd/"), "manifests/etcd/.nodeboot-index");
        assert!(is_index("manifests/etcd/.nodeboot-index"));
        assert!(is_index(".nodeboot-index"));
        assert!(!is_index("manifests/etcd/x.nodeboot-index"));
        assert_eq!(folders("secure/etcd/peer.key"), ["secure/", "secure/etcd/"]);
        assert_eq!(folders("common/ca.crt"), ["common/"]);
        assert!(folders("top-level").is_empty());
    }
}
