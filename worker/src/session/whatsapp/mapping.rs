//! From `whatsapp-rust` events to what Herald's session reports: pure
//! functions, tested with the library's own event values.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_shared::db::messages::ReceiptKind;
use whatsapp_rust::{
    Jid,
    types::{
        events::{Event, InboundMessage},
        presence::ReceiptType,
    },
    waproto::whatsapp as wa,
};

use crate::session::{ConnectionState, SessionEvent};

/// What one library event means for the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// The connection state changed.
    State(ConnectionState),
    /// An event for the worker (receipts, inbound messages, pairing, bans).
    Report(SessionEvent),
    /// The server's verdict on a sent message (`None`: accepted).
    Ack { id: String, error: Option<String> },
    /// The client stopped for good; how to go on.
    Ended(Ending),
}

/// Why a client's run loop stops.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// Unlinked: the number needs pairing again.
    LoggedOut(String),
    /// Banned until then: reconnect after it.
    Banned(DateTime<Utc>),
    /// Another client took the session over (normally a second worker).
    Replaced,
    /// Refused to connect for a reason that needs a fresh client later.
    Refused(String),
}

/// Maps one event. `push_name` is the account's display name, for
/// `Connected`.
pub fn map_event(event: &Event, push_name: &str, now: DateTime<Utc>) -> Vec<Mapped> {
    match event {
        Event::Connected(_) => vec![Mapped::State(ConnectionState::Connected {
            push_name: push_name.to_string(),
        })],
        Event::Disconnected(_) => vec![Mapped::State(ConnectionState::Connecting)],
        Event::LoggedOut(out) => {
            let reason = format!("logged out ({:?})", out.reason);
            vec![
                Mapped::State(ConnectionState::LoggedOut {
                    reason: reason.clone(),
                }),
                Mapped::Ended(Ending::LoggedOut(reason)),
            ]
        }
        Event::StreamReplaced(_) => vec![Mapped::Ended(Ending::Replaced)],
        Event::TemporaryBan(ban) => {
            let until = now + ban.expire;
            vec![
                Mapped::Report(SessionEvent::TemporaryBan {
                    code: ban.code.code().to_string(),
                    until,
                }),
                Mapped::Ended(Ending::Banned(until)),
            ]
        }
        Event::ConnectFailure(failure) => vec![Mapped::Ended(Ending::Refused(format!(
            "connection refused ({:?}){}",
            failure.reason,
            failure
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )))],
        Event::ClientOutdated(_) => vec![Mapped::Ended(Ending::Refused(
            "WhatsApp says this client version is outdated".into(),
        ))],
        Event::PairingQrCode(qr) => vec![
            Mapped::State(ConnectionState::Pairing),
            Mapped::Report(SessionEvent::PairingQr {
                code: qr.code.clone(),
                timeout: qr.timeout,
            }),
        ],
        Event::PairingCode(code) => vec![Mapped::Report(SessionEvent::PairCode {
            code: code.code.clone(),
            timeout: code.timeout,
        })],
        Event::PairingQrCodesExhausted(_) => {
            vec![Mapped::Report(SessionEvent::PairingFailed {
                reason: "no QR code was scanned in time".into(),
            })]
        }
        Event::PairingCodeError(err) => vec![Mapped::Report(SessionEvent::PairingFailed {
            reason: format!("the pair code was refused: {}", err.error),
        })],
        Event::PairError(err) => vec![Mapped::Report(SessionEvent::PairingFailed {
            reason: format!("pairing failed: {}", err.error),
        })],
        Event::PairSuccess(paired) => vec![Mapped::Report(SessionEvent::Paired {
            phone: format!("+{}", paired.id.user),
            credential: String::new(),
        })],
        Event::ServerAck(ack) if ack.class.as_deref().is_none_or(|c| c == "message") => {
            vec![Mapped::Ack {
                id: ack.id.clone(),
                error: ack.error.clone(),
            }]
        }
        Event::Receipt(receipt) => {
            let kind = match receipt.r#type {
                ReceiptType::Delivered => ReceiptKind::Delivered,
                ReceiptType::Read | ReceiptType::Played => ReceiptKind::Read,
                // Our own reads on other devices, retries, errors: nothing
                // about the recipient.
                _ => return Vec::new(),
            };
            // Receipts may name the chat by LID: the ids are what matter.
            vec![Mapped::Report(SessionEvent::Receipt {
                wa_message_ids: receipt.message_ids.clone(),
                kind,
                at: receipt.timestamp,
            })]
        }
        Event::Messages(_) => event
            .messages()
            .filter_map(inbound)
            .map(Mapped::Report)
            .collect(),
        _ => Vec::new(),
    }
}

/// A received message, unless it is ours (sent from another device), a
/// group's or a status update.
pub fn inbound(message: &InboundMessage) -> Option<SessionEvent> {
    let source = &message.info.source;
    if source.is_from_me || source.is_group || source.chat.user.as_str() == "status" {
        return None;
    }
    let (kind, text, media_type) = content(&message.message);
    Some(SessionEvent::Inbound {
        wa_message_id: message.info.id.clone(),
        from: sender_address(&source.sender, source.sender_alt.as_ref()),
        kind: kind.to_string(),
        text,
        media_type,
        at: message.info.timestamp,
    })
}

/// The sender as Herald addresses people: `+<digits>` for a phone number
/// (from the alternate address when the chat uses a LID), else the address.
pub fn sender_address(sender: &Jid, alternate: Option<&Jid>) -> String {
    [Some(sender), alternate]
        .into_iter()
        .flatten()
        .find(|jid| jid.is_pn())
        .map(|jid| format!("+{}", jid.user))
        .unwrap_or_else(|| sender.to_non_ad().to_string())
}

/// Kind, text (or caption) and attachment type of a message. Wrappers
/// (disappearing, view once) are looked through.
pub fn content(message: &wa::Message) -> (&'static str, Option<String>, Option<String>) {
    for wrapper in [&message.ephemeral_message, &message.view_once_message] {
        if let Some(inner) = wrapper.as_option().and_then(|w| w.message.as_option()) {
            return content(inner);
        }
    }
    if let Some(text) = &message.conversation {
        return ("text", Some(text.clone()), None);
    }
    if let Some(extended) = message.extended_text_message.as_option() {
        return ("text", extended.text.clone(), None);
    }
    if let Some(image) = message.image_message.as_option() {
        return ("image", image.caption.clone(), image.mimetype.clone());
    }
    if let Some(video) = message.video_message.as_option() {
        return ("video", video.caption.clone(), video.mimetype.clone());
    }
    if let Some(audio) = message.audio_message.as_option() {
        return ("audio", None, audio.mimetype.clone());
    }
    if let Some(document) = message.document_message.as_option() {
        return (
            "document",
            document.caption.clone(),
            document.mimetype.clone(),
        );
    }
    if let Some(sticker) = message.sticker_message.as_option() {
        return ("sticker", None, sticker.mimetype.clone());
    }
    if message.location_message.as_option().is_some() {
        return ("location", None, None);
    }
    if message.contact_message.as_option().is_some()
        || message.contacts_array_message.as_option().is_some()
    {
        return ("contact", None, None);
    }
    ("other", None, None)
}

/// When a reach-out time-lock ends, from the server's answer (unix seconds
/// as text); `None` when there is none in force.
pub fn timelock_end(is_active: Option<bool>, ends: Option<&str>) -> Option<DateTime<Utc>> {
    if is_active == Some(false) {
        return None;
    }
    ends.and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
}

/// The pace of rebuilding a client after its run loop ended.
pub fn backoff(previous: Duration) -> Duration {
    (previous * 2).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use whatsapp_rust::{
        types::{
            events::{
                BatchOrigin, Connected, Disconnected, LoggedOut, MessageBatch, PairSuccess,
                PairingQrCode, PairingQrCodesExhausted, Receipt, ServerAck, StreamReplaced,
                TemporaryBan,
            },
            message::{MessageInfo, MessageSource},
        },
        wacore::{
            net::DisconnectReason,
            types::events::{ConnectFailureReason, TempBanReason},
        },
    };

    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn map(event: Event) -> Vec<Mapped> {
        map_event(&event, "Acme Store", at())
    }

    fn received(source: MessageSource, message: wa::Message) -> Event {
        let info = MessageInfo {
            id: "3A0123456789".into(),
            timestamp: at(),
            source,
            ..Default::default()
        };
        let inbound = InboundMessage::builder()
            .message(Arc::new(message))
            .info(Arc::new(info))
            .build();
        Event::Messages(
            MessageBatch::builder()
                .messages(vec![inbound].into())
                .origin(BatchOrigin::Live)
                .build(),
        )
    }

    fn direct_from(sender: Jid, alternate: Option<Jid>) -> MessageSource {
        MessageSource {
            chat: sender.clone(),
            sender,
            sender_alt: alternate,
            ..Default::default()
        }
    }

    fn text(body: &str) -> wa::Message {
        wa::Message {
            conversation: Some(body.into()),
            ..Default::default()
        }
    }

    #[test]
    fn connection_lifecycle_maps_to_states_and_endings() {
        assert_eq!(
            map(Event::Connected(Connected::builder().build())),
            [Mapped::State(ConnectionState::Connected {
                push_name: "Acme Store".into()
            })]
        );
        assert_eq!(
            map(Event::Disconnected(
                Disconnected::builder()
                    .reason(DisconnectReason::StreamEnded)
                    .build()
            )),
            [Mapped::State(ConnectionState::Connecting)]
        );
        let logged_out = map(Event::LoggedOut(
            LoggedOut::builder()
                .on_connect(false)
                .reason(ConnectFailureReason::LoggedOut)
                .build(),
        ));
        assert!(matches!(
            logged_out.as_slice(),
            [
                Mapped::State(ConnectionState::LoggedOut { .. }),
                Mapped::Ended(Ending::LoggedOut(_))
            ]
        ));
        assert_eq!(
            map(Event::StreamReplaced(StreamReplaced::builder().build())),
            [Mapped::Ended(Ending::Replaced)]
        );
    }

    #[test]
    fn a_temporary_ban_reports_its_end_from_the_expiry_duration() {
        let mapped = map(Event::TemporaryBan(
            TemporaryBan::builder()
                .code(TempBanReason::from(101))
                .expire(chrono::Duration::seconds(3600))
                .build(),
        ));
        let until = at() + chrono::Duration::seconds(3600);
        assert_eq!(
            mapped,
            [
                Mapped::Report(SessionEvent::TemporaryBan {
                    code: "101".into(),
                    until
                }),
                Mapped::Ended(Ending::Banned(until)),
            ]
        );
    }

    #[test]
    fn server_acks_settle_sends_and_other_acks_are_ignored() {
        let ack = |class: &str, error: Option<&str>| {
            Event::ServerAck(
                ServerAck::builder()
                    .id("3EB0AAAABBBBCCCCDDDDEEEE".into())
                    .class(class.into())
                    .maybe_error(error.map(String::from))
                    .build(),
            )
        };
        assert_eq!(
            map(ack("message", None)),
            [Mapped::Ack {
                id: "3EB0AAAABBBBCCCCDDDDEEEE".into(),
                error: None
            }]
        );
        assert_eq!(
            map(ack("message", Some("463"))),
            [Mapped::Ack {
                id: "3EB0AAAABBBBCCCCDDDDEEEE".into(),
                error: Some("463".into())
            }]
        );
        assert!(map(ack("receipt", None)).is_empty());
    }

    #[test]
    fn receipts_map_by_message_id_even_from_a_lid_chat() {
        let receipt = |kind: ReceiptType| {
            Event::Receipt(
                Receipt::builder()
                    .source(direct_from(Jid::lid("123456789012345"), None))
                    .message_ids(vec!["3EB0A".into(), "3EB0B".into()])
                    .timestamp(at())
                    .r#type(kind)
                    .offline(false)
                    .build(),
            )
        };
        assert_eq!(
            map(receipt(ReceiptType::Delivered)),
            [Mapped::Report(SessionEvent::Receipt {
                wa_message_ids: vec!["3EB0A".into(), "3EB0B".into()],
                kind: ReceiptKind::Delivered,
                at: at()
            })]
        );
        for read in [ReceiptType::Read, ReceiptType::Played] {
            assert!(matches!(
                map(receipt(read)).as_slice(),
                [Mapped::Report(SessionEvent::Receipt {
                    kind: ReceiptKind::Read,
                    ..
                })]
            ));
        }
        assert!(map(receipt(ReceiptType::ReadSelf)).is_empty());
        assert!(map(receipt(ReceiptType::Sender)).is_empty());
    }

    #[test]
    fn inbound_messages_name_the_sender_by_phone_and_skip_our_own_and_groups() {
        let from_phone = received(direct_from(Jid::pn("5511987654321"), None), text("STOP"));
        assert_eq!(
            map(from_phone),
            [Mapped::Report(SessionEvent::Inbound {
                wa_message_id: "3A0123456789".into(),
                from: "+5511987654321".into(),
                kind: "text".into(),
                text: Some("STOP".into()),
                media_type: None,
                at: at(),
            })]
        );
        // A LID chat carries the phone as the alternate address.
        let from_lid = received(
            direct_from(Jid::lid("123456789012345"), Some(Jid::pn("5511912345678"))),
            text("hi"),
        );
        assert!(matches!(
            map(from_lid).as_slice(),
            [Mapped::Report(SessionEvent::Inbound { from, .. })] if from == "+5511912345678"
        ));
        let image = wa::Message {
            image_message: Some(wa::message::ImageMessage {
                caption: Some("look".into()),
                mimetype: Some("image/jpeg".into()),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        assert!(matches!(
            map(received(direct_from(Jid::pn("5511987654321"), None), image)).as_slice(),
            [Mapped::Report(SessionEvent::Inbound { kind, text, media_type, .. })]
                if kind == "image" && text.as_deref() == Some("look")
                    && media_type.as_deref() == Some("image/jpeg")
        ));
        let mut mine = direct_from(Jid::pn("5511987654321"), None);
        mine.is_from_me = true;
        assert!(map(received(mine, text("sent from the phone"))).is_empty());
        let mut group = direct_from(Jid::pn("5511987654321"), None);
        group.is_group = true;
        assert!(map(received(group, text("hello all"))).is_empty());
    }

    #[test]
    fn pairing_events_become_codes_links_and_failures() {
        assert_eq!(
            map(Event::PairingQrCode(
                PairingQrCode::builder()
                    .code("2@abc,def".into())
                    .timeout(Duration::from_secs(60))
                    .build()
            )),
            [
                Mapped::State(ConnectionState::Pairing),
                Mapped::Report(SessionEvent::PairingQr {
                    code: "2@abc,def".into(),
                    timeout: Duration::from_secs(60)
                })
            ]
        );
        assert_eq!(
            map(Event::PairSuccess(
                PairSuccess::builder()
                    .id(Jid::pn("5511987654321"))
                    .lid(Jid::lid("123456789012345"))
                    .business_name(String::new())
                    .platform("android".into())
                    .build()
            )),
            [Mapped::Report(SessionEvent::Paired {
                phone: "+5511987654321".into(),
                credential: String::new()
            })]
        );
        assert!(matches!(
            map(Event::PairingQrCodesExhausted(
                PairingQrCodesExhausted::builder()
                    .disconnected(true)
                    .build()
            ))
            .as_slice(),
            [Mapped::Report(SessionEvent::PairingFailed { .. })]
        ));
    }

    #[test]
    fn timelock_ends_are_unix_seconds_when_active() {
        assert_eq!(
            timelock_end(Some(true), Some("1770000000")),
            DateTime::from_timestamp(1_770_000_000, 0)
        );
        assert_eq!(timelock_end(Some(false), Some("1770000000")), None);
        assert_eq!(timelock_end(None, None), None);
        assert_eq!(timelock_end(Some(true), Some("soon")), None);
    }
}
