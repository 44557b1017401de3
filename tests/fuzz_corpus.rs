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
