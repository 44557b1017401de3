//! node.json, claim.json and facts.json as the stages read them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nodeboot::fuzzing::state_files(data);
});
