//! The device protocol between a simulated WhatsApp client (Herald's sim
//! session) and `herald-sim`: one JSON object per line over TCP.
//!
//! It mirrors what matters of the real multi-device protocol: a device says who
//! it is (or asks to be paired and gets rotating QR codes), sends messages under
//! ids it chose, gets a server ack per message (with an error code when the
//! server refuses it), and receives receipts and inbound messages as numbered
//! events that stay queued on the server until the device acknowledges them, so
//! a device that crashed gets them again when it reconnects.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest line either side accepts.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Device → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientFrame {
    /// First frame. `credential` is what the server handed out at pairing; a
    /// number created already paired accepts a device without one.
    Hello {
        phone: String,
        credential: Option<String>,
    },
    /// Send a text, with an image or document if `media` is set. The id is
    /// chosen by the device.
    Send {
        id: String,
        to: String,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<WireMedia>,
    },
    /// Typing state towards one chat (`composing`, `paused`).
    ChatPresence { to: String, state: ChatState },
    /// Online / offline.
    Presence { available: bool },
    /// Mark received messages read.
    MarkRead { chat: String, ids: Vec<String> },
    /// Which of these numbers use WhatsApp.
    Check { request: u64, phones: Vec<String> },
    /// When does this number's reach-out time-lock end (if it has one)?
    ReachoutTimelock { request: u64 },
    /// The device handled every event up to and including `seq`.
    Ack { seq: u64 },
    /// While unpaired: link by a code the phone's owner types in instead of
    /// scanning a QR code.
    RequestPairCode,
    /// Unlink this device.
    Logout,
}

/// An attachment: its kind (`image`, `document`) and where it comes from (a
/// URL, or Herald's media id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMedia {
    pub kind: String,
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatState {
    Composing,
    Paused,
}

/// Server → device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The number is not linked: show this code as a QR; a new one follows when
    /// it expires.
    PairingQr { code: String, timeout_ms: u64 },
    /// The code to type on the phone (`RequestPairCode`).
    PairCode { code: String, timeout_ms: u64 },
    /// A phone scanned the code: keep the credential for later connections.
    Paired {
        phone: String,
        credential: String,
        push_name: String,
    },
    /// Connected and ready to send.
    Ready { push_name: String },
    /// The device is no longer linked (logged out from the phone, or a wrong
    /// credential). It must be paired again.
    LoggedOut { reason: String },
    /// The server's verdict on a sent message: accepted (`error: None`) or
    /// refused with a code (`"463"`: reach-out time-lock).
    ServerAck { id: String, error: Option<String> },
    /// Something that happened, numbered; repeated until acknowledged.
    Event { seq: u64, event: NetworkEvent },
    CheckResult {
        request: u64,
        results: Vec<CheckedPhone>,
    },
    ReachoutTimelockResult {
        request: u64,
        until: Option<DateTime<Utc>>,
    },
    /// The number is temporarily banned; the server closes the connection
    /// and refuses new ones until `until`.
    TemporaryBan { code: String, until: DateTime<Utc> },
    /// The connection is being closed by the server.
    Closing { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NetworkEvent {
    Receipt {
        ids: Vec<String>,
        kind: ReceiptKind,
        at: DateTime<Utc>,
    },
    Inbound {
        id: String,
        from: String,
        /// The text, or a media message's caption.
        body: String,
        /// MIME type of an attachment (none: a text message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_type: Option<String>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    Delivered,
    Read,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedPhone {
    pub phone: String,
    pub on_whatsapp: bool,
}

/// One line of the simulator's durable log: a message it accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedMessage {
    pub id: String,
    pub from: String,
    pub to: String,
    /// SHA-256 of the body, hex: enough to compare texts without storing them.
    pub body_sha256: String,
    pub at: DateTime<Utc>,
    /// How long the sender showed "typing…" to this chat right before sending,
    /// if it did.
    pub typing_ms: Option<u64>,
    /// `kind:source` of an attachment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_tagged_json() {
        let frame = ClientFrame::Send {
            id: "3EB0AA".into(),
            to: "+15550001".into(),
            body: "hi".into(),
            media: None,
        };
        let text = serde_json::to_string(&frame).unwrap();
        assert_eq!(
            text,
            r#"{"op":"send","id":"3EB0AA","to":"+15550001","body":"hi"}"#
        );
        assert_eq!(serde_json::from_str::<ClientFrame>(&text).unwrap(), frame);

        let event = ServerFrame::Event {
            seq: 3,
            event: NetworkEvent::Receipt {
                ids: vec!["3EB0AA".into()],
                kind: ReceiptKind::Read,
                at: DateTime::from_timestamp(0, 0).unwrap(),
            },
        };
        let text = serde_json::to_string(&event).unwrap();
        assert!(
            text.starts_with(r#"{"ev":"event","seq":3,"event":{"type":"receipt""#),
            "{text}"
        );
    }
}
