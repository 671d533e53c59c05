//! Parsers for command-line values (durations, points in time, formats).

use jiff::tz::TimeZone;

use crate::log::FormatSpec;
use crate::log::time::EpochMs;

pub use crate::units::parse_duration;

/// A point in time for `--since`/`--until`: an absolute time (zone-less
/// times are in `zone`), epoch seconds, or a duration meaning "that long ago".
pub fn parse_time(text: &str, zone: &TimeZone, now: jiff::Timestamp) -> Result<EpochMs, String> {
    let t = text.trim();
    if let Ok(secs) = parse_duration(t) {
        if t.ends_with(|c: char| c.is_ascii_alphabetic()) {
            return Ok(now.as_millisecond() - (secs as i64).saturating_mul(1000));
        }
    }
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    if let Ok(dt) = t.parse::<jiff::civil::DateTime>() {
        if let Ok(z) = dt.to_zoned(zone.clone()) {
            return Ok(z.timestamp().as_millisecond());
        }
    }
    if let Ok(date) = t.parse::<jiff::civil::Date>() {
        if let Ok(z) = date.to_zoned(zone.clone()) {
            return Ok(z.timestamp().as_millisecond());
        }
    }
    if let Some(ms) = crate::log::time::parse_any(t.as_bytes()) {
        return Ok(ms);
    }
    Err(format!(
        "invalid time '{text}': expected a date or time such as 2024-05-01, '2024-05-01 13:00', 2024-05-01T13:00:00Z, epoch seconds, or a duration ago such as 2h"
    ))
}

/// `--format` values: `auto` or a predefined format.
pub fn parse_format(text: &str) -> Result<FormatSpec, crate::log::UnknownFormat> {
    FormatSpec::from_name(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let utc = TimeZone::UTC;
        assert_eq!(parse_time("2h", &utc, now), Ok(1_000_000_000 - 7_200_000));
        assert_eq!(parse_time("1970-01-02", &utc, now), Ok(86_400_000));
        assert_eq!(parse_time("1970-01-02 01:00", &utc, now), Ok(90_000_000));
        assert_eq!(
            parse_time("1970-01-02T01:00:00+01:00", &utc, now),
            Ok(86_400_000)
        );
        assert_eq!(parse_time("86400", &utc, now), Ok(86_400_000));
        let plus2 = TimeZone::fixed(jiff::tz::offset(2));
        assert_eq!(parse_time("1970-01-02 02:00", &plus2, now), Ok(86_400_000));
        assert!(
            parse_time("yesterday", &utc, now)
                .unwrap_err()
                .starts_with("invalid time 'yesterday'")
        );
    }

    #[test]
    fn formats() {
        assert_eq!(parse_format("auto"), Ok(FormatSpec::Auto));
        assert_eq!(
            parse_format("vhost_combined"),
            Ok(FormatSpec::Preset(crate::log::Preset::VhostCombined))
        );
        assert!(
            parse_format("apache")
                .unwrap_err()
                .to_string()
                .starts_with("unknown format 'apache' (expected auto, json, ")
        );
    }
}
