//! Human-written quantities shared by the command line and the config file:
//! durations, sizes and decay rates.

/// The hint every duration error ends with, so the config file, the
/// command line and the socket all say the same.
const DURATION_HINT: &str =
    "expected a number with a unit, such as 90s, 15m, 1h30m, 2h, 1d, 1w, or 10 seconds, 5 minutes";

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
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = |why: String| format!("invalid duration '{}': {why}; {DURATION_HINT}", text.trim());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad("it is empty".into()));
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad(format!("'{rest}' does not start with a number")));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("the number is too large".into()))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let mult = unit_seconds(&unit.to_ascii_lowercase())
            .ok_or_else(|| bad(format!("unknown unit '{unit}'")))?;
        total = n
            .checked_mul(mult)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| bad("it is too long".into()))?;
        rest = rest[unit_len..].trim_start();
    }
    if total == 0 || total > 100 * 365 * 86_400 {
        return Err(bad(
            "it must be greater than zero and at most 100 years".into()
        ));
    }
    Ok(total)
}

/// `256MB`, `1GiB`, `512k`, `1048576` → bytes. Decimal and binary units are
/// both taken as binary: a memory cap is never meant to the byte.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size '{text}': expected a number with an optional unit K, M or G (such as 256MB)")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size '{text}': unknown unit '{other}' (use K, M or G)"
            ));
        }
    };
    n.checked_mul(mult)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("invalid size '{text}': must be greater than zero"))
}

/// A decay rate such as `3/1d` (3 points a day, mod_security's
/// `deprecatevar:IP.spam=3/86400` is `3/86400`) → points per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let err = || format!("invalid rate '{text}': expected POINTS/DURATION such as 3/1d or 3/86400");
    let (points, per) = text.split_once('/').ok_or_else(err)?;
    let points: f64 = points.trim().parse().map_err(|_| err())?;
    if !points.is_finite() || points < 0.0 {
        return Err(err());
    }
    let secs = parse_duration(per).map_err(|e| format!("invalid rate '{text}': {e}"))?;
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
            let e = parse_duration(bad).unwrap_err();
            assert!(e.ends_with(DURATION_HINT), "{bad}: {e}");
        }
        assert!(
            parse_duration("5y")
                .unwrap_err()
                .contains("unknown unit 'y'")
        );
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999w").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(
            parse_size("12 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("3/1d"), Ok(3.0 / 86_400.0));
        assert_eq!(parse_rate("3/86400"), Ok(3.0 / 86_400.0));
        assert!(parse_rate("3").is_err());
        assert!(parse_rate("-1/1h").is_err());
        assert!(parse_rate("x/1h").is_err());
    }
}
