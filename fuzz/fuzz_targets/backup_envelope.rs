//! A stored etcd backup (envelope formats 2 and 3) as a download reads it:
//! parsed and opened piece by piece under a fixed key and context; and any
//! bytes sealed in format 3 open back to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nodeboot::fuzzing::backup_envelope(data);
});
