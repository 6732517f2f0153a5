//! Numbers of kind `whatsapp`: a [`Session`] over `whatsapp-rust` 0.7 (the
//! WhatsApp Web multi-device protocol). This module tree is the only place
//! that imports `whatsapp_rust`.
//!
//! - [`store`]: the library's storage backend over Postgres (sealed rows),
//!   so any worker holding the lease can open the number.
//! - [`mapping`]: library events to session states and events.
//!
//! A session supervises clients: it builds one (`Bot` over the number's
//! store), forwards its events in order (a channel handler, never the
//! concurrent callbacks), and when the client's run loop ends (a drop the
//! library gave up on, a ban, a replaced stream) it builds a *fresh* one
//! after a back-off: a client is never reused after it stopped. A logout
//! ends the session (the number needs pairing again).
//!
//! A send registers its server-ack waiter before the call, sends under the
//! id Herald fixed (`SendOptions::with_message_id`), and waits for
//! `ServerAck`: `Ok` from the call only means "written to the socket".

pub mod mapping;
pub mod store;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use herald_shared::{
    db::{self, Pool, sender_numbers::SenderNumber},
    domain::PhoneNumber,
};
use rand::RngExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
/// The library itself, for tests that drive it directly (the conformance
/// test of the store, event mapping tests).
pub use whatsapp_rust as library;
use whatsapp_rust::{
    Client, ClientError, Jid, SendError as LibSendError, SendOptions, bot::Bot,
    download::MediaType, pair_code::PairCodeOptions, socket::error::EncryptSendErrorKind,
    types::events::ChannelEventHandler, upload::UploadOptions, waproto::whatsapp as wa,
};

use self::{
    mapping::{Ending, Mapped, map_event},
    store::PgBackend,
};
use super::{
    Attachment, ConnectionState, Connector, Envelope, Events, OutgoingText, SendError, Session,
    SessionError, SessionEvent,
};
use crate::keystore::{DataKey, MasterKey};

/// Events buffered between the library and the worker's pump.
const EVENT_BUFFER: usize = 1024;
/// Time allowed for a question to the server (contact checks, time-lock).
const QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// Time allowed for the pairing socket to come up before asking for a code.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a replaced session waits before trying again: another client
/// (normally another worker whose lease just ended) holds the number.
const REPLACED_WAIT: Duration = Duration::from_secs(30);

/// Opens `whatsapp` numbers.
pub struct WhatsappConnector {
    pool: Pool,
    master: Arc<MasterKey>,
    ack_timeout: Duration,
    send_timeout: Duration,
}

impl WhatsappConnector {
    pub fn new(
        pool: Pool,
        master: Arc<MasterKey>,
        ack_timeout: Duration,
        send_timeout: Duration,
    ) -> Self {
        Self {
            pool,
            master,
            ack_timeout,
            send_timeout,
        }
    }
}

#[async_trait]
impl Connector for WhatsappConnector {
    async fn open(
        &self,
        number: &SenderNumber,
    ) -> Result<(Arc<dyn Session>, Events), SessionError> {
        let key = {
            let client = self
                .pool
                .get()
                .await
                .map_err(|err| SessionError::Failed(format!("database: {err}")))?;
            DataKey::for_number(&client, &self.master, number.tenant_id, number.id)
                .await
                .map_err(|err| SessionError::Failed(err.to_string()))?
        };
        let backend = Arc::new(PgBackend::new(self.pool.clone(), Arc::new(key)));
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let (state, _) = watch::channel(ConnectionState::Connecting);
        let shared = Arc::new(Shared {
            number_id: number.id,
            pool: self.pool.clone(),
            ack_timeout: self.ack_timeout,
            send_timeout: self.send_timeout,
            client: Mutex::new(None),
            acks: Mutex::new(HashMap::new()),
            state,
            stop: CancellationToken::new(),
        });
        tokio::spawn(supervise(shared.clone(), backend, events));
        Ok((Arc::new(WhatsappSession { shared }), receiver))
    }
}

struct Shared {
    number_id: uuid::Uuid,
    /// For reading uploaded media.
    pool: Pool,
    ack_timeout: Duration,
    send_timeout: Duration,
    /// The client of the current run (none between runs).
    client: Mutex<Option<Arc<Client>>>,
    /// Sends waiting for their server ack, by message id.
    acks: Mutex<HashMap<String, oneshot::Sender<Option<String>>>>,
    state: watch::Sender<ConnectionState>,
    stop: CancellationToken,
}

impl Shared {
    fn client(&self) -> Option<Arc<Client>> {
        self.client.lock().expect("client lock").clone()
    }

    fn connected_client(&self) -> Result<Arc<Client>, SessionError> {
        match (&*self.state.borrow(), self.client()) {
            (ConnectionState::Connected { .. }, Some(client)) => Ok(client),
            _ => Err(SessionError::NotConnected),
        }
    }
}

/// Builds clients one after the other until the session ends.
async fn supervise(shared: Arc<Shared>, backend: Arc<PgBackend>, events: mpsc::Sender<Envelope>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        if shared.stop.is_cancelled() {
            break;
        }
        let ending = run_client(&shared, backend.clone(), &events).await;
        // Whatever waited on that client will not hear back from it.
        shared.client.lock().expect("client lock").take();
        shared.acks.lock().expect("acks lock").clear();
        let wait = match ending {
            None => break,
            Some(Ending::LoggedOut(reason)) => {
                let state = ConnectionState::LoggedOut { reason };
                shared.state.send_replace(state.clone());
                let _ = events
                    .send(Envelope {
                        seq: None,
                        event: SessionEvent::StateChanged(state),
                    })
                    .await;
                return;
            }
            Some(Ending::Banned(until)) => (until - Utc::now())
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(24 * 3600)),
            Some(Ending::Replaced) => REPLACED_WAIT,
            Some(Ending::Refused(reason)) => {
                tracing::warn!(number_id = %shared.number_id, %reason, "whatsapp client stopped");
                backoff = mapping::backoff(backoff);
                backoff
            }
        };
        set_state(&shared, &events, ConnectionState::Connecting).await;
        let jitter = rand::rng().random_range(0..=wait.as_millis() as u64 / 5);
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = tokio::time::sleep(wait + Duration::from_millis(jitter)) => {}
        }
    }
    set_state(&shared, &events, ConnectionState::Closed).await;
}

async fn set_state(shared: &Shared, events: &mpsc::Sender<Envelope>, state: ConnectionState) {
    if *shared.state.borrow() == state {
        return;
    }
    shared.state.send_replace(state.clone());
    let _ = events
        .send(Envelope {
            seq: None,
            event: SessionEvent::StateChanged(state),
        })
        .await;
}

/// One client from build to the end of its run loop. `None`: stopped.
async fn run_client(
    shared: &Shared,
    backend: Arc<PgBackend>,
    events: &mpsc::Sender<Envelope>,
) -> Option<Ending> {
    let bot = match Bot::builder()
        .with_backend_arc(backend)
        .skip_history_sync()
        .build()
        .await
    {
        Ok(bot) => bot,
        Err(err) => return Some(Ending::Refused(format!("could not build a client: {err}"))),
    };
    let client = bot.client();
    // Subscribed before the run starts, so no event is missed; a channel
    // keeps the library's order.
    let (handler, library_events) = ChannelEventHandler::new();
    let _subscription = client.subscribe_handler(handler);
    *shared.client.lock().expect("client lock") = Some(client.clone());
    let mut handle = bot.spawn();
    let mut ending = None;
    let stopped = loop {
        let event = tokio::select! {
            _ = shared.stop.cancelled() => break true,
            _ = &mut handle => break false,
            event = library_events.recv() => event,
        };
        let Ok(event) = event else { break false };
        for mapped in map_event(&event, &client.push_name(), Utc::now()) {
            if let Some(end) = apply(shared, events, mapped).await {
                ending = Some(end);
            }
        }
    };
    if stopped {
        handle.shutdown().await;
        return None;
    }
    // The run loop is over: what it said last is still in the channel.
    while let Ok(event) = library_events.try_recv() {
        for mapped in map_event(&event, &client.push_name(), Utc::now()) {
            if let Some(end) = apply(shared, events, mapped).await {
                ending = Some(end);
            }
        }
    }
    Some(ending.unwrap_or_else(|| Ending::Refused("the client stopped".into())))
}

async fn apply(shared: &Shared, events: &mpsc::Sender<Envelope>, mapped: Mapped) -> Option<Ending> {
    match mapped {
        Mapped::State(state) => set_state(shared, events, state).await,
        Mapped::Report(event) => {
            let _ = events.send(Envelope { seq: None, event }).await;
        }
        Mapped::Ack { id, error } => {
            if let Some(waiter) = shared.acks.lock().expect("acks lock").remove(&id) {
                let _ = waiter.send(error);
            }
        }
        Mapped::Ended(ending) => return Some(ending),
    }
    None
}

/// Whether a failed send provably never reached the wire.
fn classify(err: &LibSendError) -> SendError {
    let before_the_wire = match err {
        LibSendError::NotLoggedIn | LibSendError::InvalidRequest(_) | LibSendError::Iq(_) => true,
        LibSendError::Client(client) => match client {
            ClientError::NotConnected | ClientError::NotLoggedIn | ClientError::Iq(_) => true,
            ClientError::EncryptSend(failure) => matches!(
                failure.kind,
                EncryptSendErrorKind::Crypto
                    | EncryptSendErrorKind::Framing
                    | EncryptSendErrorKind::ChannelClosed
                    | EncryptSendErrorKind::Poisoned
            ),
            _ => false,
        },
        _ => false,
    };
    if before_the_wire {
        SendError::NotSent(err.to_string())
    } else {
        SendError::Unknown(err.to_string())
    }
}

fn jid(phone: &PhoneNumber) -> Jid {
    Jid::pn(phone.digits())
}

pub struct WhatsappSession {
    shared: Arc<Shared>,
}

impl WhatsappSession {
    /// The message to send: the text, or an uploaded attachment with the
    /// text as its caption.
    async fn message(
        &self,
        client: &Client,
        text: &OutgoingText,
    ) -> Result<wa::Message, SendError> {
        let Some(attachment) = &text.media else {
            return Ok(wa::Message {
                conversation: Some(text.body.clone()),
                ..Default::default()
            });
        };
        let (bytes, mimetype, filename) = self.attachment_bytes(attachment).await?;
        let media_type = if attachment.kind == "image" {
            MediaType::Image
        } else {
            MediaType::Document
        };
        let uploaded = client
            .upload(bytes, media_type, UploadOptions::default())
            .await
            .map_err(|err| SendError::NotSent(format!("media upload failed: {err}")))?;
        // Image and document messages carry the same upload fields.
        macro_rules! uploaded_media {
            ($kind:ident { $($extra:tt)* }) => {
                wa::message::$kind {
                    url: Some(uploaded.url),
                    direct_path: Some(uploaded.direct_path),
                    media_key: Some(uploaded.media_key.to_vec()),
                    file_enc_sha256: Some(uploaded.file_enc_sha256.to_vec()),
                    file_sha256: Some(uploaded.file_sha256.to_vec()),
                    file_length: Some(uploaded.file_length),
                    media_key_timestamp: Some(uploaded.media_key_timestamp),
                    mimetype: Some(mimetype),
                    caption: Some(text.body.clone()),
                    $($extra)*
                    ..Default::default()
                }
            };
        }
        let mut message = wa::Message::default();
        if attachment.kind == "image" {
            message.image_message = Some(uploaded_media!(ImageMessage {})).into();
        } else {
            message.document_message = Some(uploaded_media!(DocumentMessage {
                file_name: filename.clone(),
                title: filename,
            }))
            .into();
        }
        Ok(message)
    }

    /// An upload's bytes. Attachments by URL are fetched by the network for
    /// simulated numbers; for WhatsApp numbers upload the file first.
    async fn attachment_bytes(
        &self,
        attachment: &Attachment,
    ) -> Result<(Vec<u8>, String, Option<String>), SendError> {
        let Some(media_id) = attachment.media_id else {
            return Err(SendError::Rejected {
                code: "media-url-unsupported".into(),
            });
        };
        let client = self
            .shared
            .pool
            .get()
            .await
            .map_err(|err| SendError::NotSent(format!("database: {err}")))?;
        let media = db::media::content(&client, media_id)
            .await
            .map_err(|err| SendError::NotSent(format!("database: {err}")))?
            .ok_or_else(|| SendError::Rejected {
                code: "media-missing".into(),
            })?;
        Ok((
            media.bytes,
            media.content_type,
            attachment.filename.clone().or(media.filename),
        ))
    }
}

#[async_trait]
impl Session for WhatsappSession {
    fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    async fn send_text(&self, text: &OutgoingText) -> Result<(), SendError> {
        let client = self
            .shared
            .connected_client()
            .map_err(|_| SendError::NotSent("not connected".into()))?;
        let message = self.message(&client, text).await?;
        let id = text.wa_message_id.clone();
        // Registered before the call: the ack may overtake its return.
        let (waiter, verdict) = oneshot::channel();
        self.shared
            .acks
            .lock()
            .expect("acks lock")
            .insert(id.clone(), waiter);
        let sent = tokio::time::timeout(
            self.shared.send_timeout,
            client.send_message_with_options(
                jid(&text.to),
                message,
                SendOptions::default().with_message_id(id.clone()),
            ),
        )
        .await;
        let forget = || {
            self.shared.acks.lock().expect("acks lock").remove(&id);
        };
        match sent {
            Err(_) => {
                forget();
                return Err(SendError::Unknown(format!(
                    "the send did not complete within {:?}",
                    self.shared.send_timeout
                )));
            }
            Ok(Err(err)) => {
                forget();
                return Err(classify(&err));
            }
            Ok(Ok(_)) => {}
        }
        match tokio::time::timeout(self.shared.ack_timeout, verdict).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(code))) => Err(SendError::Rejected { code }),
            Ok(Err(_)) => Err(SendError::Unknown(
                "the connection ended before the server ack".into(),
            )),
            Err(_) => {
                forget();
                Err(SendError::Unknown(format!(
                    "no server ack within {:?}",
                    self.shared.ack_timeout
                )))
            }
        }
    }

    async fn typing(&self, to: &PhoneNumber, typing: bool) -> Result<(), SessionError> {
        let client = self.shared.connected_client()?;
        let chatstate = client.chatstate();
        let result = if typing {
            chatstate.send_composing(&jid(to)).await
        } else {
            chatstate.send_paused(&jid(to)).await
        };
        result.map_err(|err| SessionError::Failed(err.to_string()))
    }

    async fn set_presence(&self, available: bool) -> Result<(), SessionError> {
        let client = self.shared.connected_client()?;
        let presence = client.presence();
        let result = if available {
            presence.set_available().await
        } else {
            presence.set_unavailable().await
        };
        result.map_err(|err| SessionError::Failed(err.to_string()))
    }

    async fn mark_read(&self, chat: &str, wa_message_ids: &[String]) -> Result<(), SessionError> {
        let client = self.shared.connected_client()?;
        let chat: Jid = match chat.parse() {
            Ok(jid) if chat.contains('@') => jid,
            _ => Jid::pn(chat.trim_start_matches('+')),
        };
        let ids: Vec<&str> = wa_message_ids.iter().map(String::as_str).collect();
        client
            .mark_as_read(&chat, None, &ids)
            .await
            .map_err(|err| SessionError::Failed(err.to_string()))
    }

    async fn reachout_timelock(&self) -> Result<Option<DateTime<Utc>>, SessionError> {
        let client = self.shared.connected_client()?;
        let answer = tokio::time::timeout(QUERY_TIMEOUT, client.mex().fetch_reachout_timelock())
            .await
            .map_err(|_| SessionError::Failed("no answer to the time-lock query".into()))?
            .map_err(|err| SessionError::Failed(err.to_string()))?;
        Ok(mapping::timelock_end(
            answer.is_active,
            answer.time_enforcement_ends.as_deref(),
        ))
    }

    async fn is_on_whatsapp(
        &self,
        phones: &[PhoneNumber],
    ) -> Result<HashMap<PhoneNumber, bool>, SessionError> {
        let client = self.shared.connected_client()?;
        let jids: Vec<Jid> = phones.iter().map(jid).collect();
        let results = tokio::time::timeout(QUERY_TIMEOUT, client.contacts().is_on_whatsapp(&jids))
            .await
            .map_err(|_| SessionError::Failed("no answer to the contact check".into()))?
            .map_err(|err| SessionError::Failed(err.to_string()))?;
        Ok(phones
            .iter()
            .map(|phone| {
                let digits = phone.digits();
                let on = results.iter().any(|r| {
                    r.is_registered
                        && (r.jid.user.as_str() == digits
                            || r.pn_jid.as_ref().is_some_and(|p| p.user.as_str() == digits))
                });
                (phone.clone(), on)
            })
            .collect())
    }

    async fn handled(&self, _seq: u64) {
        // The library acknowledges what it decrypted itself.
    }

    async fn request_pair_code(&self, phone: &PhoneNumber) -> Result<(), SessionError> {
        let client = self.shared.client().ok_or(SessionError::NotConnected)?;
        client
            .wait_for_socket(SOCKET_TIMEOUT)
            .await
            .map_err(|err| SessionError::Failed(err.to_string()))?;
        client
            .pair_with_code(PairCodeOptions {
                phone_number: phone.digits().to_string(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|err| SessionError::Failed(err.to_string()))
    }

    async fn logout(&self) -> Result<(), SessionError> {
        let client = self.shared.client().ok_or(SessionError::NotConnected)?;
        client.logout().await;
        Ok(())
    }

    async fn shutdown(&self) {
        self.shared.stop.cancel();
    }
}

impl Drop for WhatsappSession {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use whatsapp_rust::socket::error::EncryptSendError;

    use super::*;

    #[test]
    fn only_failures_before_the_wire_may_be_retried() {
        let not_sent = [
            LibSendError::NotLoggedIn,
            LibSendError::InvalidRequest("bad jid".into()),
            LibSendError::Client(ClientError::NotConnected),
            LibSendError::Client(ClientError::EncryptSend(EncryptSendError::crypto(
                anyhow::anyhow!("no session"),
            ))),
            LibSendError::Client(ClientError::EncryptSend(EncryptSendError::channel_closed())),
        ];
        for err in &not_sent {
            assert!(matches!(classify(err), SendError::NotSent(_)), "{err}");
        }
        let unknown = [
            LibSendError::Internal(anyhow::anyhow!("protobuf")),
            LibSendError::Client(ClientError::EncryptSend(EncryptSendError::transport(
                anyhow::anyhow!("broken pipe"),
            ))),
        ];
        for err in &unknown {
            assert!(matches!(classify(err), SendError::Unknown(_)), "{err}");
        }
    }
}
