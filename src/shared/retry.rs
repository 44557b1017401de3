//! The one retry policy: exponential backoff with jitter and a bounded total
//! time, logging what it waits for and for how long. Every stage waits on
//! AWS through here instead of a sleep loop of its own.
//!
//! Backoff suits a service that may be down; a state that is known to change
//! soon (an attachment EC2 is making) is better polled at a fixed interval
//! (`Policy::every`): backoff's growing gaps would add up to seconds after the
//! change happened.
//!
//! The loop reads the time and sleeps through a [`Clock`]: the system's on a
//! node, a manual one in tests, which assert the schedule exactly instead of
//! timing it. The async [`wait`] uses tokio's clock, which a paused runtime
//! controls the same way.

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
        (0..n)
            .map(|_| next_delay(&mut delays, Duration::ZERO, *self).expect("within the total"))
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

/// Where the blocking retry loop reads the time and sleeps.
pub trait Clock {
    /// Time since the clock started.
    fn elapsed(&self) -> Duration;
    fn sleep(&self, duration: Duration);
}

/// The system's monotonic clock, started when made.
pub struct SystemClock(Instant);

impl SystemClock {
    pub fn start() -> Self {
        SystemClock(Instant::now())
    }
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration)
    }
}

/// Runs `attempt` until it is done, fails, or `policy.total` has passed.
pub async fn wait<T, E: Display, F: Future<Output = Attempt<T, E>>>(
    what: &str,
    policy: Policy,
    mut attempt: impl FnMut() -> F,
) -> Result<T, Gave<E>> {
    let start = tokio::time::Instant::now();
    let mut delays = policy.delays();
    loop {
        match attempt().await {
            Attempt::Done(v) => return Ok(v),
            Attempt::Fail(e) => return Err(Gave::Failed(e)),
            Attempt::Retry(reason) => match next_delay(&mut delays, start.elapsed(), policy) {
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
    attempt: impl FnMut() -> Attempt<T, E>,
) -> Result<T, Gave<E>> {
    wait_blocking_on(&SystemClock::start(), what, policy, attempt)
}

/// [`wait_blocking`] on a given clock.
pub fn wait_blocking_on<T, E: Display>(
    clock: &impl Clock,
    what: &str,
    policy: Policy,
    mut attempt: impl FnMut() -> Attempt<T, E>,
) -> Result<T, Gave<E>> {
    let mut delays = policy.delays();
    loop {
        match attempt() {
            Attempt::Done(v) => return Ok(v),
            Attempt::Fail(e) => return Err(Gave::Failed(e)),
            Attempt::Retry(reason) => match next_delay(&mut delays, clock.elapsed(), policy) {
                Some(delay) => {
                    info!("waiting for {what}: {reason} ({}s so far)", clock.elapsed().as_secs());
                    clock.sleep(delay);
                }
                None => {
                    return Err(Gave::Up {
                        what: what.to_string(),
                        elapsed: clock.elapsed(),
                        last: reason,
                    })
                }
            },
        }
    }
}

/// The next delay, cut so the total is never exceeded; `None` when time is up.
fn next_delay(delays: &mut impl Iterator<Item = Duration>, elapsed: Duration, policy: Policy) -> Option<Duration> {
    let left = policy.total.checked_sub(elapsed)?;
    if left.is_zero() {
        return None;
    }
    Some(delays.next().unwrap_or(policy.max_delay).min(left))
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;

    /// Time moves only when the loop sleeps; every sleep is kept.
    #[derive(Default)]
    struct ManualClock {
        now: Cell<Duration>,
        sleeps: RefCell<Vec<Duration>>,
    }

    impl Clock for ManualClock {
        fn elapsed(&self) -> Duration {
            self.now.get()
        }

        fn sleep(&self, duration: Duration) {
            self.now.set(self.now.get() + duration);
            self.sleeps.borrow_mut().push(duration);
        }
    }

    fn retried_until_given_up(policy: Policy) -> (ManualClock, u32, Gave<String>) {
        let clock = ManualClock::default();
        let mut tries = 0;
        let result: Result<(), _> = wait_blocking_on(&clock, "a thing", policy, || {
            tries += 1;
            Attempt::Retry(format!("try {tries}"))
        });
        (clock, tries, result.unwrap_err())
    }

    #[test]
    fn gives_up_at_exactly_the_total_time_with_the_last_reason() {
        let (clock, tries, gave) =
            retried_until_given_up(Policy::every(Duration::from_millis(400), Duration::from_secs(2)));
        assert_eq!(*clock.sleeps.borrow(), vec![Duration::from_millis(400); 5]);
        assert_eq!(tries, 6, "a look before each sleep and one after the last");
        match gave {
            Gave::Up { what, elapsed, last } => {
                assert_eq!(
                    (what.as_str(), elapsed, last.as_str()),
                    ("a thing", Duration::from_secs(2), "try 6")
                )
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_its_last_sleep_is_cut_at_the_total() {
        let first = Duration::from_millis(250);
        let max = Duration::from_secs(5);
        let total = Duration::from_secs(60);
        let (clock, tries, _) = retried_until_given_up(Policy::new(first, max, total));
        let sleeps = clock.sleeps.borrow();
        assert_eq!(
            sleeps.iter().sum::<Duration>(),
            total,
            "never past the total, never short of it"
        );
        assert_eq!(tries as usize, sleeps.len() + 1);
        // backon: min_delay * 2^n, capped at max_delay, plus a jitter within (0, that delay).
        for (n, sleep) in sleeps[..sleeps.len() - 1].iter().enumerate() {
            let base = first.saturating_mul(1 << n.min(20)).min(max);
            assert!(
                *sleep >= base && *sleep < base * 2,
                "sleep {n}: {sleep:?}, base {base:?}"
            );
        }
        assert!(sleeps.len() > 10, "{sleeps:?}");
    }

    #[test]
    fn a_fixed_interval_never_grows_and_has_no_jitter() {
        let policy = Policy::every(Duration::from_millis(400), Duration::from_secs(300));
        assert_eq!(policy.first_delays(20), vec![Duration::from_millis(400); 20]);
    }

    #[test]
    fn a_fixed_interval_is_cut_at_the_total() {
        let (clock, tries, _) =
            retried_until_given_up(Policy::every(Duration::from_millis(400), Duration::from_millis(100)));
        assert_eq!(*clock.sleeps.borrow(), vec![Duration::from_millis(100)]);
        assert_eq!(tries, 2, "one look, the cut sleep, one last look");
    }

    #[test]
    fn a_failure_is_not_retried() {
        let clock = ManualClock::default();
        let policy = Policy::new(
            Duration::from_millis(1),
            Duration::from_millis(1),
            Duration::from_secs(5),
        );
        let mut tries = 0;
        let result: Result<(), Gave<&str>> = wait_blocking_on(&clock, "x", policy, || {
            tries += 1;
            Attempt::Fail("broken")
        });
        assert!(matches!(result, Err(Gave::Failed("broken"))));
        assert_eq!((tries, clock.sleeps.borrow().len()), (1, 0));
    }

    #[tokio::test]
    async fn the_async_wait_returns_what_the_attempt_found() {
        let policy = Policy::every(Duration::from_millis(1), Duration::from_secs(5));
        let mut tries = 0;
        let found = wait("x", policy, || {
            tries += 1;
            let now = tries;
            async move {
                if now < 3 {
                    Attempt::Retry("not yet")
                } else {
                    Attempt::Done(now)
                }
            }
        })
        .await;
        assert_eq!(found.unwrap(), 3);
    }
}
