//! Timestamp parsing on raw bytes.
//!
//! Hand-written rather than delegated to `jiff`'s parser: timestamps are parsed
//! once per log line, and the fixed layouts below (CLF, ISO 8601, epoch) parse
//! in a few nanoseconds without allocating, which matters at millions of lines
//! per second. `jiff` is still used for everything user-facing (formatting,
//! `--since`), where speed does not matter.

/// Milliseconds since the Unix epoch, UTC.
pub type EpochMs = i64;

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`). Valid for every year a log can contain.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses exactly `N` ASCII digits.
#[inline]
fn digits<const N: usize>(b: &[u8]) -> Option<u32> {
    if b.len() < N {
        return None;
    }
    let mut v = 0u32;
    for &c in &b[..N] {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u32::from(d);
    }
    Some(v)
}

/// Parses a month abbreviation (`Jan` … `Dec`, any case) into 1..=12.
#[inline]
pub fn month_abbrev(b: &[u8]) -> Option<u32> {
    if b.len() < 3 {
        return None;
    }
    let key = [
        b[0].to_ascii_lowercase(),
        b[1].to_ascii_lowercase(),
        b[2].to_ascii_lowercase(),
    ];
    Some(match &key {
        b"jan" => 1,
        b"feb" => 2,
        b"mar" => 3,
        b"apr" => 4,
        b"may" => 5,
        b"jun" => 6,
        b"jul" => 7,
        b"aug" => 8,
        b"sep" => 9,
        b"oct" => 10,
        b"nov" => 11,
        b"dec" => 12,
        _ => return None,
    })
}

/// Broken-down civil time, validated on conversion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
    /// Offset east of UTC, in seconds.
    pub offset_s: i32,
}

impl Civil {
    pub fn to_epoch_ms(self) -> Option<EpochMs> {
        if !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            || self.second > 60
            || self.millis > 999
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.offset_s);
        Some(secs * 1000 + i64::from(self.millis))
    }
}

/// Parses a `±hhmm` or `±hh:mm` offset; returns seconds east of UTC.
fn offset(b: &[u8]) -> Option<(i32, usize)> {
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hh = digits::<2>(&b[1..])?;
    let (mm, used) = if b.get(3) == Some(&b':') {
        (digits::<2>(&b[4..])?, 6)
    } else {
        (digits::<2>(&b[3..])?, 5)
    };
    if hh > 23 || mm > 59 {
        return None;
    }
    Some((sign * (hh as i32 * 3600 + mm as i32 * 60), used))
}

/// Common Log Format time: `10/Oct/2000:13:55:36 -0700` (the brackets are not
/// part of the field). The offset is optional (GoAccess-style logs drop it).
pub fn parse_clf(b: &[u8]) -> Option<EpochMs> {
    if b.len() < 20 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' {
        return None;
    }
    let mut c = Civil {
        day: digits::<2>(b)?,
        month: month_abbrev(&b[3..6])?,
        year: i64::from(digits::<4>(&b[7..])?),
        hour: digits::<2>(&b[12..])?,
        ..Civil::default()
    };
    if b[14] != b':' || b[17] != b':' {
        return None;
    }
    c.minute = digits::<2>(&b[15..])?;
    c.second = digits::<2>(&b[18..])?;
    let rest = &b[20..];
    if !rest.is_empty() {
        let rest = rest.strip_prefix(b" ")?;
        let (off, used) = offset(rest)?;
        if used != rest.len() {
            return None;
        }
        c.offset_s = off;
    }
    c.to_epoch_ms()
}

/// ISO 8601 / RFC 3339: `2000-10-10T13:55:36[.123][Z|+02:00|+0200]`, a space
/// allowed instead of `T`. Without a zone the time is taken as UTC.
pub fn parse_iso8601(b: &[u8]) -> Option<EpochMs> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let mut c = Civil {
        year: i64::from(digits::<4>(b)?),
        month: digits::<2>(&b[5..])?,
        day: digits::<2>(&b[8..])?,
        hour: digits::<2>(&b[11..])?,
        minute: digits::<2>(&b[14..])?,
        second: digits::<2>(&b[17..])?,
        ..Civil::default()
    };
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".").or_else(|| rest.strip_prefix(b",")) {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        c.millis = millis_of_fraction(&frac[..n]);
        rest = &frac[n..];
    }
    match rest {
        [] | [b'Z' | b'z'] => {}
        _ => {
            let (off, used) = offset(rest)?;
            if used != rest.len() {
                return None;
            }
            c.offset_s = off;
        }
    }
    c.to_epoch_ms()
}

/// Epoch time as nginx `$msec` (`1700000000.123`), plain seconds, or
/// milliseconds (13 or more integer digits).
pub fn parse_epoch(b: &[u8]) -> Option<EpochMs> {
    let (int, frac) = match memchr::memchr(b'.', b) {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    if int.is_empty() || int.len() > 16 || !int.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let whole: i64 = std::str::from_utf8(int).ok()?.parse().ok()?;
    let mut ms = 0i64;
    if let Some(frac) = frac {
        if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        ms = i64::from(millis_of_fraction(frac));
    }
    // Ten digits of seconds cover 1970..2286; more digits means milliseconds.
    if int.len() >= 12 && frac.is_none() {
        Some(whole)
    } else {
        whole.checked_mul(1000)?.checked_add(ms)
    }
}

/// The times a log line may claim: from 1970 to the end of 2099. A line
/// dated 9999, or 10^18 ms, is a corrupt or hostile line, and believing it
/// would stretch every timeline and window across millennia.
pub const PLAUSIBLE_MS: std::ops::Range<EpochMs> = 0..4_102_444_800_000;

/// `ms` if a log line may claim it.
pub fn plausible(ms: EpochMs) -> Option<EpochMs> {
    PLAUSIBLE_MS.contains(&ms).then_some(ms)
}

/// Any timestamp layout webfence understands, for JSON logs and CLI values.
pub fn parse_any(b: &[u8]) -> Option<EpochMs> {
    parse_clf(b)
        .or_else(|| parse_iso8601(b))
        .or_else(|| parse_epoch(b))
}

/// The input does not fit a [`Strptime`] pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch;

/// Converts fractional seconds (`$request_time`, Caddy's `duration`) to whole
/// microseconds; negative, infinite or NaN values are rejected.
pub fn seconds_to_us(secs: f64) -> Option<u64> {
    (secs.is_finite() && secs >= 0.0).then_some((secs * 1e6) as u64)
}

/// A strptime-like pattern, for GoAccess `--date-format` / `--time-format`.
///
/// Supports the specifiers GoAccess users actually write: `%d %e %m %b %h %B
/// %Y %y %H %M %S %f %z %s %T %D %F %%`; other characters must match literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strptime {
    pattern: Box<[u8]>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unsupported conversion '%{0}' in date/time format '{1}'")]
pub struct StrptimeError(pub char, pub String);

impl Strptime {
    pub fn new(pattern: &str) -> Result<Self, StrptimeError> {
        let expanded = pattern
            .replace("%T", "%H:%M:%S")
            .replace("%D", "%m/%d/%y")
            .replace("%F", "%Y-%m-%d");
        let b = expanded.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let c = *b.get(i + 1).unwrap_or(&b'%');
                if !b"demb hBYyHMSfzs%".contains(&c) || c == b' ' {
                    return Err(StrptimeError(c as char, pattern.to_string()));
                }
                i += 2;
            } else {
                i += 1;
            }
        }
        Ok(Strptime {
            pattern: expanded.into_bytes().into_boxed_slice(),
        })
    }

    /// Fills the fields of `civil` that the pattern names. Returns `Some(epoch
    /// ms)` directly when the pattern is `%s`.
    pub fn apply(&self, input: &[u8], civil: &mut Civil) -> Result<Option<EpochMs>, Mismatch> {
        let p = &self.pattern;
        let (mut i, mut j) = (0, 0);
        let mut epoch = None;
        while i < p.len() {
            if p[i] != b'%' {
                if input.get(j) != Some(&p[i]) {
                    return Err(Mismatch);
                }
                i += 1;
                j += 1;
                continue;
            }
            let spec = p[i + 1];
            i += 2;
            let rest = input.get(j..).ok_or(Mismatch)?;
            let num = |max: usize| leading_number(rest, max);
            match spec {
                b'd' | b'e' => {
                    // `%e` is space-padded; accept that padding for `%d` too.
                    let pad = usize::from(rest.first() == Some(&b' '));
                    let (v, n) = leading_number(&rest[pad..], 2)?;
                    civil.day = v;
                    j += pad + n;
                }
                b'm' => {
                    let (v, n) = num(2)?;
                    civil.month = v;
                    j += n;
                }
                b'b' | b'h' | b'B' => {
                    civil.month = month_abbrev(rest).ok_or(Mismatch)?;
                    let n = if spec == b'B' {
                        rest.iter().take_while(|c| c.is_ascii_alphabetic()).count()
                    } else {
                        3
                    };
                    j += n;
                }
                b'Y' => {
                    let (v, n) = num(4)?;
                    civil.year = i64::from(v);
                    j += n;
                }
                b'y' => {
                    let (v, n) = num(2)?;
                    civil.year = 2000 + i64::from(v);
                    j += n;
                }
                b'H' => {
                    let (v, n) = num(2)?;
                    civil.hour = v;
                    j += n;
                }
                b'M' => {
                    let (v, n) = num(2)?;
                    civil.minute = v;
                    j += n;
                }
                b'S' => {
                    let (v, n) = num(2)?;
                    civil.second = v;
                    j += n;
                }
                b'f' => {
                    let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
                    if n == 0 {
                        return Err(Mismatch);
                    }
                    civil.millis = millis_of_fraction(&rest[..n]);
                    j += n;
                }
                b'z' => {
                    if rest.first() == Some(&b'Z') {
                        j += 1;
                    } else {
                        let (off, used) = offset(rest).ok_or(Mismatch)?;
                        civil.offset_s = off;
                        j += used;
                    }
                }
                b's' => {
                    let n = rest
                        .iter()
                        .take_while(|c| c.is_ascii_digit() || **c == b'.')
                        .count();
                    epoch = Some(parse_epoch(&rest[..n]).ok_or(Mismatch)?);
                    j += n;
                }
                b'%' => {
                    if rest.first() != Some(&b'%') {
                        return Err(Mismatch);
                    }
                    j += 1;
                }
                _ => return Err(Mismatch),
            }
        }
        if j != input.len() {
            return Err(Mismatch);
        }
        Ok(epoch)
    }
}

/// Milliseconds from the digits after a decimal point (`5` → 500, `123456` → 123).
fn millis_of_fraction(frac: &[u8]) -> u32 {
    (0..3).fold(0, |ms, i| {
        ms * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'))
    })
}

/// Reads up to `max` leading ASCII digits; at least one is required.
fn leading_number(b: &[u8], max: usize) -> Result<(u32, usize), Mismatch> {
    let n = b
        .iter()
        .take(max)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if n == 0 {
        return Err(Mismatch);
    }
    Ok((
        b[..n]
            .iter()
            .fold(0u32, |a, d| a * 10 + u32::from(d - b'0')),
        n,
    ))
}

/// Formats epoch milliseconds as RFC 3339, in UTC or in the given zone.
pub fn format_rfc3339(ms: EpochMs, tz: Option<&jiff::tz::TimeZone>) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return ms.to_string();
    };
    match tz {
        // By hand for UTC: the daemon stamps three times into every ban's
        // evidence, and jiff's strftime costs about a microsecond each.
        None => {
            let secs = ms.div_euclid(1000);
            let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
            let t = secs.rem_euclid(86_400);
            if (0..=9999).contains(&y) {
                let mut out = *b"0000-00-00T00:00:00Z";
                let mut put = |at: usize, width: usize, mut v: u32| {
                    for i in (at..at + width).rev() {
                        out[i] = b'0' + (v % 10) as u8;
                        v /= 10;
                    }
                };
                put(0, 4, y as u32);
                put(5, 2, mo);
                put(8, 2, d);
                put(11, 2, (t / 3600) as u32);
                put(14, 2, (t / 60 % 60) as u32);
                put(17, 2, (t % 60) as u32);
                String::from_utf8_lossy(&out).into_owned()
            } else {
                ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
            }
        }
        Some(tz) => ts
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn utc_formatting_agrees_with_jiff(ms in -62_000_000_000_000i64..253_000_000_000_000i64) {
            let jiff_text = jiff::Timestamp::from_millisecond(ms)
                .unwrap()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            prop_assert_eq!(format_rfc3339(ms, None), jiff_text);
        }
    }

    #[test]
    fn clf_honours_offset() {
        // 13:55:36 at -0700 is 20:55:36 UTC.
        assert_eq!(
            parse_clf(b"10/Oct/2000:13:55:36 -0700"),
            Some(971_211_336_000)
        );
        assert_eq!(
            parse_clf(b"10/Oct/2000:20:55:36 +0000"),
            Some(971_211_336_000)
        );
        assert_eq!(parse_clf(b"10/Oct/2000:20:55:36"), Some(971_211_336_000));
    }

    #[test]
    fn clf_rejects_nonsense() {
        for bad in [
            &b"10/Foo/2000:13:55:36 -0700"[..],
            b"32/Oct/2000:13:55:36 -0700",
            b"29/Feb/2001:13:55:36 +0000",
            b"10/Oct/2000:25:55:36 -0700",
            b"10/Oct/2000:13:55:36 -07",
            b"10/Oct/2000:13:55:36 -0700x",
            b"",
            b"-",
        ] {
            assert_eq!(parse_clf(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse_clf(b"29/Feb/2000:13:55:36 +0000").is_some());
    }

    #[test]
    fn iso8601_variants() {
        let want = Some(971_211_336_000);
        assert_eq!(parse_iso8601(b"2000-10-10T20:55:36Z"), want);
        assert_eq!(parse_iso8601(b"2000-10-10T20:55:36"), want);
        assert_eq!(parse_iso8601(b"2000-10-10 20:55:36+00:00"), want);
        assert_eq!(parse_iso8601(b"2000-10-10T13:55:36-07:00"), want);
        assert_eq!(parse_iso8601(b"2000-10-10T13:55:36-0700"), want);
        assert_eq!(
            parse_iso8601(b"2000-10-10T20:55:36.5Z"),
            Some(971_211_336_500)
        );
        assert_eq!(
            parse_iso8601(b"2000-10-10T20:55:36.123456Z"),
            Some(971_211_336_123)
        );
        assert_eq!(parse_iso8601(b"2000-10-10T20:55:36.Z"), None);
        assert_eq!(parse_iso8601(b"2000-13-10T20:55:36Z"), None);
    }

    #[test]
    fn epoch_seconds_and_millis() {
        assert_eq!(parse_epoch(b"971211336"), Some(971_211_336_000));
        assert_eq!(parse_epoch(b"971211336.123"), Some(971_211_336_123));
        assert_eq!(parse_epoch(b"971211336123"), Some(971_211_336_123));
        assert_eq!(parse_epoch(b"1700000000.5"), Some(1_700_000_000_500));
        assert_eq!(parse_epoch(b"17x"), None);
        assert_eq!(parse_epoch(b"1."), None);
        assert_eq!(parse_epoch(b"99999999999999999999"), None);
    }

    #[test]
    fn strptime_goaccess_formats() {
        let d = Strptime::new("%d/%b/%Y").unwrap();
        let t = Strptime::new("%H:%M:%S").unwrap();
        let mut c = Civil::default();
        d.apply(b"10/Oct/2000", &mut c).unwrap();
        t.apply(b"20:55:36", &mut c).unwrap();
        assert_eq!(c.to_epoch_ms(), Some(971_211_336_000));
        assert!(d.apply(b"10/Oct/2000x", &mut c).is_err());
        let s = Strptime::new("%s").unwrap();
        assert_eq!(s.apply(b"971211336", &mut c), Ok(Some(971_211_336_000)));
        assert!(Strptime::new("%Q").is_err());
    }

    proptest! {
        #[test]
        fn clf_roundtrips_through_jiff(secs in 0i64..4_102_444_800, off_min in -720i32..=840) {
            let off_min = off_min - off_min % 15;
            let offset = jiff::tz::Offset::from_seconds(off_min * 60).unwrap();
            let ts = jiff::Timestamp::from_second(secs).unwrap();
            let text = ts.to_zoned(jiff::tz::TimeZone::fixed(offset)).strftime("%d/%b/%Y:%H:%M:%S %z").to_string();
            prop_assert_eq!(parse_clf(text.as_bytes()), Some(secs * 1000));
            let iso = ts.to_zoned(jiff::tz::TimeZone::fixed(offset)).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
            prop_assert_eq!(parse_iso8601(iso.as_bytes()), Some(secs * 1000));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_any(&b);
            let mut c = Civil::default();
            let _ = Strptime::new("%d/%b/%Y:%H:%M:%S %z").unwrap().apply(&b, &mut c);
        }
    }
}
