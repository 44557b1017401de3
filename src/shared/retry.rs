//! The one retry policy: exponential backoff with jitter and a bounded total
//! time, logging what it waits for and for how long. Every stage waits on
//! AWS through here instead of a sleep loop of its own.
//!
//! Backoff suits a service that may be down; a state that is known to change
//! soon (an attachment EC2 is making) is better polled at a fixed interval
//! (`Policy::every`): backoff's growing gaps would add up to seconds after the
//! change happened.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tracing::info;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Give up once this much time has passed.
    pub total: Duration,
    /// Exponential backoff with jitter, or one fixed interval.
    pub fixed: bool,
}

impl Policy {
    /// Exponential backoff with jitter from `first_delay` up to `max_delay`.
    pub const fn new(first_delay: Duration, max_delay: Duration, total: Duration) -> Self {
        Policy {
            first_delay,
            max_delay,
            total,
            fixed: false,
        }
    }

    /// A look every `interval`, no jitter: for a change that is expected soon.
    pub const fn every(interval: Duration, total: Duration) -> Self {
        Policy {
            first_delay: interval,
            max_delay: interval,
            total,
            fixed: true,
        }
    }

    pub fn with_total(self, total: Duration) -> Self {
        Policy { total, ..self }
    }

    /// The first `n` sleeps between looks, for tests of a stage's schedule.
    #[cfg(test)]
    pub(crate) fn first_delays(&self, n: usize) -> Vec<Duration> {
        let mut delays = self.delays();
        let start = Instant::now();
        (0..n)
            .map(|_| next_delay(&mut delays, start, *self).expect("within the total"))
            .collect()
    }

    fn delays(&self) -> Box<dyn Iterator<Item = Duration> + Send> {
        if self.fixed {
            return Box::new(
                backon::ConstantBuilder::default()
                    .with_delay(self.first_delay)
                    .without_max_times()
                    .build(),
            );
        }
        Box::new(
            backon::ExponentialBuilder::default()
                .with_min_delay(self.first_delay)
                .with_max_delay(self.max_delay)
                .with_jitter()
                .without_max_times()
                .build(),
        )
    }
}

/// What one attempt found.
pub enum Attempt<T, E> {
    Done(T),
    /// Not yet; the reason is logged and kept for the final error.
    Retry(E),
    /// Retrying cannot help.
    Fail(E),
}

#[derive(Debug, thiserror::Error)]
pub enum Gave<E: Display> {
    #[error("gave up waiting for {what} after {}s: {last}", elapsed.as_secs())]
    Up { what: String, elapsed: Duration, last: E },
    #[error("{0}")]
    Failed(E),
}

/// Runs `attempt` until it is done, fails, or `policy.total` has passed.
pub async fn wait<T, E: Display, F: Future<Output = Attempt<T, E>>>(
    what: &str,
    policy: Policy,
    mut attempt: impl FnMut() -> F,
) -> Result<T, Gave<E>> {
    let start = Instant::now();
    let mut delays = policy.delays();
    loop {
        match attempt().await {
            Attempt::Done(v) => return Ok(v),
            Attempt::Fail(e) => return Err(Gave::Failed(e)),
            Attempt::Retry(reason) => match next_delay(&mut delays, start, policy) {
                Some(delay) => {
                    info!("waiting for {what}: {reason} ({}s so far)", start.elapsed().as_secs());
                    tokio::time::sleep(delay).await;
                }
                None => {
                    return Err(Gave::Up {
                        what: what.to_string(),
                        elapsed: start.elapsed(),
                        last: reason,
                    })
                }
            },
        }
    }
}

/// The blocking twin of [`wait`], for code that runs before any runtime
/// exists (instance metadata).
pub fn wait_blocking<T, E: Display>(
    what: &str,
    policy: Policy,
    mut attempt: impl FnMut() -> Attempt<T, E>,
) -> Result<T, Gave<E>> {
    let start = Instant::now();
    let mut delays = policy.delays();
    loop {
        match attempt() {
            Attempt::Done(v) => return Ok(v),
            Attempt::Fail(e) => return Err(Gave::Failed(e)),
            Attempt::Retry(reason) => match next_delay(&mut delays, start, policy) {
                Some(delay) => {
                    info!("waiting for {what}: {reason} ({}s so far)", start.elapsed().as_secs());
                    std::thread::sleep(delay);
                }
                None => {
                    return Err(Gave::Up {
                        what: what.to_string(),
                        elapsed: start.elapsed(),
                        last: reason,
                    })
                }
            },
        }
    }
}

/// The next delay, cut so the total is never exceeded; `None` when time is up.
fn next_delay(delays: &mut impl Iterator<Item = Duration>, start: Instant, policy: Policy) -> Option<Duration> {
    let left = policy.total.checked_sub(start.elapsed())?;
    if left.is_zero() {
        return None;
    }
    Some(delays.next().unwrap_or(policy.max_delay).min(left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_after_the_total_time_with_the_last_reason() {
        let policy = Policy::new(
            Duration::from_millis(1),
            Duration::from_millis(5),
            Duration::from_millis(50),
        );
        let mut tries = 0;
        let start = Instant::now();
        let result: Result<(), _> = wait_blocking("a thing", policy, || {
            tries += 1;
            Attempt::Retry(format!("try {tries}"))
        });
        let err = result.unwrap_err().to_string();
        assert!(err.starts_with("gave up waiting for a thing after 0s: try "), "{err}");
        assert!(tries > 3);
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_fixed_interval_never_grows_and_has_no_jitter() {
        let policy = Policy::every(Duration::from_millis(400), Duration::from_secs(300));
        assert_eq!(policy.first_delays(20), vec![Duration::from_millis(400); 20]);
        // Backoff, by contrast, grows: after a few looks its gaps pass the interval.
        let backoff = Policy::new(
            Duration::from_millis(250),
            Duration::from_secs(5),
            Duration::from_secs(300),
        );
        assert!(backoff
            .first_delays(6)
            .iter()
            .skip(3)
            .all(|d| *d > Duration::from_millis(400)));
    }

    #[test]
    fn a_fixed_interval_is_cut_at_the_total() {
        let policy = Policy::every(Duration::from_millis(400), Duration::from_millis(100));
        let start = Instant::now();
        let mut tries = 0;
        let result: Result<(), _> = wait_blocking("x", policy, || {
            tries += 1;
            Attempt::Retry("not yet")
        });
        assert!(matches!(result, Err(Gave::Up { .. })));
        assert_eq!(tries, 2, "one look, the cut sleep, one last look");
        assert!(start.elapsed() < Duration::from_millis(400));
    }

    #[test]
    fn a_failure_is_not_retried() {
        let policy = Policy::new(
            Duration::from_millis(1),
            Duration::from_millis(1),
            Duration::from_secs(5),
        );
        let mut tries = 0;
        let result: Result<(), Gave<&str>> = wait_blocking("x", policy, || {
            tries += 1;
            Attempt::Fail("broken")
        });
        assert!(matches!(result, Err(Gave::Failed("broken"))));
        assert_eq!(tries, 1);
    }
}
