//! Instance metadata answers (discover): each path the stage asks for gets
//! the next NUL-separated piece of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nodeboot::fuzzing::imds_answers(data);
});
