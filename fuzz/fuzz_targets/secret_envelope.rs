//! A stored secret (envelope format 1): parse, then open under a fixed key
//! and context; any bytes are refused cleanly or open.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nodeboot::fuzzing::secret_envelope(data);
});
