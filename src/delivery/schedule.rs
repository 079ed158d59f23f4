//! When to try a failed delivery again.
//!
//! The first attempt goes out at once; the schedule lists the waits before each retry. The
//! default follows the Standard Webhooks recommendation. Each wait gets ±20 % jitter so that a
//! receiver coming back from an outage is not hit by every queued event in the same second.

use std::time::Duration;

use rand::Rng as _;

/// The default waits before retries: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const DEFAULT_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

/// The longest wait a receiver's `Retry-After` can ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 60 * 60);

/// The retry schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl Default for RetrySchedule {
    fn default() -> Self {
        Self::parse(DEFAULT_SCHEDULE).expect("the default schedule parses")
    }
}

impl RetrySchedule {
    /// Parses a comma-separated list of waits such as `1s,2s,5s` or `5s,5m,30m,2h`. An empty
    /// string means "never retry".
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self(Vec::new()));
        }
        text.split(',')
            .map(|part| {
                humantime::parse_duration(part.trim()).map_err(|e| {
                    format!(
                        "`{}` is not a duration ({e}); write e.g. 1s,2s,5m",
                        part.trim()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The wait before the retry that follows `step` failed attempts of the current round, or
    /// `None` when the schedule is spent. `retry_after` is the receiver's wish, honoured up
    /// to [`MAX_RETRY_AFTER`] but never sooner than the schedule.
    pub fn next_wait(&self, step: usize, retry_after: Option<Duration>) -> Option<Duration> {
        let planned = jitter(*self.0.get(step)?);
        Some(match retry_after {
            Some(asked) => planned.max(asked.min(MAX_RETRY_AFTER)),
            None => planned,
        })
    }

    /// How many retries follow the first attempt.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no retries at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn jitter(wait: Duration) -> Duration {
    let factor = rand::rng().random_range(0.8..=1.2);
    wait.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag_syntax() {
        let s = RetrySchedule::parse("1s, 2s,5m").unwrap();
        assert_eq!(
            s.0,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(300)
            ]
        );
        assert!(
            RetrySchedule::parse("1s,soon")
                .unwrap_err()
                .contains("soon")
        );
        assert_eq!(RetrySchedule::default().len(), 7);
    }

    #[test]
    fn waits_are_jittered_within_a_fifth_and_end_with_the_schedule() {
        let s = RetrySchedule::parse("10s,20s").unwrap();
        for _ in 0..100 {
            let w = s.next_wait(1, None).unwrap();
            assert!(
                w >= Duration::from_secs(16) && w <= Duration::from_secs(24),
                "{w:?}"
            );
        }
        assert_eq!(s.next_wait(2, None), None);
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let s = RetrySchedule::parse("1s").unwrap();
        let asked = Duration::from_secs(120);
        assert_eq!(s.next_wait(0, Some(asked)), Some(asked));
        assert_eq!(
            s.next_wait(0, Some(Duration::from_secs(10 * 24 * 3600))),
            Some(MAX_RETRY_AFTER)
        );
        // A receiver cannot make us retry sooner than planned.
        let w = s.next_wait(0, Some(Duration::ZERO)).unwrap();
        assert!(w >= Duration::from_millis(800));
    }
}
