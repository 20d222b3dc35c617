//! The injected clock. Library code never reads the wall clock itself, so
//! expiry and grace periods are tested by moving a [`ManualClock`].

use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> OffsetDateTime;

    /// The current time as whole seconds since the Unix epoch.
    fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    /// Without the calendar date that `now` works out (every verification
    /// asks for the time).
    #[allow(clippy::disallowed_methods)]
    fn unix(&self) -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            // Before 1970: rounded down, as `unix_timestamp` does.
            Err(before) => {
                let d = before.duration();
                let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                -whole - i64::from(d.subsec_nanos() > 0)
            }
        }
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    unix_nanos: AtomicI64,
}

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            unix_nanos: AtomicI64::new(nanos_of(start)),
        }
    }

    /// Starts at a fixed, whole-second instant (2026-01-01T00:00:00Z).
    pub fn fixed() -> Self {
        Self::new(time::macros::datetime!(2026-01-01 00:00:00 UTC))
    }

    pub fn set(&self, at: OffsetDateTime) {
        self.unix_nanos.store(nanos_of(at), Ordering::SeqCst);
    }

    pub fn advance(&self, by: time::Duration) {
        let nanos = i64::try_from(by.whole_nanoseconds()).unwrap_or(i64::MAX);
        self.unix_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

fn nanos_of(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let nanos = self.unix_nanos.load(Ordering::SeqCst);
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::fixed();
        let start = clock.unix();
        assert_eq!(clock.unix(), start);
        clock.advance(time::Duration::days(30));
        assert_eq!(clock.unix(), start + 30 * 86_400);
    }

    #[test]
    fn the_system_clock_gives_the_same_second_both_ways() {
        let clock = SystemClock;
        let before = clock.now().unix_timestamp();
        let unix = clock.unix();
        let after = clock.now().unix_timestamp();
        assert!(before <= unix && unix <= after, "{before} {unix} {after}");
        assert!(before > 1_700_000_000, "{before}");
    }
}
