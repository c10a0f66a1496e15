//! Kubernetes' HumanDuration (apimachinery `duration.HumanDuration`), used for AGE columns,
//! RESTARTS "(Ns ago)" and event ages. See shared/spec/pod-lifecycle.md §3.3.
//!
//! kubectl never recomputes these strings: the API server formats them inside Table rows, so the
//! exact breakpoints (120s, 10m, 3h, 8h, 48h, 8d, 2y, 8y) are observable and must not drift.
//! Also Go-style duration parsing ([`parse_duration`]) for flags and annotations.

use jiff::{SignedDuration, Timestamp};

const MINUTE: i64 = 60;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const YEAR_DAYS: i64 = 365;

/// Formats an elapsed duration as kubectl prints it (`45s`, `2m10s`, `3h5m`, `26h`, `3d4h`, ...).
///
/// Sub-second parts are truncated, never rounded. A clock skew of up to (but excluding) two
/// seconds into the future prints `0s`; anything further in the future prints `<invalid>`.
pub fn human_duration(d: SignedDuration) -> String {
    // `as_secs` truncates toward zero, like Go's int(d.Seconds()).
    let secs = d.as_secs();
    if secs < -1 {
        return "<invalid>".to_string();
    }
    if secs < 0 {
        return "0s".to_string();
    }
    if secs < 2 * MINUTE {
        return format!("{secs}s");
    }
    let minutes = secs / MINUTE;
    if minutes < 10 {
        return with_remainder(minutes, "m", secs % MINUTE, "s");
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = secs / HOUR;
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = secs / DAY;
    if days < 8 {
        return with_remainder(days, "d", hours % 24, "h");
    }
    if days < 2 * YEAR_DAYS {
        return format!("{days}d");
    }
    let years = days / YEAR_DAYS;
    if years < 8 {
        return with_remainder(years, "y", days % YEAR_DAYS, "d");
    }
    format!("{years}y")
}

/// `"{major}{major_unit}{minor}{minor_unit}"`, dropping the minor part when it is zero.
fn with_remainder(major: i64, major_unit: &str, minor: i64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}

/// Age of `then` at `now`; `<unknown>` when `then` is absent.
pub fn age(now: Timestamp, then: Option<Timestamp>) -> String {
    match then {
        None => "<unknown>".to_string(),
        Some(t) => human_duration(now.duration_since(t)),
    }
}

/// A Go-style duration (`1h2m3s`, `500ms`, `1.5s`) or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<SignedDuration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return seconds(secs, s);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("{s:?} is not a duration (like 500ms, 10s, 2m)"));
        }
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("{s:?} is not a duration (like 500ms, 10s, 2m)"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m or h)")),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    seconds(total, s)
}

fn seconds(secs: f64, s: &str) -> Result<SignedDuration, String> {
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is not a duration between 0s and 1e9s"));
    }
    Ok(SignedDuration::from_millis((secs * 1000.0).round() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("500ms"),
            Ok(SignedDuration::from_millis(500))
        );
        assert_eq!(parse_duration("1m30s"), Ok(SignedDuration::from_secs(90)));
        assert_eq!(parse_duration("2"), Ok(SignedDuration::from_secs(2)));
        assert_eq!(
            parse_duration("1.5s"),
            Ok(SignedDuration::from_millis(1500))
        );
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("").is_err());
    }

    fn hd(secs: i64) -> String {
        human_duration(SignedDuration::from_secs(secs))
    }

    #[test]
    fn seconds_range() {
        assert_eq!(hd(0), "0s");
        assert_eq!(hd(45), "45s");
        assert_eq!(hd(119), "119s");
        assert_eq!(human_duration(SignedDuration::from_millis(119_999)), "119s");
    }

    #[test]
    fn minutes_range() {
        assert_eq!(hd(120), "2m");
        assert_eq!(hd(130), "2m10s");
        assert_eq!(hd(599), "9m59s");
        assert_eq!(hd(600), "10m");
        assert_eq!(hd(610), "10m");
        assert_eq!(hd(179 * 60 + 59), "179m");
    }

    #[test]
    fn hours_range() {
        assert_eq!(hd(3 * HOUR), "3h");
        assert_eq!(hd(3 * HOUR + 5 * MINUTE + 30), "3h5m");
        assert_eq!(hd(8 * HOUR), "8h");
        assert_eq!(hd(8 * HOUR + 59 * MINUTE), "8h");
        assert_eq!(hd(26 * HOUR), "26h");
        assert_eq!(hd(47 * HOUR + 59 * MINUTE), "47h");
    }

    #[test]
    fn days_and_years() {
        assert_eq!(hd(48 * HOUR), "2d");
        assert_eq!(hd(3 * DAY + 4 * HOUR), "3d4h");
        assert_eq!(hd(7 * DAY + 23 * HOUR), "7d23h");
        assert_eq!(hd(8 * DAY), "8d");
        assert_eq!(hd(8 * DAY + 5 * HOUR), "8d");
        assert_eq!(hd(200 * DAY), "200d");
        assert_eq!(hd(729 * DAY), "729d");
        assert_eq!(hd(730 * DAY), "2y");
        assert_eq!(hd(735 * DAY), "2y5d");
        assert_eq!(hd(8 * 365 * DAY - DAY), "7y364d");
        assert_eq!(hd(8 * 365 * DAY), "8y");
        assert_eq!(hd(20 * 365 * DAY + 100 * DAY), "20y");
    }

    #[test]
    fn negative() {
        assert_eq!(human_duration(SignedDuration::from_millis(-500)), "0s");
        assert_eq!(hd(-1), "0s");
        assert_eq!(human_duration(SignedDuration::from_millis(-1999)), "0s");
        assert_eq!(hd(-2), "<invalid>");
        assert_eq!(hd(-3600), "<invalid>");
    }

    #[test]
    fn age_helper() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let then: Timestamp = "2026-01-01T11:57:50Z".parse().unwrap();
        assert_eq!(age(now, Some(then)), "2m10s");
        assert_eq!(age(now, None), "<unknown>");
    }
}
