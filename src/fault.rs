//! Test-only fault injection: `NODEBOOT_ABORT_AT=<point>` makes the process
//! abort (SIGABRT, no cleanup, like a node losing power or systemd's
//! SIGKILL) when it reaches that named point. The tests use it to prove
//! that every stage converges when rerun after dying at any step.

pub const VAR: &str = "NODEBOOT_ABORT_AT";

pub fn point(name: &str) {
    if std::env::var(VAR).is_ok_and(|v| v == name) {
        eprintln!("nodeboot: aborting at {name} ({VAR})");
        std::process::abort();
    }
}
