//! Events: what happened. Every event has an id, the tenant it belongs to,
//! a time, a `type` and type-specific `data`; the JSON form is stable and
//! documented in `docs/EVENTS.md`. Events are written to the outbox in the
//! transaction that makes the change; the relay moves them into the event
//! log (live stream, webhooks) and publishes the ones the scheduler plans
//! around to RabbitMQ (routing key = the type). Message state events are
//! written by a trigger (migration 0004) in the same shape as
//! [`MessageChange`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    domain::{MessageState, NumberState},
    policy::breaker::BreakerState,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event; consumers deduplicate on it.
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub timestamp: DateTime<Utc>,
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    pub fn new(tenant_id: Uuid, body: EventBody) -> Self {
        Self {
            id: Uuid::now_v7(),
            tenant_id,
            timestamp: Utc::now(),
            body,
        }
    }

    /// The event's type, also its routing key.
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRef {
    pub campaign_id: Uuid,
    /// Why, when Herald (not the user) changed the campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumberChange {
    pub number_id: Uuid,
    /// The number's state after the change.
    pub state: NumberState,
    /// When a time-lock or ban ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerChange {
    pub number_id: Uuid,
    pub breaker: BreakerState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    pub failure_ratio: f64,
    pub undelivered_ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRef {
    pub message_id: i64,
    /// The number that will send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_id: Option<Uuid>,
}

/// A message reached `sent`, `delivered`, `read`, `failed` or `unknown`.
/// States may be skipped (a `read` receipt can be the first news of a
/// message); they never go back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageChange {
    pub message_id: i64,
    /// `null` for a direct message.
    pub campaign_id: Option<Uuid>,
    pub number_id: Option<Uuid>,
    pub recipient: String,
    pub wa_message_id: String,
    pub state: MessageState,
    pub attempts: i32,
    pub failure_reason: Option<String>,
    /// When the message entered the state (receipts carry the network's
    /// time).
    pub at: Option<DateTime<Utc>>,
}

/// Someone wrote to one of the tenant's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub inbound_id: i64,
    /// The number written to.
    pub number_id: Uuid,
    /// The sender: E.164 when it is a phone number.
    pub from: String,
    pub wa_message_id: String,
    /// `text`, `image`, `video`, `audio`, `document`, `sticker`,
    /// `location`, `contact` or `other`.
    pub kind: String,
    /// The text, or a media message's caption.
    pub text: Option<String>,
    /// MIME type of an attachment.
    pub media_type: Option<String>,
    pub received_at: DateTime<Utc>,
    /// The last campaign message sent to this person (within the
    /// attribution window), which this answers.
    pub reply_to_message_id: Option<i64>,
    pub campaign_id: Option<Uuid>,
    /// The text was an opt-out keyword (a `contact.opted_out` follows).
    pub opt_out: bool,
}

/// Someone opted out: they are on the tenant's suppression list now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptedOut {
    pub phone: String,
    /// The number they wrote to, and their message.
    pub number_id: Uuid,
    pub inbound_id: i64,
    /// The keyword they sent, as matched (lower case, accents removed).
    pub keyword: String,
    /// Their messages that were waiting and will not be sent.
    pub stopped_messages: u64,
    /// The confirmation sent back, when the tenant has one set.
    pub confirmation_message_id: Option<i64>,
}

/// A code to link a number: a QR payload to render, or a code to type on
/// the phone (Linked devices → Link with phone number instead).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairingCode {
    pub number_id: Uuid,
    /// `qr` or `code`.
    pub method: String,
    pub code: String,
    pub expires_at: DateTime<Utc>,
}

/// A pairing ended without a link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairingFailed {
    pub number_id: Uuid,
    pub reason: String,
}

/// A number's session connected or dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumberConnection {
    pub number_id: Uuid,
    /// The account's display name, when connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EventBody {
    /// A direct message was accepted and waits for its number.
    #[serde(rename = "message.queued")]
    MessageQueued(MessageRef),
    #[serde(rename = "campaign.started")]
    CampaignStarted(CampaignRef),
    #[serde(rename = "campaign.paused")]
    CampaignPaused(CampaignRef),
    #[serde(rename = "campaign.resumed")]
    CampaignResumed(CampaignRef),
    #[serde(rename = "campaign.cancelled")]
    CampaignCancelled(CampaignRef),
    #[serde(rename = "campaign.completed")]
    CampaignCompleted(CampaignRef),
    #[serde(rename = "number.timelocked")]
    NumberTimelocked(NumberChange),
    #[serde(rename = "number.banned")]
    NumberBanned(NumberChange),
    #[serde(rename = "number.needs_pairing")]
    NumberNeedsPairing(NumberChange),
    /// A time-lock or ban ended.
    #[serde(rename = "number.restored")]
    NumberRestored(NumberChange),
    /// The circuit breaker slowed, stopped or released the number.
    #[serde(rename = "number.throttled")]
    NumberThrottled(BreakerChange),
    #[serde(rename = "number.pairing")]
    NumberPairing(PairingCode),
    #[serde(rename = "number.paired")]
    NumberPaired(NumberConnection),
    #[serde(rename = "number.pairing_failed")]
    NumberPairingFailed(PairingFailed),
    #[serde(rename = "number.connected")]
    NumberConnected(NumberConnection),
    #[serde(rename = "number.disconnected")]
    NumberDisconnected(NumberConnection),
    #[serde(rename = "message.sent")]
    MessageSent(MessageChange),
    #[serde(rename = "message.delivered")]
    MessageDelivered(MessageChange),
    #[serde(rename = "message.read")]
    MessageRead(MessageChange),
    #[serde(rename = "message.failed")]
    MessageFailed(MessageChange),
    #[serde(rename = "message.unknown")]
    MessageUnknown(MessageChange),
    #[serde(rename = "message.received")]
    MessageReceived(InboundMessage),
    #[serde(rename = "contact.opted_out")]
    ContactOptedOut(OptedOut),
}

/// Every event type a tenant can receive (webhooks, live stream), for
/// validating subscriptions.
pub const PUBLIC_TYPES: &[&str] = &[
    "message.sent",
    "message.delivered",
    "message.read",
    "message.failed",
    "message.unknown",
    "message.received",
    "contact.opted_out",
    "campaign.started",
    "campaign.paused",
    "campaign.resumed",
    "campaign.cancelled",
    "campaign.completed",
    "number.pairing",
    "number.paired",
    "number.pairing_failed",
    "number.connected",
    "number.disconnected",
    "number.needs_pairing",
    "number.banned",
    "number.timelocked",
    "number.restored",
    "number.throttled",
];

impl EventBody {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MessageQueued(_) => "message.queued",
            Self::CampaignStarted(_) => "campaign.started",
            Self::CampaignPaused(_) => "campaign.paused",
            Self::CampaignResumed(_) => "campaign.resumed",
            Self::CampaignCancelled(_) => "campaign.cancelled",
            Self::CampaignCompleted(_) => "campaign.completed",
            Self::NumberTimelocked(_) => "number.timelocked",
            Self::NumberBanned(_) => "number.banned",
            Self::NumberNeedsPairing(_) => "number.needs_pairing",
            Self::NumberRestored(_) => "number.restored",
            Self::NumberThrottled(_) => "number.throttled",
            Self::NumberPairing(_) => "number.pairing",
            Self::NumberPaired(_) => "number.paired",
            Self::NumberPairingFailed(_) => "number.pairing_failed",
            Self::NumberConnected(_) => "number.connected",
            Self::NumberDisconnected(_) => "number.disconnected",
            Self::MessageSent(_) => "message.sent",
            Self::MessageDelivered(_) => "message.delivered",
            Self::MessageRead(_) => "message.read",
            Self::MessageFailed(_) => "message.failed",
            Self::MessageUnknown(_) => "message.unknown",
            Self::MessageReceived(_) => "message.received",
            Self::ContactOptedOut(_) => "contact.opted_out",
        }
    }

    pub fn campaign(campaign_id: Uuid, reason: Option<String>) -> CampaignRef {
        CampaignRef {
            campaign_id,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_type_and_data() {
        let event = Event {
            id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            timestamp: DateTime::from_timestamp(0, 0).unwrap(),
            body: EventBody::CampaignPaused(EventBody::campaign(Uuid::nil(), Some("why".into()))),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "campaign.paused");
        assert_eq!(json["data"]["reason"], "why");
        assert_eq!(json["tenant_id"], "00000000-0000-0000-0000-000000000000");
        assert_eq!(event.kind(), "campaign.paused");
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn public_types_are_the_types_tenants_can_get() {
        use crate::db::outbox::INTERNAL_TOPICS;
        for kind in PUBLIC_TYPES {
            assert!(!INTERNAL_TOPICS.contains(kind), "{kind}");
        }
        let sample = EventBody::NumberConnected(NumberConnection {
            number_id: Uuid::nil(),
            push_name: None,
        });
        assert!(PUBLIC_TYPES.contains(&sample.kind()));
    }
}
