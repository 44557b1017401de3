//! The environment file: any text through parse and validation gives an
//! environment or diagnostics, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nodeboot::fuzzing::env_file(data);
});
