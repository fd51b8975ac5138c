//! Scheduled reconciliation (`[[schedule]]`): which link or route is verified, and when.
//! A schedule runs either every fixed duration or at the times a five-field cron expression
//! names (minute hour day-of-month month day-of-week, in UTC).

use std::time::Duration;

/// One `[[schedule]]`: verify `verify` (a link `from->to` or a route) at `when`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// A sync link's name (`legacy->students`) or a route's (every link of its service).
    pub verify: String,
    pub when: When,
    /// Kinds compared (`student`, `student.*`); empty: every kind the links carry.
    pub types: Vec<String>,
    /// Entities compared per second at most, so a run is gentle on production.
    pub rate: Option<u32>,
}

/// When a schedule runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// This long after the previous run started.
    Every(Duration),
    /// At each time the expression matches (UTC).
    Cron(Cron),
}

impl When {
    /// The first time (Unix ms) after `after_ms` that the schedule is due, given the
    /// previous run started at `last_ms` (`None`: never ran, so due at once).
    pub fn next_after(&self, last_ms: Option<i64>, after_ms: i64) -> i64 {
        match self {
            When::Every(every) => {
                let every = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1);
                match last_ms {
                    None => after_ms,
                    Some(last) if last + every > after_ms => last + every,
                    // Missed runs are not made up: the next one is due now.
                    Some(_) => after_ms,
                }
            }
            When::Cron(cron) => cron.next_after(last_ms.unwrap_or(after_ms).max(after_ms)),
        }
    }
}

impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            When::Every(d) => write!(f, "every {}", crate::format_duration(*d)),
            When::Cron(c) => write!(f, "cron \"{}\"", c.text),
        }
    }
}

/// A five-field cron expression, UTC: `*`, `*/N`, `A`, `A-B`, `A-B/N` and lists of them;
/// day of week 0-7 (0 and 7 are Sunday). As in cron, when both day fields are restricted,
/// a day matching either is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// Days searched for the next match (a `30 2 29 2 *` waits for a leap year).
const CRON_HORIZON_DAYS: i64 = 366 * 8;

impl Cron {
    /// Parses `text`, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields.as_slice() else {
            return Err(format!(
                "a cron expression has five fields (minute hour day month weekday), this one {}",
                fields.len()
            ));
        };
        let mut weekdays = field(weekday, 0, 7, "weekday")?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        let cron = Self {
            text: fields.join(" "),
            minutes: field(minute, 0, 59, "minute")?,
            hours: field(hour, 0, 23, "hour")?,
            days: field(day, 1, 31, "day")?,
            months: field(month, 1, 12, "month")?,
            weekdays,
            days_restricted: *day != "*",
            weekdays_restricted: *weekday != "*",
        };
        let first = cron.next_after(0);
        if first == i64::MAX {
            return Err(format!("`{text}` never matches a date"));
        }
        Ok(cron)
    }

    fn day_matches(&self, day: u32, month: u32, weekday: u32) -> bool {
        if self.months & (1 << month) == 0 {
            return false;
        }
        let by_day = self.days & (1 << day) != 0;
        let by_weekday = self.weekdays & (1 << weekday) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => by_day || by_weekday,
            _ => by_day && by_weekday,
        }
    }

    /// The first matching minute strictly after `after_ms` (Unix ms), or `i64::MAX` when
    /// none comes within the search horizon.
    pub fn next_after(&self, after_ms: i64) -> i64 {
        let start_minute = after_ms.div_euclid(60_000) + 1;
        let first_day = start_minute.div_euclid(1440);
        for day in first_day..first_day + CRON_HORIZON_DAYS {
            let (_, month, dom) = civil_from_days(day);
            // 1970-01-01 was a Thursday.
            let weekday = (day + 4).rem_euclid(7) as u32;
            if !self.day_matches(dom, month, weekday) {
                continue;
            }
            let from = if day == first_day {
                start_minute.rem_euclid(1440)
            } else {
                0
            };
            for minute_of_day in from..1440 {
                let (h, m) = (minute_of_day / 60, minute_of_day % 60);
                if self.hours & (1 << h) != 0 && self.minutes & (1 << m) != 0 {
                    return (day * 1440 + minute_of_day) * 60_000;
                }
            }
        }
        i64::MAX
    }
}

/// One field's values as a bit set.
fn field(raw: &str, min: u32, max: u32, name: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("{name} field `{raw}`: {why}");
    let mut set = 0u64;
    for part in raw.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad("a step is a number above zero"))?;
                (range, step)
            }
            None => (part, 1),
        };
        let number = |s: &str| {
            s.parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    bad(&format!(
                        "expected *, a number from {min} to {max}, A-B or */N"
                    ))
                })
        };
        let (low, high) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None if part.contains('/') => (number(r)?, max),
                None => {
                    let n = number(r)?;
                    (n, n)
                }
            },
        };
        if low > high {
            return Err(bad("a range runs from low to high"));
        }
        let mut v = low;
        while v <= high {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

/// (year, month 1-12, day 1-31) of a day counted from 1970-01-01 (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to a date (month 1-12, day 1-31): the inverse of
/// [`civil_from_days`].
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC date and time.
    fn at(y: i64, mo: i64, d: i64, h: i64, mi: i64) -> i64 {
        (days_from_civil(y, mo, d) * 1440 + h * 60 + mi) * 60_000
    }

    #[test]
    fn cron_finds_the_next_matching_minute() {
        let now = at(2026, 11, 30, 20, 47);
        for (expr, next) in [
            ("* * * * *", at(2026, 11, 30, 20, 48)),
            ("*/15 * * * *", at(2026, 11, 30, 21, 0)),
            ("0 3 * * *", at(2026, 12, 1, 3, 0)),
            ("30 2 1 * *", at(2026, 12, 1, 2, 30)),
            // 2026-12-06 is a Sunday; 0 and 7 both name it.
            ("0 0 * * 0", at(2026, 12, 6, 0, 0)),
            ("0 0 * * 7", at(2026, 12, 6, 0, 0)),
            ("0 9 * * 1-5", at(2026, 12, 1, 9, 0)),
            ("0 0 29 2 *", at(2028, 2, 29, 0, 0)),
            // Both day fields restricted: either matches (the 1st, or a Friday first).
            ("0 0 15 * 5", at(2026, 12, 4, 0, 0)),
            ("5,10 20-21 * * *", at(2026, 11, 30, 21, 5)),
        ] {
            let cron = Cron::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(cron.next_after(now), next, "{expr}");
        }
    }

    #[test]
    fn cron_errors_say_which_field() {
        for (expr, needle) in [
            ("* * * *", "five fields"),
            ("60 * * * *", "minute field `60`"),
            ("* 24 * * *", "hour field"),
            ("* * 0 * *", "day field"),
            ("* * * 13 *", "month field"),
            ("* * * * 8", "weekday field"),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "low to high"),
            ("0 0 31 2 *", "never matches"),
        ] {
            let err = Cron::parse(expr).expect_err(expr);
            assert!(err.contains(needle), "{expr}: {err}");
        }
    }

    #[test]
    fn an_interval_is_due_after_the_previous_start_and_never_makes_up_missed_runs() {
        let every = When::Every(Duration::from_secs(60));
        assert_eq!(every.next_after(None, 1_000), 1_000);
        assert_eq!(every.next_after(Some(1_000), 2_000), 61_000);
        assert_eq!(every.next_after(Some(1_000), 500_000), 500_000);
    }
}
