//! Domain types: parsed values ("parse, don't validate") and the status enums
//! that mirror Postgres enum types one to one.

use std::{fmt, str::FromStr};

use postgres_types::{FromSql, ToSql};
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// A phone number in E.164 form (`+` and digits), known to be valid for its
/// region. The only way to get one is [`PhoneNumber::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("not a phone number")]
    Unparseable,
    #[error("no country code: write it as +<country code><number>, or set a default region")]
    NoCountryCode,
    #[error("not a valid number for its country")]
    Invalid,
    #[error("unknown region {0:?} (use an ISO 3166 code such as \"BR\")")]
    UnknownRegion(String),
}

impl PhoneNumber {
    /// Parses `input` (any common formatting) into E.164. `default_region` (ISO
    /// 3166 alpha-2, e.g. "BR") applies to numbers written without `+`.
    pub fn parse(input: &str, default_region: Option<&str>) -> Result<Self, PhoneError> {
        let region = match default_region.filter(|r| !r.is_empty()) {
            Some(code) => Some(region(code)?),
            None => None,
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PhoneError::Unparseable);
        }
        let parsed = phonenumber::parse(region, trimmed).map_err(|err| match err {
            phonenumber::ParseError::InvalidCountryCode if region.is_none() => {
                PhoneError::NoCountryCode
            }
            _ => PhoneError::Unparseable,
        })?;
        if !phonenumber::is_valid(&parsed) {
            return Err(PhoneError::Invalid);
        }
        Ok(Self(
            parsed.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }

    /// Wraps a value read back from Herald's own storage, where only parsed
    /// numbers are ever written.
    pub fn from_trusted(e164: String) -> Self {
        Self(e164)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without the `+`, as WhatsApp addresses users.
    pub fn digits(&self) -> &str {
        self.0.trim_start_matches('+')
    }

    /// The number with all but the last four digits hidden, for logs and
    /// metrics-free diagnostics (numbers are personal data).
    pub fn masked(&self) -> String {
        let digits = self.digits();
        let keep = digits.len().min(4);
        format!("+…{}", &digits[digits.len() - keep..])
    }
}

fn region(code: &str) -> Result<phonenumber::country::Id, PhoneError> {
    phonenumber::country::Id::from_str(&code.to_ascii_uppercase())
        .map_err(|_| PhoneError::UnknownRegion(code.to_string()))
}

/// Whether `code` is an ISO 3166 alpha-2 region phone numbers can be parsed in.
pub fn is_known_region(code: &str) -> bool {
    region(code).is_ok()
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message's place in its life. Mirrors the Postgres enum `message_state`.
///
/// `queued → scheduled → sending → sent → delivered → read`, plus the endings
/// `failed` (permanent, with a reason), `unknown` (the process died between the
/// WhatsApp call and recording its outcome: never resent automatically, a later
/// receipt may still resolve it), `suppressed` and `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSql, FromSql)]
#[postgres(name = "message_state")]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MessageState {
    #[postgres(name = "queued")]
    Queued,
    #[postgres(name = "scheduled")]
    Scheduled,
    #[postgres(name = "sending")]
    Sending,
    #[postgres(name = "sent")]
    Sent,
    #[postgres(name = "delivered")]
    Delivered,
    #[postgres(name = "read")]
    Read,
    #[postgres(name = "failed")]
    Failed,
    #[postgres(name = "unknown")]
    Unknown,
    #[postgres(name = "suppressed")]
    Suppressed,
    #[postgres(name = "cancelled")]
    Cancelled,
}

impl MessageState {
    pub const ALL: [MessageState; 10] = [
        Self::Queued,
        Self::Scheduled,
        Self::Sending,
        Self::Sent,
        Self::Delivered,
        Self::Read,
        Self::Failed,
        Self::Unknown,
        Self::Suppressed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Scheduled => "scheduled",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
            Self::Suppressed => "suppressed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether Herald still has work to do for the message. A campaign is
    /// complete when none of its messages is pending.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Queued | Self::Scheduled | Self::Sending)
    }
}

impl NumberState {
    pub const ALL: [NumberState; 5] = [
        Self::Active,
        Self::NeedsPairing,
        Self::Timelocked,
        Self::Banned,
        Self::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::NeedsPairing => "needs_pairing",
            Self::Timelocked => "timelocked",
            Self::Banned => "banned",
            Self::Disabled => "disabled",
        }
    }
}

impl CampaignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
            Self::Completed => "completed",
        }
    }
}

/// Mirrors the Postgres enum `campaign_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSql, FromSql)]
#[postgres(name = "campaign_status")]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CampaignStatus {
    /// Created; nothing is sent until it is started.
    #[postgres(name = "draft")]
    Draft,
    /// Started, waiting for its start time.
    #[postgres(name = "scheduled")]
    Scheduled,
    #[postgres(name = "running")]
    Running,
    #[postgres(name = "paused")]
    Paused,
    #[postgres(name = "cancelled")]
    Cancelled,
    /// Every message reached an ending (sent or later, failed, unknown, …).
    #[postgres(name = "completed")]
    Completed,
}

/// How Herald reaches a number. Mirrors the Postgres enum `number_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSql, FromSql)]
#[postgres(name = "number_kind")]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NumberKind {
    /// A number on the simulated network (`herald-sim`).
    #[postgres(name = "sim")]
    Sim,
    /// A real WhatsApp account linked as a companion device.
    #[postgres(name = "whatsapp")]
    Whatsapp,
}

/// Whether a number may be used. Mirrors the Postgres enum `number_state`.
/// Connection state (connected or not right now) is separate: it is the owning
/// worker's live knowledge, not a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSql, FromSql)]
#[postgres(name = "number_state")]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NumberState {
    /// Linked and usable.
    #[postgres(name = "active")]
    Active,
    /// Not linked (never paired, or logged out from the phone).
    #[postgres(name = "needs_pairing")]
    NeedsPairing,
    /// May not start new conversations until `timelocked_until`.
    #[postgres(name = "timelocked")]
    Timelocked,
    /// Temporarily banned until `banned_until`.
    #[postgres(name = "banned")]
    Banned,
    /// Taken out of service by an operator.
    #[postgres(name = "disabled")]
    Disabled,
}

/// Where a webhook delivery stands. Mirrors the Postgres enum
/// `delivery_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSql, FromSql)]
#[postgres(name = "delivery_state")]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeliveryState {
    /// An attempt is due or under way.
    #[postgres(name = "pending")]
    Pending,
    /// The endpoint answered 2xx.
    #[postgres(name = "delivered")]
    Delivered,
    /// Out of attempts, or the endpoint was disabled: replayable.
    #[postgres(name = "failed")]
    Failed,
}

/// The WhatsApp message id Herald chooses before sending, so the message can be
/// matched with its server ack and receipts, and a retried call can never
/// become a second message under a new id. Same shape as WhatsApp Web's own
/// ids: `3EB0` and 20 upper-case hex digits.
pub fn new_wa_message_id() -> String {
    let bytes: [u8; 10] = rand::rng().random();
    format!("3EB0{}", hex::encode_upper(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_international_and_regional_forms_to_e164() {
        let a = PhoneNumber::parse("+55 11 98765-4321", None).unwrap();
        let b = PhoneNumber::parse("(11) 98765-4321", Some("br")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "+5511987654321");
        assert_eq!(a.digits(), "5511987654321");
        assert_eq!(a.masked(), "+…4321");
    }

    #[test]
    fn rejects_what_is_not_a_valid_number() {
        assert_eq!(
            PhoneNumber::parse("hello", None),
            Err(PhoneError::Unparseable)
        );
        assert_eq!(
            PhoneNumber::parse("11 98765-4321", None),
            Err(PhoneError::NoCountryCode)
        );
        assert_eq!(
            PhoneNumber::parse("+1 555 0", None),
            Err(PhoneError::Invalid)
        );
        assert!(matches!(
            PhoneNumber::parse("123", Some("XX")),
            Err(PhoneError::UnknownRegion(_))
        ));
    }

    #[test]
    fn message_ids_have_whatsapp_web_shape_and_differ() {
        let a = new_wa_message_id();
        let b = new_wa_message_id();
        assert_eq!(a.len(), 24);
        assert!(a.starts_with("3EB0"));
        assert!(
            a[4..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
        assert_ne!(a, b);
    }
}
