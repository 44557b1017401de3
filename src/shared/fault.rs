//! Test-only fault injection: `NODEBOOT_ABORT_AT=<point>` makes the process
//! abort (SIGABRT, no cleanup, like a node losing power or systemd's
//! SIGKILL) when it reaches that named point; `NODEBOOT_FAIL_AT=<point>`
//! makes a step that can fail fail there. The tests use them to prove that
//! every stage converges when rerun after dying at any step, and that a
//! failure is reported.
//!
//! Compiled only into builds with debug assertions (the dev and test
//! profiles, which the integration tests and the lab run); the release
//! binary has neither the variables' names nor the code that reads them,
//! so nothing on a node can trigger them (tests/check-static checks).

pub const VAR: &str = "NODEBOOT_ABORT_AT";
pub const FAIL_VAR: &str = "NODEBOOT_FAIL_AT";

#[cfg(debug_assertions)]
pub fn point(name: &str) {
    if std::env::var(VAR).is_ok_and(|v| v == name) {
        eprintln!("nodeboot: aborting at {name} ({VAR})");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_name: &str) {}

/// Whether the step `name` is to fail (test builds only).
#[cfg(debug_assertions)]
pub fn fails(name: &str) -> bool {
    std::env::var(FAIL_VAR).is_ok_and(|v| v == name)
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn fails(_name: &str) -> bool {
    false
}
