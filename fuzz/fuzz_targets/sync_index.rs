//! A prefix's index and the file of what a sync pass remembers, as a node
//! reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nodeboot::fuzzing::sync_index(data);
});
