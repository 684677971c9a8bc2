//! The wall clock, for the few places that need Unix time: an object's birth time as the origin stamps it,
//! the `Age` a viewer sees, and the control plane's report times.
//!
//! Everything else measures time with a monotonic clock, and the pure modules (`routing`, `wire`, `hls`,
//! `sim`) take time as an argument and never read a clock at all.

/// Milliseconds since the Unix epoch (0 if the system clock is set before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// How far the wall clock is into the current minute of Unix time. A node's mesh counts its time from the
/// start of that minute, so that nodes whose clocks agree probe their links at the same moments (see
/// `routing::probe`).
pub fn into_minute() -> std::time::Duration {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    std::time::Duration::from_nanos((since.as_nanos() % 60_000_000_000) as u64)
}
