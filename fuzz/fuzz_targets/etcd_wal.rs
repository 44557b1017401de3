//! The first records of an etcd WAL segment, as the etcd stage reads a
//! volume's data to tell whose it is.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nodeboot::fuzzing::etcd_wal(data);
});
