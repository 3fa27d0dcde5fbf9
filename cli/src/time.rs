//! Event and flow timestamps as the CLI prints them.

use std::time::Duration;

/// A protobuf `Timestamp`: the agent API's (prost's well-known type) or a
/// flow's (pbjson's, which also has a JSON form).
pub trait Timestamp {
    fn seconds_nanos(&self) -> (i64, i32);
}

impl Timestamp for prost_types::Timestamp {
    fn seconds_nanos(&self) -> (i64, i32) {
        (self.seconds, self.nanos)
    }
}

impl Timestamp for weir_observer::proto::Timestamp {
    fn seconds_nanos(&self) -> (i64, i32) {
        (self.seconds, self.nanos)
    }
}

fn since_epoch(t: &impl Timestamp) -> Duration {
    let (seconds, nanos) = t.seconds_nanos();
    Duration::new(seconds.max(0) as u64, nanos.max(0) as u32)
}

/// Time of day (UTC) to the millisecond, as Hubble's and Cilium's lines
/// show it: `HH:MM:SS.mmm`.
pub fn clock(t: &impl Timestamp) -> String {
    let since = since_epoch(t);
    let secs = since.as_secs();
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", since.subsec_millis())
}

/// Seconds and nanoseconds since the epoch, for JSON: `SECS.NNNNNNNNN`.
pub fn json(t: &Option<impl Timestamp>) -> Option<String> {
    t.as_ref().map(|t| {
        let (seconds, nanos) = t.seconds_nanos();
        format!("{seconds}.{nanos:09}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_and_json_forms() {
        use weir_observer::proto::Timestamp;
        let t = Timestamp {
            seconds: 3661,
            nanos: 5_000_000,
        };
        assert_eq!(clock(&t), "01:01:01.005");
        assert_eq!(json(&Some(t)).as_deref(), Some("3661.005000000"));
        assert_eq!(json(&None::<Timestamp>), None);
        let day_later = Timestamp {
            seconds: 86_400 + 59,
            nanos: 999_999_999,
        };
        assert_eq!(clock(&day_later), "00:00:59.999");
    }
}
