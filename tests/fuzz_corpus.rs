//! The fuzz targets' committed seeds (fuzz/seeds/<target>/) and every crash
//! the fuzzers found (fuzz/regressions/<target>/) replayed through the same
//! harness code (`nodeboot::fuzzing`), so the normal suite keeps them
//! fixed without cargo-fuzz. See fuzz/README.md.

mod common;

use std::path::PathBuf;

use nodeboot::fuzzing::TARGETS;

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = common::repo().join("fuzz").join(kind).join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_seed_and_every_crash_found_runs_clean_through_its_target() {
    for (target, run) in TARGETS {
        let seeds = inputs("seeds", target);
        assert!(!seeds.is_empty(), "fuzz/seeds/{target}/ holds no seed");
        for file in seeds.iter().chain(&inputs("regressions", target)) {
            let bytes = std::fs::read(file).unwrap();
            if std::panic::catch_unwind(|| run(&bytes)).is_err() {
                panic!("{target}: {} panics", file.display());
            }
        }
    }
}

/// The envelope seed is a real one (written from the README's description
/// by an independent implementation, Python's `cryptography`): it opens, so
/// the fuzzer starts from inputs that reach the cipher.
#[test]
fn the_envelope_seed_opens_under_the_fuzz_key() {
    use nodeboot::shared::secrets::{format, Context, Secret};
    let bytes = std::fs::read(common::repo().join("fuzz/seeds/secret_envelope/opens.bin")).unwrap();
    let envelope = format::parse(&bytes).unwrap();
    let context = Context {
        environment: "fuzz".into(),
        path: "common/ca.crt".into(),
    };
    let plain = format::open(&envelope, &Secret::new(vec![7; 32]), &context).unwrap();
    assert_eq!(plain.expose(), b"-----BEGIN CERTIFICATE-----\n");
}

/// The format 4 seed was sealed by Python's `cryptography` from README's
/// description of the format (two slots, `secure/` and `compute/`, both
/// wrapping the content key with the fuzz key): it opens through either.
#[test]
fn the_format_4_seed_opens_through_either_slot_under_the_fuzz_key() {
    use nodeboot::shared::secrets::{format, Context, Secret};
    let bytes = std::fs::read(common::repo().join("fuzz/seeds/secret_envelope/format-4-two-slots.bin")).unwrap();
    let envelope = format::parse_bundled(&bytes).unwrap();
    let scopes: Vec<&str> = envelope.slots.iter().map(|s| s.scope).collect();
    assert_eq!(scopes, ["secure/", "compute/"]);
    let context = Context {
        environment: "fuzz".into(),
        path: "common/ca.crt".into(),
    };
    for slot in 0..2 {
        let plain = format::open_bundled(&envelope, slot, &Secret::new(vec![7; 32]), &context).unwrap();
        assert_eq!(plain.expose(), b"-----BEGIN CERTIFICATE-----\n");
    }
}

/// The backup seeds are real ones too (sealed by Python's `cryptography` from
/// `shared::backup::format`'s description): formats 2 and 3 open, with
/// format 3's trailer, so the Rust reader agrees with an independent writer.
#[test]
fn the_backup_seeds_open_under_the_fuzz_key() {
    use nodeboot::shared::backup::format;
    use nodeboot::shared::secrets::Secret;
    let snap: &[u8] = b"bbolt pages of a tiny etcd snapshot, and etcd's hash";
    for (seed, want) in [
        ("format-3.bin", snap),
        ("format-3-one-chunk.bin", snap),
        ("format-2.bin", snap),
        ("format-3-empty.bin", b"".as_slice()),
    ] {
        let bytes = std::fs::read(common::repo().join("fuzz/seeds/backup_envelope").join(seed)).unwrap();
        let stored = &bytes[1..];
        let header = format::parse_header(stored).unwrap().unwrap();
        let mut opener = format::Opener::new(&header, &Secret::new(vec![7; 32]), b"ctx").unwrap();
        let mut out = Vec::new();
        opener.update(&stored[header.len()..], &mut out).unwrap();
        let digest = opener.finish(&mut out).unwrap_or_else(|e| panic!("{seed}: {e}"));
        assert_eq!(out, want, "{seed}");
        assert_eq!(digest.size, want.len() as u64, "{seed}");
    }
}
