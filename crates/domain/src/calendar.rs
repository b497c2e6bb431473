//! Dates in Asia/Shanghai and business-day calendars loaded as data.
//!
//! A calendar holds, per year, the official holidays and the weekend days made working days
//! (调休). A business day is a weekday that is not a holiday, or a make-up working day. T+N
//! counts business days, D+N natural days. A year without data is an error at the point of
//! use, never a guess.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ledger::Timestamp;

/// Asia/Shanghai has been UTC+8 without daylight saving since 1991.
pub const SHANGHAI_OFFSET_MICROS: i64 = 8 * 3600 * 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;
const MICROS_PER_MINUTE: i64 = 60 * 1_000_000;

/// A calendar date, as days since 1970-01-01.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(i32);

impl Date {
    pub const fn from_days(days: i32) -> Date {
        Date(days)
    }

    pub const fn days(self) -> i32 {
        self.0
    }

    /// The date from year, month (1–12) and day (1–31); `None` if no such date exists.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        // Days from civil, after Howard Hinnant's algorithm.
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = month as i32;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Date(era * 146_097 + doe - 719_468))
    }

    pub fn ymd(self) -> (i32, u32, u32) {
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i32::from(month <= 2);
        (year, month, day)
    }

    pub fn year(self) -> i32 {
        self.ymd().0
    }

    /// ISO weekday: 1 = Monday … 7 = Sunday.
    pub fn weekday(self) -> u32 {
        // 1970-01-01 was a Thursday.
        (self.0 + 3).rem_euclid(7) as u32 + 1
    }

    pub fn is_weekend(self) -> bool {
        self.weekday() >= 6
    }

    pub fn plus_days(self, days: i32) -> Date {
        Date(self.0 + days)
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Date> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = text.get(range)?;
            part.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| part.parse().ok())
                .flatten()
        };
        Date::from_ymd(number(0..4)? as i32, number(5..7)?, number(8..10)?)
    }

    /// The instant this date starts in Asia/Shanghai, plus `minute` minutes.
    pub fn at_minute(self, minute: u16) -> Timestamp {
        Timestamp(
            i64::from(self.0) * MICROS_PER_DAY - SHANGHAI_OFFSET_MICROS
                + i64::from(minute) * MICROS_PER_MINUTE,
        )
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// The Shanghai calendar date of an instant.
pub fn local_date(at: Timestamp) -> Date {
    Date(((at.micros() + SHANGHAI_OFFSET_MICROS).div_euclid(MICROS_PER_DAY)) as i32)
}

/// Minutes since local midnight of an instant.
pub fn local_minute(at: Timestamp) -> u16 {
    ((at.micros() + SHANGHAI_OFFSET_MICROS).rem_euclid(MICROS_PER_DAY) / MICROS_PER_MINUTE) as u16
}

/// The business date an instant belongs to for a day that runs from `cutoff_minute` to
/// `cutoff_minute` the next day: an instant before the cutoff belongs to the previous date.
pub fn business_date(at: Timestamp, cutoff_minute: u16) -> Date {
    local_date(Timestamp(
        at.micros() - i64::from(cutoff_minute) * MICROS_PER_MINUTE,
    ))
}

/// One year of official data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalendarYear {
    pub year: i32,
    pub holidays: BTreeSet<Date>,
    /// Weekend days that are official working days.
    pub workdays: BTreeSet<Date>,
    /// Where the data comes from (for example the State Council notice).
    pub source: String,
}

/// Why a calendar cannot answer or take data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CalendarError {
    /// No data was loaded for this year.
    YearMissing {
        calendar: String,
        year: i32,
    },
    UnknownCalendar(String),
    /// A date in the data lies outside the year it was loaded for, or is listed twice.
    InvalidYear(String),
}

/// A business-day calendar: years of holiday data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calendar {
    pub id: String,
    pub years: BTreeMap<i32, CalendarYear>,
}

impl Calendar {
    pub fn new(id: &str) -> Calendar {
        Calendar {
            id: id.to_owned(),
            years: BTreeMap::new(),
        }
    }

    /// Loads or replaces one year.
    pub fn load_year(&mut self, year: CalendarYear) -> Result<(), CalendarError> {
        let outside = year
            .holidays
            .iter()
            .chain(&year.workdays)
            .find(|d| d.year() != year.year);
        if let Some(date) = outside {
            return Err(CalendarError::InvalidYear(format!(
                "{date} is not in {}",
                year.year
            )));
        }
        if let Some(both) = year.holidays.intersection(&year.workdays).next() {
            return Err(CalendarError::InvalidYear(format!(
                "{both} is both a holiday and a working day"
            )));
        }
        self.years.insert(year.year, year);
        Ok(())
    }

    pub fn is_business_day(&self, date: Date) -> Result<bool, CalendarError> {
        let year = self
            .years
            .get(&date.year())
            .ok_or_else(|| CalendarError::YearMissing {
                calendar: self.id.clone(),
                year: date.year(),
            })?;
        Ok(if year.workdays.contains(&date) {
            true
        } else {
            !date.is_weekend() && !year.holidays.contains(&date)
        })
    }

    /// The `n`-th business day after `date` (T+n); `n = 0` is `date` itself if it is a
    /// business day, else the next one.
    pub fn add_business_days(&self, date: Date, n: u32) -> Result<Date, CalendarError> {
        let mut day = date;
        if n == 0 {
            while !self.is_business_day(day)? {
                day = day.plus_days(1);
            }
            return Ok(day);
        }
        let mut left = n;
        while left > 0 {
            day = day.plus_days(1);
            if self.is_business_day(day)? {
                left -= 1;
            }
        }
        Ok(day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        Date::parse(text).unwrap_or_else(|| panic!("bad date {text}"))
    }

    #[test]
    fn dates_round_trip_and_know_their_weekday() {
        for text in [
            "1970-01-01",
            "2000-02-29",
            "2026-02-15",
            "2026-12-31",
            "1969-12-31",
        ] {
            assert_eq!(date(text).to_string(), text);
        }
        assert_eq!(date("1970-01-01").weekday(), 4);
        assert_eq!(date("2026-11-25").weekday(), 3, "a Wednesday");
        assert_eq!(Date::parse("2026-02-29"), None);
        assert_eq!(Date::parse("2026-2-1"), None);
    }

    #[test]
    fn business_date_follows_the_cutoff_in_shanghai() {
        // 2026-11-25 00:30 Shanghai is 2026-11-24 16:30 UTC.
        let half_past_midnight = date("2026-11-25").at_minute(30);
        assert_eq!(local_date(half_past_midnight), date("2026-11-25"));
        assert_eq!(business_date(half_past_midnight, 60), date("2026-11-24"));
        assert_eq!(
            business_date(date("2026-11-25").at_minute(60), 60),
            date("2026-11-25")
        );
        assert_eq!(local_minute(date("2026-11-25").at_minute(125)), 125);
    }

    fn cn_2026() -> Calendar {
        let mut calendar = Calendar::new("cn");
        calendar
            .load_year(CalendarYear {
                year: 2026,
                holidays: [
                    "2026-02-16",
                    "2026-02-17",
                    "2026-02-18",
                    "2026-02-19",
                    "2026-02-20",
                    "2026-02-23",
                ]
                .into_iter()
                .map(date)
                .collect(),
                workdays: ["2026-02-14", "2026-02-28"].into_iter().map(date).collect(),
                source: "test".into(),
            })
            .unwrap_or_else(|e| panic!("{e:?}"));
        calendar
    }

    #[test]
    fn make_up_days_and_holidays_change_business_days() {
        let cn = cn_2026();
        assert_eq!(
            cn.is_business_day(date("2026-02-14")),
            Ok(true),
            "a make-up Saturday"
        );
        assert_eq!(
            cn.is_business_day(date("2026-02-16")),
            Ok(false),
            "Spring Festival"
        );
        assert_eq!(
            cn.is_business_day(date("2026-02-21")),
            Ok(false),
            "a plain Saturday"
        );
        // T+1 from Friday 2026-02-13 skips the festival: Saturday the 14th is a working day.
        assert_eq!(
            cn.add_business_days(date("2026-02-13"), 1),
            Ok(date("2026-02-14"))
        );
        assert_eq!(
            cn.add_business_days(date("2026-02-14"), 1),
            Ok(date("2026-02-24"))
        );
    }

    #[test]
    fn a_year_without_data_is_an_error_not_a_guess() {
        let cn = cn_2026();
        assert_eq!(
            cn.is_business_day(date("2027-01-04")),
            Err(CalendarError::YearMissing {
                calendar: "cn".into(),
                year: 2027
            })
        );
        assert!(cn.add_business_days(date("2026-12-31"), 1).is_err());
    }

    #[test]
    fn data_outside_its_year_is_refused() {
        let mut cn = Calendar::new("cn");
        let refused = cn.load_year(CalendarYear {
            year: 2026,
            holidays: [date("2025-12-31")].into_iter().collect(),
            workdays: BTreeSet::new(),
            source: String::new(),
        });
        assert!(matches!(refused, Err(CalendarError::InvalidYear(_))));
    }
}
