//! Where a recipient lives in time, and when they may be written to.
//!
//! A recipient's zones come from their phone number: the longest prefix in
//! libphonenumber's prefix → time zone map (`shared/data/phone_time_zones.txt`),
//! unless the campaign gave a zone for the recipient. Many prefixes map to
//! several zones (mobile numbers are rarely geographic: `+55` is four Brazilian
//! zones, `+7` sixteen Russian ones). When those zones' send windows overlap for
//! at least [`MIN_OVERLAP`], a message goes out only while it is an acceptable
//! hour in all of them; when they do not (Russia), the country's main zone
//! decides, so such recipients are still reachable.

use std::{collections::HashMap, str::FromStr, sync::LazyLock};

use chrono::{DateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::domain::PhoneNumber;

/// Shortest overlap of a recipient's zones' windows for all of them to count.
pub const MIN_OVERLAP: chrono::Duration = chrono::Duration::hours(3);

const DATA: &str = include_str!("../../data/phone_time_zones.txt");

/// The zone that speaks for a country whose numbers span zones whose windows
/// barely overlap: where most of its people live.
const PRIMARY: &[(&str, &str)] = &[
    ("1", "America/New_York"),
    ("7", "Europe/Moscow"),
    ("52", "America/Mexico_City"),
    ("54", "America/Argentina/Buenos_Aires"),
    ("55", "America/Sao_Paulo"),
    ("56", "America/Santiago"),
    ("61", "Australia/Sydney"),
    ("62", "Asia/Jakarta"),
    ("86", "Asia/Shanghai"),
    ("91", "Asia/Kolkata"),
    ("243", "Africa/Kinshasa"),
    ("351", "Europe/Lisbon"),
    ("34", "Europe/Madrid"),
    ("33", "Europe/Paris"),
    ("44", "Europe/London"),
    ("45", "Europe/Copenhagen"),
    ("593", "America/Guayaquil"),
    ("976", "Asia/Ulaanbaatar"),
];

struct PrefixMap {
    zones: HashMap<&'static str, Vec<Tz>>,
    longest: usize,
}

static MAP: LazyLock<PrefixMap> = LazyLock::new(|| {
    let mut zones = HashMap::new();
    let mut longest = 0;
    for line in DATA
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((prefix, names)) = line.split_once('\t') else {
            continue;
        };
        // Zones this build's tz database does not know are left out.
        let parsed: Vec<Tz> = names
            .split(' ')
            .filter_map(|n| Tz::from_str(n).ok())
            .collect();
        if !parsed.is_empty() {
            longest = longest.max(prefix.len());
            zones.insert(prefix, parsed);
        }
    }
    PrefixMap { zones, longest }
});

/// An IANA zone name, checked.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| {
        format!("unknown time zone {name:?} (use an IANA name such as \"America/Sao_Paulo\")")
    })
}

/// What a message stores about its recipient's time: `p:<prefix>` (zones of a
/// phone prefix) or `z:<zone>` (given explicitly).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZoneKey(String);

impl ZoneKey {
    pub fn for_phone(phone: &PhoneNumber) -> Self {
        let digits = phone.digits();
        let map = &*MAP;
        for len in (1..=map.longest.min(digits.len())).rev() {
            if map.zones.contains_key(&digits[..len]) {
                return Self(format!("p:{}", &digits[..len]));
            }
        }
        Self("z:UTC".into())
    }

    pub fn explicit(zone: Tz) -> Self {
        Self(format!("z:{}", zone.name()))
    }

    /// A key read back from storage.
    pub fn stored(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Every zone the key stands for.
    pub fn zones(&self) -> Vec<Tz> {
        if let Some(zone) = self.0.strip_prefix("z:") {
            return vec![Tz::from_str(zone).unwrap_or(Tz::UTC)];
        }
        let prefix = self.0.strip_prefix("p:").unwrap_or("");
        MAP.zones
            .get(prefix)
            .cloned()
            .unwrap_or_else(|| vec![Tz::UTC])
    }

    fn prefix(&self) -> Option<&str> {
        self.0.strip_prefix("p:")
    }
}

/// "24:00": a window ending here runs to the end of the day. Microsecond
/// precision, as Postgres `time` stores it.
pub const END_OF_DAY: NaiveTime = match NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999) {
    Some(t) => t,
    None => panic!("valid time"),
};

/// The hours of the recipient's day during which messages may arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl Default for SendWindow {
    /// 09:00–20:00: business hours plus the early evening, when people read
    /// their phones; nothing at night or at breakfast.
    fn default() -> Self {
        Self {
            start: NaiveTime::from_hms_opt(9, 0, 0).expect("valid"),
            end: NaiveTime::from_hms_opt(20, 0, 0).expect("valid"),
        }
    }
}

impl SendWindow {
    /// A window within one day (`start` before `end`), at least an hour long.
    pub fn new(start: NaiveTime, end: NaiveTime) -> Result<Self, String> {
        if end <= start {
            return Err("the window must start before it ends, within one day".into());
        }
        if end - start < chrono::Duration::hours(1) {
            return Err("the window must be at least one hour long".into());
        }
        Ok(Self { start, end })
    }

    pub fn contains(&self, local: NaiveTime) -> bool {
        local >= self.start && local < self.end
    }

    pub fn length(&self) -> chrono::Duration {
        self.end - self.start
    }
}

fn offset_seconds(zone: Tz, at: DateTime<Utc>) -> i32 {
    zone.offset_from_utc_datetime(&at.naive_utc())
        .fix()
        .local_minus_utc()
}

/// The zone speaking for a set whose windows barely overlap: the country's
/// main zone if known, else the zone with the median offset.
fn speaker(key: &ZoneKey, zones: &[Tz], at: DateTime<Utc>) -> Tz {
    if let Some(prefix) = key.prefix() {
        let known = PRIMARY
            .iter()
            .filter(|(code, _)| prefix.starts_with(code))
            .max_by_key(|(code, _)| code.len())
            .and_then(|(_, zone)| Tz::from_str(zone).ok());
        if let Some(zone) = known {
            return zone;
        }
    }
    let mut sorted = zones.to_vec();
    sorted.sort_by_key(|z| (offset_seconds(*z, at), z.name()));
    sorted[sorted.len() / 2]
}

/// The zones whose local time decides whether the recipient may be written to
/// at `at` (see the module docs).
pub fn deciding_zones(key: &ZoneKey, window: &SendWindow, at: DateTime<Utc>) -> Vec<Tz> {
    let zones = key.zones();
    if zones.len() == 1 {
        return zones;
    }
    let offsets: Vec<i32> = zones.iter().map(|z| offset_seconds(*z, at)).collect();
    let spread = i64::from(offsets.iter().max().unwrap() - offsets.iter().min().unwrap());
    if window.length() - chrono::Duration::seconds(spread) >= MIN_OVERLAP {
        zones
    } else {
        vec![speaker(key, &zones, at)]
    }
}

/// Whether it is within the window in every one of `zones` at `at`.
pub fn is_open(zones: &[Tz], window: &SendWindow, at: DateTime<Utc>) -> bool {
    zones
        .iter()
        .all(|zone| window.contains(at.with_timezone(zone).time()))
}

/// The zone a sending number counts its days in: its only zone, or its
/// country's main one.
pub fn home_zone(phone: &PhoneNumber) -> Tz {
    let key = ZoneKey::for_phone(phone);
    let zones = key.zones();
    if zones.len() == 1 {
        zones[0]
    } else {
        speaker(&key, &zones, Utc::now())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn phone(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s, None).unwrap()
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn keys_come_from_the_longest_prefix() {
        assert_eq!(
            ZoneKey::for_phone(&phone("+1 201 555 0123")).as_str(),
            "p:1201"
        );
        assert_eq!(
            ZoneKey::for_phone(&phone("+1 201 555 0123")).zones(),
            [Tz::America__New_York]
        );
        assert_eq!(
            ZoneKey::for_phone(&phone("+351 912 345 678")).zones().len(),
            2
        );
        assert_eq!(
            ZoneKey::for_phone(&phone("+55 11 98765 4321")).zones(),
            [Tz::America__Sao_Paulo]
        );
        assert_eq!(
            ZoneKey::for_phone(&phone("+7 912 345 67 89")).zones(),
            [Tz::Europe__Moscow]
        );
        assert_eq!(
            ZoneKey::explicit(Tz::Europe__Lisbon).zones(),
            [Tz::Europe__Lisbon]
        );
        assert_eq!(
            ZoneKey::stored("p:1201"),
            ZoneKey::for_phone(&phone("+12015550123"))
        );
    }

    #[test]
    fn the_window_follows_the_recipients_clock_across_dst() {
        let window = SendWindow::default();
        let new_york = [Tz::America__New_York];
        // 2026-03-08: clocks go from 02:00 to 03:00 in New York (EST → EDT).
        // 13:30 UTC is 08:30 EST the day before (closed), 09:30 EDT that day (open).
        assert!(!is_open(&new_york, &window, utc(2026, 3, 7, 13, 30)));
        assert!(is_open(&new_york, &window, utc(2026, 3, 8, 13, 30)));
        // Closing: 00:30 UTC is 19:30 EST (open) in winter, 20:30 EDT (closed) in summer.
        assert!(is_open(&new_york, &window, utc(2026, 3, 7, 0, 30)));
        assert!(!is_open(&new_york, &window, utc(2026, 3, 10, 0, 30)));
        // 2026-11-01: back to EST. 13:30 UTC is 09:30 EDT on Oct 31, 08:30 EST on Nov 1.
        assert!(is_open(&new_york, &window, utc(2026, 10, 31, 13, 30)));
        assert!(!is_open(&new_york, &window, utc(2026, 11, 1, 13, 30)));
    }

    #[test]
    fn several_zones_must_all_be_within_the_window() {
        let window = SendWindow::default();
        // Brazil's four zones (numbers matching only `+55`) span UTC-2..UTC-5:
        // open 14:00–22:00 UTC only.
        let key = ZoneKey::stored("p:55");
        let zones = deciding_zones(&key, &window, utc(2026, 6, 1, 12, 0));
        assert_eq!(zones.len(), 4);
        assert!(!is_open(&zones, &window, utc(2026, 6, 1, 13, 59)));
        assert!(is_open(&zones, &window, utc(2026, 6, 1, 14, 0)));
        assert!(is_open(&zones, &window, utc(2026, 6, 1, 21, 59)));
        assert!(!is_open(&zones, &window, utc(2026, 6, 1, 22, 0)));
    }

    #[test]
    fn a_country_too_wide_to_overlap_is_decided_by_its_main_zone() {
        let window = SendWindow::default();
        // Numbers matching only `+7` may be in any of sixteen zones.
        let key = ZoneKey::stored("p:7");
        assert!(key.zones().len() > 5);
        let zones = deciding_zones(&key, &window, utc(2026, 6, 1, 12, 0));
        assert_eq!(zones, [Tz::Europe__Moscow]);
        // 10:00 in Moscow (UTC+3).
        assert!(is_open(&zones, &window, utc(2026, 6, 1, 7, 0)));
    }

    #[test]
    fn windows_are_checked() {
        let t = |h| NaiveTime::from_hms_opt(h, 0, 0).unwrap();
        assert!(SendWindow::new(t(20), t(9)).is_err());
        assert!(SendWindow::new(t(9), t(9)).is_err());
        assert!(SendWindow::new(t(8), t(22)).is_ok());
        assert_eq!(SendWindow::default().length(), chrono::Duration::hours(11));
    }

    #[test]
    fn numbers_count_days_in_their_home_zone() {
        assert_eq!(home_zone(&phone("+1 201 555 0123")), Tz::America__New_York);
        assert_eq!(
            home_zone(&phone("+55 11 98765 4321")),
            Tz::America__Sao_Paulo
        );
        assert_eq!(home_zone(&phone("+44 7911 123456")), Tz::Europe__London);
    }
}
