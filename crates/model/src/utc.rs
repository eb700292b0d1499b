//! UTC civil time without a time-zone database: what budgets (day, week, month) and the usage
//! reports need. Times are milliseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

pub const DAY_MS: i64 = 86_400_000;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Days since 1970-01-01 for a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (y, m) = if month <= 2 { (year - 1, month as i64 + 9) } else { (year, month as i64 - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    /// The start of the period that contains `ms` (weeks start on Monday).
    pub fn start(self, ms: i64) -> i64 {
        let days = ms.div_euclid(DAY_MS);
        match self {
            Period::Day => days * DAY_MS,
            // 1970-01-01 was a Thursday: Monday is 3 days before.
            Period::Week => (days - (days + 3).rem_euclid(7)) * DAY_MS,
            Period::Month => {
                let (y, m, _) = civil_from_days(days);
                days_from_civil(y, m, 1) * DAY_MS
            }
        }
    }

    /// The start of the next period: when a budget of this period resets.
    pub fn next(self, ms: i64) -> i64 {
        let start = self.start(ms);
        match self {
            Period::Day => start + DAY_MS,
            Period::Week => start + 7 * DAY_MS,
            Period::Month => {
                let (y, m, _) = civil_from_days(start.div_euclid(DAY_MS));
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) * DAY_MS
            }
        }
    }
}

/// `2026-11-29T10:05:19Z`
pub fn iso(ms: i64) -> String {
    let (y, mo, d) = civil_from_days(ms.div_euclid(DAY_MS));
    let secs = ms.rem_euclid(DAY_MS) / 1000;
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Parses `--since` values: a date `2026-11-01`, a timestamp `2026-11-01T12:00:00Z`, or an age
/// such as `90m`, `12h`, `7d`.
pub fn parse_since(s: &str, now: i64) -> Option<i64> {
    let s = s.trim();
    if let Some(n) = s.strip_suffix('d').and_then(|n| n.parse::<i64>().ok()) {
        return Some(now - n * DAY_MS);
    }
    if let Some(n) = s.strip_suffix('h').and_then(|n| n.parse::<i64>().ok()) {
        return Some(now - n * 3_600_000);
    }
    if let Some(n) = s.strip_suffix('m').and_then(|n| n.parse::<i64>().ok()) {
        return Some(now - n * 60_000);
    }
    let (date, time) = s.split_once('T').unwrap_or((s, ""));
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, m, d) * DAY_MS;
    if !time.is_empty() {
        let hms: Vec<i64> = time.trim_end_matches('Z').split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
        ms += hms.first()? * 3_600_000 + hms.get(1).unwrap_or(&0) * 60_000 + hms.get(2).unwrap_or(&0) * 1000;
    }
    Some(ms)
}

/// Resolves `--since` words and values to a time.
pub fn since(value: Option<&str>, now: i64) -> Result<i64, String> {
    match value.unwrap_or("today") {
        "today" => Ok(Period::Day.start(now)),
        "week" => Ok(Period::Week.start(now)),
        "month" => Ok(Period::Month.start(now)),
        other => parse_since(other, now)
            .ok_or_else(|| format!("since: {other:?} is not today, week, month, a date (2026-11-01) or an age (7d)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip_across_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2026, 11, 29), 20_786);
    }

    #[test]
    fn periods_start_on_midnight_monday_and_the_first() {
        let t = parse_since("2026-11-29T10:05:19Z", 0).unwrap(); // a Sunday
        assert_eq!(iso(Period::Day.start(t)), "2026-11-29T00:00:00Z");
        assert_eq!(iso(Period::Week.start(t)), "2026-11-23T00:00:00Z");
        assert_eq!(iso(Period::Month.start(t)), "2026-11-01T00:00:00Z");
        assert_eq!(iso(Period::Month.next(t)), "2026-12-01T00:00:00Z");
        assert_eq!(iso(Period::Month.next(parse_since("2026-12-31", 0).unwrap())), "2027-01-01T00:00:00Z");
        assert_eq!(iso(Period::Week.next(t)), "2026-11-30T00:00:00Z");
    }

    #[test]
    fn since_accepts_dates_times_and_ages() {
        let now = 10 * DAY_MS;
        assert_eq!(parse_since("7d", now), Some(3 * DAY_MS));
        assert_eq!(parse_since("1970-01-02", now), Some(DAY_MS));
        assert_eq!(parse_since("1970-01-01T01:00:00Z", now), Some(3_600_000));
        assert_eq!(parse_since("yesterday", now), None);
        assert_eq!(parse_since("2026-13-01", now), None);
        assert_eq!(since(Some("today"), now), Ok(now));
        assert_eq!(since(None, now + 5), Ok(now));
        assert!(since(Some("yesterday"), now).unwrap_err().contains("an age (7d)"));
    }
}
