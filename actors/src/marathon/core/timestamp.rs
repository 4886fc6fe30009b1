//! Marathon's timestamps: milliseconds since the Unix epoch, written as ISO-8601 in UTC with
//! exactly three fraction digits (`2015-09-30T09:09:17.614Z`), as every `version`,
//! `versionInfo` and event `timestamp` field shows them.
//!
//! Parsing accepts what Java's `OffsetDateTime.parse` accepts for these fields: a date, `T`,
//! hours and minutes, optional seconds, an optional fraction of up to nine digits, and an offset
//! (`Z`, `+HH:MM` or `+HH:MM:SS`). The instant is converted to UTC and truncated to the
//! millisecond, as Marathon's `Timestamp` is. Unlike Marathon, instants before the epoch are
//! refused: Flotilla's clock never produces them and they would need a signed representation.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MILLIS_PER_SECOND: u64 = 1000;
const SECONDS_PER_DAY: u64 = 86_400;
/// The last instant whose year still has four digits (9999-12-31T23:59:59.999Z).
const MAX_MILLIS: u64 = 253_402_300_799_999;

/// An instant, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

/// Why a timestamp string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("Invalid timestamp provided '{0}'. Expecting ISO-8601 datetime string.")]
    Syntax(String),
    #[error("timestamp '{0}' is before 1970-01-01T00:00:00Z")]
    BeforeEpoch(String),
    #[error("timestamp '{0}' is after 9999-12-31T23:59:59.999Z")]
    TooLate(String),
}

impl Timestamp {
    pub const fn from_millis(millis: u64) -> Timestamp {
        Timestamp(millis)
    }

    pub const fn millis(self) -> u64 {
        self.0
    }

    /// Parses an ISO-8601 offset date-time (see the module doc for the accepted forms).
    pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
        let syntax = || TimestampError::Syntax(text.to_owned());
        let parsed = Parser::new(text).date_time().ok_or_else(syntax)?;
        let days = days_from_civil(parsed.year, parsed.month, parsed.day);
        let local_seconds = days * SECONDS_PER_DAY as i64
            + i64::from(parsed.hour) * 3600
            + i64::from(parsed.minute) * 60
            + i64::from(parsed.second);
        let utc_millis = (local_seconds - parsed.offset_seconds) * MILLIS_PER_SECOND as i64 + i64::from(parsed.millis);
        let millis = u64::try_from(utc_millis).map_err(|_| TimestampError::BeforeEpoch(text.to_owned()))?;
        if millis > MAX_MILLIS {
            return Err(TimestampError::TooLate(text.to_owned()));
        }
        Ok(Timestamp(millis))
    }
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, always with three fraction digits, as Marathon writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.min(MAX_MILLIS);
        let seconds = millis / MILLIS_PER_SECOND;
        let days = seconds / SECONDS_PER_DAY;
        let of_day = seconds % SECONDS_PER_DAY;
        let (year, month, day) = civil_from_days(days as i64);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60,
            millis % MILLIS_PER_SECOND
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The fields of a parsed date-time, before conversion to UTC.
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
    offset_seconds: i64,
}

/// A cursor over the ASCII bytes of a date-time; every method returns `None` on a mismatch.
struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser { bytes: text.as_bytes(), at: 0 }
    }

    fn date_time(mut self) -> Option<DateTime> {
        let year = i64::from(self.digits(4)?);
        self.literal(b'-')?;
        let month = self.digits(2)?;
        self.literal(b'-')?;
        let day = self.digits(2)?;
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        self.either(b'T', b't')?;
        let hour = self.digits(2)?;
        self.literal(b':')?;
        let minute = self.digits(2)?;
        let (second, millis) = if self.peek() == Some(b':') {
            self.at += 1;
            let second = self.digits(2)?;
            (second, self.fraction_millis()?)
        } else {
            (0, 0)
        };
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let offset_seconds = self.offset()?;
        (self.at == self.bytes.len()).then_some(DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            millis,
            offset_seconds,
        })
    }

    /// `.f` to `.fffffffff`, truncated to milliseconds; absent means zero.
    fn fraction_millis(&mut self) -> Option<u32> {
        if self.peek() != Some(b'.') {
            return Some(0);
        }
        self.at += 1;
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = self.bytes.get(start..self.at)?;
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        Some(digits.iter().chain([b'0', b'0', b'0'].iter()).take(3).fold(0, |acc, b| acc * 10 + u32::from(b - b'0')))
    }

    /// `Z`, `+HH:MM` or `+HH:MM:SS` (and the `-` forms), in seconds east of UTC.
    fn offset(&mut self) -> Option<i64> {
        let sign = match self.peek()? {
            b'Z' | b'z' => {
                self.at += 1;
                return Some(0);
            }
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        self.at += 1;
        let hours = self.digits(2)?;
        self.literal(b':')?;
        let minutes = self.digits(2)?;
        let seconds = if self.peek() == Some(b':') {
            self.at += 1;
            self.digits(2)?
        } else {
            0
        };
        if hours > 18 || minutes > 59 || seconds > 59 {
            return None;
        }
        Some(sign * i64::from(hours * 3600 + minutes * 60 + seconds))
    }

    fn digits(&mut self, count: usize) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + count)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.at += count;
        Some(digits.iter().fold(0, |acc, b| acc * 10 + u32::from(b - b'0')))
    }

    fn literal(&mut self, expected: u8) -> Option<()> {
        (self.peek()? == expected).then(|| self.at += 1)
    }

    fn either(&mut self, one: u8, other: u8) -> Option<()> {
        let found = self.peek()?;
        (found == one || found == other).then(|| self.at += 1)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_marathon() {
        assert_eq!(Timestamp::from_millis(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::from_millis(1_443_604_157_614).to_string(), "2015-09-30T09:09:17.614Z");
        assert_eq!(Timestamp::from_millis(951_782_400_000).to_string(), "2000-02-29T00:00:00.000Z");
        assert_eq!(Timestamp::from_millis(MAX_MILLIS).to_string(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_the_forms_java_accepts() {
        let expected = Timestamp::from_millis(1_443_604_157_614);
        for text in [
            "2015-09-30T09:09:17.614Z",
            "2015-09-30T09:09:17.614999Z",
            "2015-09-30T09:09:17.614000001Z",
            "2015-09-30T11:09:17.614+02:00",
            "2015-09-30T08:09:17.614-01:00",
            "2015-09-30t09:09:17.614z",
        ] {
            assert_eq!(Timestamp::parse(text), Ok(expected), "{text}");
        }
        assert_eq!(Timestamp::parse("2015-09-30T09:09Z"), Ok(Timestamp::from_millis(1_443_604_140_000)));
        assert_eq!(Timestamp::parse("2015-09-30T09:09:17.6Z"), Ok(Timestamp::from_millis(1_443_604_157_600)));
    }

    #[test]
    fn refuses_malformed_and_out_of_range() {
        for text in [
            "",
            "2015-09-30",
            "2015-09-30T09:09:17.614",
            "2015-13-01T00:00:00Z",
            "2015-02-29T00:00:00Z",
            "2015-09-30T24:00:00Z",
            "2015-09-30T09:09:17.Z",
            "2015-09-30T09:09:17.6140000001Z",
            "2015-09-30T09:09:17.614Z ",
            "2015-09-30T09:09:17+0200",
            "２015-09-30T09:09:17Z",
        ] {
            assert!(matches!(Timestamp::parse(text), Err(TimestampError::Syntax(_))), "{text}");
        }
        assert!(matches!(Timestamp::parse("1969-12-31T23:59:59.999Z"), Err(TimestampError::BeforeEpoch(_))));
        assert!(matches!(Timestamp::parse("9999-12-31T23:59:59.999-01:00"), Err(TimestampError::TooLate(_))));
    }

    #[test]
    fn serde_uses_the_text_form() {
        let ts = Timestamp::from_millis(1_443_604_157_614);
        let json = serde_json::to_string(&ts).unwrap();
        assert_eq!(json, "\"2015-09-30T09:09:17.614Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), ts);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(millis in 0..=MAX_MILLIS) {
            let ts = Timestamp::from_millis(millis);
            prop_assert_eq!(Timestamp::parse(&ts.to_string()), Ok(ts));
        }

        #[test]
        fn offsets_shift_the_instant(millis in 86_400_000..MAX_MILLIS - 86_400_000, minutes in -1080i64..=1080) {
            let ts = Timestamp::from_millis(millis);
            let utc = ts.to_string();
            let shifted_millis = (millis as i64 + minutes * 60_000) as u64;
            let local = Timestamp::from_millis(shifted_millis).to_string();
            let sign = if minutes < 0 { '-' } else { '+' };
            let text = format!("{}{sign}{:02}:{:02}", &local[..local.len() - 1], minutes.abs() / 60, minutes.abs() % 60);
            prop_assert_eq!(Timestamp::parse(&text).map(|t| t.to_string()), Ok(utc));
        }

        #[test]
        fn day_conversion_round_trips(days in -1_000_000i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
