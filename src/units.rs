//! Human-written quantities shared by the command line and the config file:
//! durations, sizes and decay rates.

/// The hint every duration error ends with, so the config file, the
/// command line and the socket all say the same.
const DURATION_HINT: &str =
    "expected a number with a unit, such as 90s, 15m, 1h30m, 2h, 1d, 1w, or 10 seconds, 5 minutes";

/// Why a quantity was refused; its text is what the config file, the
/// command line and the socket print.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid duration '{text}': {fault}; {DURATION_HINT}")]
    Duration { text: String, fault: DurationFault },
    #[error("invalid size '{text}': {fault}")]
    Size { text: String, fault: SizeFault },
    #[error("invalid rate '{text}': expected POINTS/DURATION such as 3/1d or 3/86400")]
    RateShape { text: String },
    #[error("invalid rate '{text}': {duration}")]
    RateDuration {
        text: String,
        duration: Box<UnitError>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationFault {
    #[error("it is empty")]
    Empty,
    #[error("'{0}' does not start with a number")]
    NoNumber(String),
    #[error("the number is too large")]
    NumberTooLarge,
    #[error("unknown unit '{0}'")]
    UnknownUnit(String),
    #[error("it is too long")]
    TooLong,
    #[error("it must be greater than zero and at most 100 years")]
    OutOfRange,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeFault {
    #[error("expected a number with an optional unit K, M or G (such as 256MB)")]
    NoNumber,
    #[error("unknown unit '{0}' (use K, M or G)")]
    UnknownUnit(String),
    #[error("must be greater than zero")]
    Zero,
}

fn unit_seconds(unit: &str) -> Option<u64> {
    Some(match unit {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => return None,
    })
}

/// `90`, `90s`, `15m`, `1h30m`, `1h 30m`, `10 seconds`, `5 minutes`,
/// `1d`, `1w` → seconds. A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<u64, UnitError> {
    let bad = |fault| UnitError::Duration {
        text: text.trim().to_string(),
        fault,
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad(DurationFault::Empty));
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad(DurationFault::NoNumber(rest.to_string())));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad(DurationFault::NumberTooLarge))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let mult = unit_seconds(&unit.to_ascii_lowercase())
            .ok_or_else(|| bad(DurationFault::UnknownUnit(unit.to_string())))?;
        total = n
            .checked_mul(mult)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| bad(DurationFault::TooLong))?;
        rest = rest[unit_len..].trim_start();
    }
    if total == 0 || total > 100 * 365 * 86_400 {
        return Err(bad(DurationFault::OutOfRange));
    }
    Ok(total)
}

/// `256MB`, `1GiB`, `512k`, `1048576` → bytes. Decimal and binary units are
/// both taken as binary: a memory cap is never meant to the byte.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let bad = |fault| UnitError::Size {
        text: text.to_string(),
        fault,
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad(SizeFault::NoNumber))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(bad(SizeFault::UnknownUnit(other.to_string()))),
    };
    n.checked_mul(mult)
        .filter(|b| *b > 0)
        .ok_or_else(|| bad(SizeFault::Zero))
}

/// A decay rate such as `3/1d` (3 points a day, mod_security's
/// `deprecatevar:IP.spam=3/86400` is `3/86400`) → points per second.
pub fn parse_rate(text: &str) -> Result<f64, UnitError> {
    let shape = || UnitError::RateShape {
        text: text.to_string(),
    };
    let (points, per) = text.split_once('/').ok_or_else(shape)?;
    let points: f64 = points.trim().parse().map_err(|_| shape())?;
    if !points.is_finite() || points < 0.0 {
        return Err(shape());
    }
    let secs = parse_duration(per).map_err(|e| UnitError::RateDuration {
        text: text.to_string(),
        duration: Box::new(e),
    })?;
    Ok(points / secs as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("1h 30m"), Ok(5400));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("10 seconds"), Ok(10));
        assert_eq!(parse_duration("5 minutes"), Ok(300));
        assert_eq!(parse_duration("2 Hours"), Ok(7200));
        for bad in ["0", "", "h", "1h x", "5y", "1.5h", "-3s"] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.ends_with(DURATION_HINT), "{bad}: {e}");
        }
        assert_eq!(
            parse_duration(" 5y ").unwrap_err().to_string(),
            format!("invalid duration '5y': unknown unit 'y'; {DURATION_HINT}")
        );
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999w").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(
            parse_size("12 parsecs").unwrap_err().to_string(),
            "invalid size '12 parsecs': unknown unit 'parsecs' (use K, M or G)"
        );
        assert_eq!(
            parse_size("0").unwrap_err().to_string(),
            "invalid size '0': must be greater than zero"
        );
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("3/1d"), Ok(3.0 / 86_400.0));
        assert_eq!(parse_rate("3/86400"), Ok(3.0 / 86_400.0));
        assert_eq!(
            parse_rate("3").unwrap_err().to_string(),
            "invalid rate '3': expected POINTS/DURATION such as 3/1d or 3/86400"
        );
        assert_eq!(
            parse_rate("3/0").unwrap_err().to_string(),
            format!(
                "invalid rate '3/0': invalid duration '0': it must be greater than zero and at most 100 years; {DURATION_HINT}"
            )
        );
        assert!(parse_rate("-1/1h").is_err());
        assert!(parse_rate("x/1h").is_err());
    }
}
