//! Tyk's expiry dates (`expiration`, a version's `expires`): `YYYY-MM-DD HH:MM` in UTC (Go's
//! layout `2006-01-02 15:04`), empty or `-1` for never; and the `x-tyk-api-expires` value,
//! Go's `time.RFC1123` in UTC.

use tollgate_session::time::civil_utc;

use crate::RuleError;

/// A moment an API or version stops being served, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expiry {
    /// Unix seconds.
    pub at: i64,
}

impl Expiry {
    /// Parses `field`'s value: `Ok(None)` for never (`""`, `"-1"`).
    ///
    /// # Errors
    /// A value that is not `YYYY-MM-DD HH:MM`: refusing beats serving an API the operator
    /// meant to expire.
    pub fn parse(field: &str, text: &str) -> Result<Option<Self>, RuleError> {
        let t = text.trim();
        if t.is_empty() || t == "-1" {
            return Ok(None);
        }
        parse_layout(t).map(|at| Some(Self { at })).ok_or_else(|| {
            RuleError::new(
                field,
                format!("`{t}` is not a date in Tyk's `YYYY-MM-DD HH:MM` form (UTC)"),
            )
        })
    }

    /// True once `now` (Unix seconds) is past the expiry.
    pub fn passed(self, now: i64) -> bool {
        now > self.at
    }

    /// The `x-tyk-api-expires` header value: `Mon, 02 Jan 2006 15:04:05 UTC`.
    pub fn http_date(self) -> String {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let (y, m, d, secs) = civil_utc(self.at);
        let weekday = DAYS[usize::try_from(self.at.div_euclid(86_400).rem_euclid(7)).unwrap_or(0)];
        let month = MONTHS[usize::try_from(m - 1).unwrap_or(0)];
        format!(
            "{weekday}, {d:02} {month} {y:04} {:02}:{:02}:{:02} UTC",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}

/// `YYYY-MM-DD HH:MM` → Unix seconds, with Go's range checks.
fn parse_layout(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() != 16 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, m, d, hh, mm) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
    );
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) || hh > 23 || mm > 59 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's days-from-civil.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tyks_layout_in_utc() {
        let e = Expiry::parse("expiration", "2006-01-02 15:04")
            .unwrap()
            .unwrap();
        assert_eq!(e.at, 1_136_214_240);
        assert_eq!(e.http_date(), "Mon, 02 Jan 2006 15:04:00 UTC");
        let e = Expiry::parse("x", "2024-02-29 00:00").unwrap().unwrap();
        assert_eq!(e.http_date(), "Thu, 29 Feb 2024 00:00:00 UTC");
        assert_eq!(
            Expiry::parse("x", "1970-01-01 00:00").unwrap().unwrap().at,
            0
        );
    }

    #[test]
    fn never_and_refused() {
        assert_eq!(Expiry::parse("x", "").unwrap(), None);
        assert_eq!(Expiry::parse("x", " -1 ").unwrap(), None);
        for bad in [
            "2023-02-29 00:00",
            "2024-13-01 00:00",
            "2024-01-01 24:00",
            "2024-01-01T00:00",
            "2024-01-01",
            "2024-01-01 00:00:00",
            "+024-01-01 00:00",
            "tomorrow",
        ] {
            let err = Expiry::parse("expiration", bad).unwrap_err();
            assert_eq!(err.field, "expiration", "{bad}");
        }
    }

    #[test]
    fn passed_is_strictly_after() {
        let e = Expiry { at: 100 };
        assert!(!e.passed(100));
        assert!(e.passed(101));
    }
}
