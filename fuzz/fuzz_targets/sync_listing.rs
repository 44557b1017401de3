//! S3 listings into the sync planner, with the planner's safety rules
//! checked on every plan.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nodeboot::fuzzing::sync_listing(data);
});
