//! The wall clock, read in one place. Cores never read it (time is passed in); drivers stamp
//! reports, tokens and the DNS serial with it. A clock before 1970 reads as 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch.
pub fn unix_s() -> u64 {
    unix_ms() / 1000
}
