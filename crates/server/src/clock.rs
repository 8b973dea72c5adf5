//! The one place that reads the system clock; everything else takes a [`Clock`].

use latchkey_core::UnixTime;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixTime;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(
        clippy::disallowed_methods,
        reason = "the single implementation of Clock"
    )]
    fn now(&self) -> UnixTime {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
    }
}
