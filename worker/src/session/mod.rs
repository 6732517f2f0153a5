//! The worker's view of WhatsApp: a session per number, behind a small trait.
//!
//! Two implementations connect to a network: [`sim`] (the simulator, for
//! numbers of kind `sim`) and [`whatsapp`] (`whatsapp-rust`, for kind
//! `whatsapp`; the only module that imports it). Tests use [`fake`], an
//! in-process stand-in. The rest of the worker never knows which one it
//! drives.
//!
//! A session connects, and reconnects after drops, by itself; its
//! [`ConnectionState`] is observable, and everything the network tells it comes
//! out of one ordered event channel. Events that carry a sequence number stay
//! queued on the network until the worker calls [`Session::handled`], so a
//! worker that dies before recording a receipt gets it again on the next
//! connection.

pub mod fake;
pub mod sim;
pub mod whatsapp;

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use herald_shared::{
    db::{messages::ReceiptKind, sender_numbers::SenderNumber},
    domain::{NumberKind, PhoneNumber},
};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Trying to reach the network.
    Connecting,
    /// Ready to send.
    Connected { push_name: String },
    /// Connected but not linked: waiting for a QR code to be scanned.
    Pairing,
    /// Unlinked by the phone or the network: needs pairing again. Final for
    /// this session.
    LoggedOut { reason: String },
    /// Shut down by the worker. Final.
    Closed,
}

/// What the network tells a session, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    StateChanged(ConnectionState),
    /// Show this code as a QR to pair the number.
    PairingQr {
        code: String,
        timeout: Duration,
    },
    /// Type this code on the phone (Linked devices → Link with phone
    /// number) to pair the number.
    PairCode {
        code: String,
        timeout: Duration,
    },
    /// The device got linked to the account `phone`; `credential` (if the
    /// network hands one out) lets it reconnect later.
    Paired {
        phone: String,
        credential: String,
    },
    /// Pairing ended without a link (codes ran out, the phone refused).
    PairingFailed {
        reason: String,
    },
    Receipt {
        wa_message_ids: Vec<String>,
        kind: ReceiptKind,
        at: DateTime<Utc>,
    },
    Inbound {
        wa_message_id: String,
        /// The sender's phone number, as the network gives it.
        from: String,
        /// `text`, `image`, `video`, `audio`, `document`, `sticker`,
        /// `location`, `contact` or `other`.
        kind: String,
        /// The text, or a media message's caption.
        text: Option<String>,
        media_type: Option<String>,
        at: DateTime<Utc>,
    },
    /// The network banned the number until `until`; the session stops
    /// reconnecting until then.
    TemporaryBan {
        code: String,
        until: DateTime<Utc>,
    },
}

/// An event, with the sequence number to acknowledge once it is recorded
/// (`None` for events that need no acknowledgement).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub seq: Option<u64>,
    pub event: SessionEvent,
}

/// A text to send under an id the caller chose, with an optional image or
/// document.
#[derive(Debug, Clone)]
pub struct OutgoingText {
    pub wa_message_id: String,
    pub to: PhoneNumber,
    pub body: String,
    pub media: Option<Attachment>,
}

/// An image or document, as stored with a message (`{"kind", "url" |
/// "media_id", "filename"?}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Attachment {
    /// `image` or `document`.
    pub kind: String,
    pub url: Option<String>,
    pub media_id: Option<uuid::Uuid>,
    pub filename: Option<String>,
}

impl Attachment {
    /// Reads an attachment stored with a message; `None` if absent or not one.
    pub fn from_stored(value: Option<&serde_json::Value>) -> Option<Self> {
        value.and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Where its bytes come from: the URL, or `media:<id>` for an upload.
    pub fn source(&self) -> String {
        match (&self.url, self.media_id) {
            (Some(url), _) => url.clone(),
            (None, Some(id)) => format!("media:{id}"),
            (None, None) => String::new(),
        }
    }
}

/// Why a send did not end with the server accepting the message. The three
/// cases decide what Herald may do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Provably did not leave (not connected, refused before the wire): safe
    /// to try again.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The server refused it with a code (`463` = reach-out time-lock).
    #[error("refused by the server with code {code}")]
    Rejected { code: String },
    /// Written to the connection, but no verdict came back: it may or may not
    /// have reached WhatsApp. Never resend automatically.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("session not connected")]
    NotConnected,
    #[error("session: {0}")]
    Failed(String),
}

#[async_trait]
pub trait Session: Send + Sync {
    /// Current connection state, and its changes.
    fn state(&self) -> watch::Receiver<ConnectionState>;

    /// Sends a text and waits (up to the session's ack timeout) for the
    /// server's verdict.
    async fn send_text(&self, message: &OutgoingText) -> Result<(), SendError>;

    /// Shows or stops "typing…" in the chat with `to`.
    async fn typing(&self, to: &PhoneNumber, typing: bool) -> Result<(), SessionError>;

    /// Online / offline presence.
    async fn set_presence(&self, available: bool) -> Result<(), SessionError>;

    /// Marks received messages read.
    async fn mark_read(&self, chat: &str, wa_message_ids: &[String]) -> Result<(), SessionError>;

    /// When the number's reach-out time-lock ends, if it has one.
    async fn reachout_timelock(&self) -> Result<Option<DateTime<Utc>>, SessionError>;

    /// Which of `phones` use WhatsApp.
    async fn is_on_whatsapp(
        &self,
        phones: &[PhoneNumber],
    ) -> Result<HashMap<PhoneNumber, bool>, SessionError>;

    /// Every event up to and including `seq` is recorded: the network may
    /// forget them.
    async fn handled(&self, seq: u64);

    /// While unpaired: asks for a code to type on `phone` (it arrives as
    /// [`SessionEvent::PairCode`]).
    async fn request_pair_code(&self, phone: &PhoneNumber) -> Result<(), SessionError>;

    /// Unlinks the device from the number.
    async fn logout(&self) -> Result<(), SessionError>;

    /// Disconnects for good.
    async fn shutdown(&self);
}

/// Waits until `session` is connected, up to `timeout`. `Err` carries the
/// state it was in instead.
pub async fn wait_connected(
    session: &dyn Session,
    timeout: Duration,
) -> Result<(), ConnectionState> {
    let mut state = session.state();
    let waited = tokio::time::timeout(timeout, async {
        loop {
            let current = state.borrow_and_update().clone();
            match current {
                ConnectionState::Connected { .. } => return Ok(()),
                ConnectionState::LoggedOut { .. } | ConnectionState::Closed => {
                    return Err(current);
                }
                _ => {}
            }
            if state.changed().await.is_err() {
                return Err(ConnectionState::Closed);
            }
        }
    })
    .await;
    match waited {
        Ok(result) => result,
        Err(_) => Err(session.state().borrow().clone()),
    }
}

/// Events of one session, in order.
pub type Events = mpsc::Receiver<Envelope>;

/// Opens sessions for one kind of number.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Starts a session for `number`; it connects in the background.
    async fn open(&self, number: &SenderNumber)
    -> Result<(Arc<dyn Session>, Events), SessionError>;
}

/// The connectors this worker has, by number kind. A worker only leases
/// numbers of kinds it can drive.
#[derive(Clone, Default)]
pub struct Connectors {
    by_kind: HashMap<NumberKind, Arc<dyn Connector>>,
}

impl Connectors {
    pub fn with(mut self, kind: NumberKind, connector: Arc<dyn Connector>) -> Self {
        self.by_kind.insert(kind, connector);
        self
    }

    pub fn kinds(&self) -> Vec<NumberKind> {
        self.by_kind.keys().copied().collect()
    }

    pub fn get(&self, kind: NumberKind) -> Option<&Arc<dyn Connector>> {
        self.by_kind.get(&kind)
    }
}
