//! Text formats the kubelet's messages are built from: Go's `time.Duration` printing, Go's `%q`
//! quoting and `format.Pod` (`NAME_NAMESPACE(UID)`).
//!
//! Clients match on these strings (`back-off 1m20s restarting failed container=…`), so the Go
//! spellings are reproduced here once rather than approximated at each call site.

use std::fmt::Write;

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::Pod;

/// A duration as Go's `Duration.String()` prints it: `0s`, `796ms`, `1.393s`, `1m20s`, `5m0s`,
/// `2h0m0s`; sub-second values use `ms`, `µs` or `ns`.
pub fn go_duration(d: SignedDuration) -> String {
    let mut out = String::new();
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 0 {
        out.push('-');
    }
    let u = nanos.unsigned_abs();
    if u < 1_000_000_000 {
        let (unit, scale) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        push_decimal(&mut out, u / scale, u % scale, scale);
        out.push_str(unit);
        return out;
    }
    let secs = u / 1_000_000_000;
    let frac = u % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        let _ = write!(out, "{h}h{m}m");
    } else if secs >= 60 {
        let _ = write!(out, "{m}m");
    }
    push_decimal(&mut out, s, frac, 1_000_000_000);
    out.push('s');
    out
}

/// Writes `int[.frac]` where `frac` is a fraction of `scale`, without trailing zeros.
fn push_decimal(out: &mut String, int: u128, frac: u128, scale: u128) {
    let _ = write!(out, "{int}");
    if frac == 0 {
        return;
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    out.push('.');
    out.push_str(digits.trim_end_matches('0'));
}

/// A duration truncated to whole milliseconds (the kubelet prints pull times that way).
pub fn truncate_to_millis(d: SignedDuration) -> SignedDuration {
    SignedDuration::from_millis(d.as_millis() as i64)
}

/// Go's `%q` for a string: double quotes, with `"` and `\` escaped and control characters
/// written as escapes.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The kubelet's pod identifier `NAME_NAMESPACE(UID)`.
pub fn pod_id(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or(""),
        m.namespace.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> String {
        go_duration(SignedDuration::from_secs(s))
    }

    #[test]
    fn go_durations() {
        assert_eq!(secs(0), "0s");
        assert_eq!(secs(10), "10s");
        assert_eq!(secs(40), "40s");
        assert_eq!(secs(80), "1m20s");
        assert_eq!(secs(160), "2m40s");
        assert_eq!(secs(300), "5m0s");
        assert_eq!(secs(7200), "2h0m0s");
        assert_eq!(go_duration(SignedDuration::from_millis(1393)), "1.393s");
        assert_eq!(go_duration(SignedDuration::from_millis(796)), "796ms");
        assert_eq!(go_duration(SignedDuration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(SignedDuration::from_nanos(313)), "313ns");
        assert_eq!(go_duration(SignedDuration::from_micros(2)), "2µs");
        assert_eq!(go_duration(SignedDuration::from_millis(62_500)), "1m2.5s");
        assert_eq!(go_duration(SignedDuration::from_secs(-5)), "-5s");
        assert_eq!(
            truncate_to_millis(SignedDuration::from_nanos(1_393_999_999)),
            SignedDuration::from_millis(1393)
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(go_quote("nginx:1.25"), "\"nginx:1.25\"");
        assert_eq!(go_quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }
}
