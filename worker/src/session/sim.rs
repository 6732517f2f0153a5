//! Sessions on the simulated network (`herald-sim`), over its line-delimited
//! JSON device protocol ([`herald_sim::protocol`]).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use herald_shared::{
    db::{
        DbError, Pool,
        messages::ReceiptKind,
        sender_numbers::SenderNumber,
        session_rows::{self, NewRows, StoredRow},
    },
    domain::PhoneNumber,
};
use herald_sim::protocol::{
    self as wire, ChatState, ClientFrame, MAX_FRAME_BYTES, NetworkEvent, ServerFrame,
};
use rand::RngExt;
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot, watch},
};
use tokio_util::{
    codec::{FramedRead, FramedWrite, LinesCodec},
    sync::CancellationToken,
};

use super::{
    ConnectionState, Connector, Envelope, Events, OutgoingText, SendError, Session, SessionError,
    SessionEvent,
};
use crate::keystore::{DataKey, MasterKey};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a logout waits for the network to end the linked session.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(10);
/// Events buffered between the connection and the worker; past this the
/// connection stops reading (back-pressure to the network).
const EVENT_BUFFER: usize = 1024;

/// Where a paired device's credential is kept (sealed) in the number's
/// session rows, so whichever worker drives the number next presents it.
const CREDENTIAL: &str = "sim_credential";

/// Opens sessions on the simulator at `addr`.
pub struct SimConnector {
    addr: String,
    ack_timeout: Duration,
    pool: Pool,
    master: Arc<MasterKey>,
}

impl SimConnector {
    pub fn new(
        addr: impl Into<String>,
        ack_timeout: Duration,
        pool: Pool,
        master: Arc<MasterKey>,
    ) -> Self {
        Self {
            addr: addr.into(),
            ack_timeout,
            pool,
            master,
        }
    }

    /// The number's data key and the credential stored under it, if any.
    async fn credential(
        &self,
        number: &SenderNumber,
    ) -> Result<(Arc<DataKey>, Option<String>), SessionError> {
        let failed = |err: String| SessionError::Failed(err);
        let client = self
            .pool
            .get()
            .await
            .map_err(|err| failed(format!("database: {err}")))?;
        let key = DataKey::for_number(&client, &self.master, number.tenant_id, number.id)
            .await
            .map_err(|err| failed(err.to_string()))?;
        let credential = match session_rows::get(&client, number.id, CREDENTIAL, "", "")
            .await
            .map_err(|err| failed(err.to_string()))?
        {
            Some(row) => Some(
                String::from_utf8(
                    key.open(CREDENTIAL, "", "", &row.value)
                        .map_err(|err| failed(err.to_string()))?,
                )
                .map_err(|_| failed("a stored credential is not text".into()))?,
            ),
            None => None,
        };
        Ok((Arc::new(key), credential))
    }
}

/// Keeps the credential the network handed out at pairing.
async fn store_credential(pool: &Pool, key: &DataKey, credential: &str) -> Result<(), DbError> {
    let client = pool.get().await?;
    let mut rows = NewRows::default();
    rows.push(StoredRow {
        key: String::new(),
        sub: String::new(),
        value: key.seal(CREDENTIAL, "", "", credential.as_bytes()),
        n1: None,
        n2: None,
        flag: false,
    });
    session_rows::put(&client, key.number_id(), CREDENTIAL, &rows).await
}

#[async_trait]
impl Connector for SimConnector {
    async fn open(
        &self,
        number: &SenderNumber,
    ) -> Result<(Arc<dyn Session>, Events), SessionError> {
        let (key, credential) = self.credential(number).await?;
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let (state, _) = watch::channel(ConnectionState::Connecting);
        let shared = Arc::new(Shared {
            addr: self.addr.clone(),
            phone: number.phone.clone(),
            ack_timeout: self.ack_timeout,
            pool: self.pool.clone(),
            key,
            credential: Mutex::new(credential),
            outbound: Mutex::new(None),
            acks: Mutex::new(HashMap::new()),
            checks: Mutex::new(HashMap::new()),
            timelock_queries: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            state,
            stop: CancellationToken::new(),
        });
        tokio::spawn(connection_loop(shared.clone(), events));
        Ok((Arc::new(SimSession { shared }), receiver))
    }
}

struct Shared {
    addr: String,
    phone: PhoneNumber,
    ack_timeout: Duration,
    /// Where the credential is kept, sealed with the number's key.
    pool: Pool,
    key: Arc<DataKey>,
    /// Handed out by the network at pairing; presented on every reconnect.
    credential: Mutex<Option<String>>,
    /// Frames to write on the current connection (`None` between connections).
    outbound: Mutex<Option<mpsc::UnboundedSender<ClientFrame>>>,
    /// Sends waiting for their server ack, by message id.
    acks: Mutex<HashMap<String, oneshot::Sender<Option<String>>>>,
    checks: Mutex<HashMap<u64, oneshot::Sender<Vec<wire::CheckedPhone>>>>,
    timelock_queries: Mutex<HashMap<u64, oneshot::Sender<Option<DateTime<Utc>>>>>,
    next_request: AtomicU64,
    state: watch::Sender<ConnectionState>,
    stop: CancellationToken,
}

impl Shared {
    fn set_state(&self, state: ConnectionState) {
        self.state.send_replace(state);
    }

    fn write(&self, frame: ClientFrame) -> Result<(), SessionError> {
        let outbound = self.outbound.lock().expect("outbound lock");
        match outbound.as_ref() {
            Some(sender) => sender.send(frame).map_err(|_| SessionError::NotConnected),
            None => Err(SessionError::NotConnected),
        }
    }

    fn is_connected(&self) -> bool {
        matches!(*self.state.borrow(), ConnectionState::Connected { .. })
    }
}

/// How one connection ended.
enum Ended {
    /// Dropped or refused; try again.
    Dropped(String),
    /// Banned: try again once the ban is over.
    Banned(DateTime<Utc>),
    LoggedOut(String),
    Stopped,
}

async fn connection_loop(shared: Arc<Shared>, events: mpsc::Sender<Envelope>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let (ended, was_ready) = connect_once(&shared, &events).await;
        // Whatever was waiting on this connection will not hear back from it.
        shared.outbound.lock().expect("outbound lock").take();
        shared.acks.lock().expect("acks lock").clear();
        shared.checks.lock().expect("checks lock").clear();
        shared
            .timelock_queries
            .lock()
            .expect("timelock lock")
            .clear();
        let next = match ended {
            Ended::Stopped => ConnectionState::Closed,
            Ended::LoggedOut(reason) => ConnectionState::LoggedOut { reason },
            Ended::Dropped(reason) => {
                tracing::debug!(number = %shared.phone.masked(), %reason, "sim connection dropped");
                ConnectionState::Connecting
            }
            Ended::Banned(until) => {
                // Nothing to gain from knocking before the ban ends.
                let wait = (until - Utc::now()).to_std().unwrap_or_default();
                backoff = backoff.max(wait.min(Duration::from_secs(3600)));
                ConnectionState::Connecting
            }
        };
        let last = matches!(
            next,
            ConnectionState::Closed | ConnectionState::LoggedOut { .. }
        );
        shared.set_state(next.clone());
        let _ = events
            .send(Envelope {
                seq: None,
                event: SessionEvent::StateChanged(next),
            })
            .await;
        if last {
            return;
        }
        if was_ready {
            backoff = Duration::from_millis(200);
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        tokio::select! {
            _ = shared.stop.cancelled() => {
                shared.set_state(ConnectionState::Closed);
                return;
            }
            _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection, from TCP connect to its end. Returns how it ended and
/// whether it got as far as ready.
async fn connect_once(shared: &Shared, events: &mpsc::Sender<Envelope>) -> (Ended, bool) {
    if shared.stop.is_cancelled() {
        return (Ended::Stopped, false);
    }
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&shared.addr)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return (Ended::Dropped(format!("connect: {err}")), false),
        Err(_) => return (Ended::Dropped("connect timed out".into()), false),
    };
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_FRAME_BYTES));
    let mut sink = FramedWrite::new(write, LinesCodec::new_with_max_length(MAX_FRAME_BYTES));
    let (outbound, mut to_write) = mpsc::unbounded_channel::<ClientFrame>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = to_write.recv().await {
            let line = serde_json::to_string(&frame).expect("frames serialise");
            if sink.send(line).await.is_err() {
                break;
            }
        }
    });
    let credential = shared.credential.lock().expect("credential lock").clone();
    let _ = outbound.send(ClientFrame::Hello {
        phone: shared.phone.as_str().to_string(),
        credential,
    });
    *shared.outbound.lock().expect("outbound lock") = Some(outbound);

    let mut ready = false;
    let ended = loop {
        let line = tokio::select! {
            _ = shared.stop.cancelled() => break Ended::Stopped,
            line = lines.next() => line,
        };
        let frame = match line {
            Some(Ok(line)) => match serde_json::from_str::<ServerFrame>(&line) {
                Ok(frame) => frame,
                Err(err) => break Ended::Dropped(format!("bad frame from network: {err}")),
            },
            Some(Err(err)) => break Ended::Dropped(format!("read: {err}")),
            None => break Ended::Dropped("closed by the network".into()),
        };
        let event = match frame {
            ServerFrame::Ready { push_name } => {
                ready = true;
                let state = ConnectionState::Connected { push_name };
                shared.set_state(state.clone());
                Some((None, SessionEvent::StateChanged(state)))
            }
            ServerFrame::PairingQr { code, timeout_ms } => {
                shared.set_state(ConnectionState::Pairing);
                Some((
                    None,
                    SessionEvent::PairingQr {
                        code,
                        timeout: Duration::from_millis(timeout_ms),
                    },
                ))
            }
            ServerFrame::PairCode { code, timeout_ms } => Some((
                None,
                SessionEvent::PairCode {
                    code,
                    timeout: Duration::from_millis(timeout_ms),
                },
            )),
            ServerFrame::Paired {
                phone, credential, ..
            } => {
                *shared.credential.lock().expect("credential lock") = Some(credential.clone());
                // Kept before the pairing is reported: a number recorded as
                // linked always has its credential.
                if let Err(err) = store_credential(&shared.pool, &shared.key, &credential).await {
                    tracing::warn!(number = %shared.phone.masked(), error = %err, "could not store the pairing credential");
                }
                Some((None, SessionEvent::Paired { phone, credential }))
            }
            ServerFrame::LoggedOut { reason } => break Ended::LoggedOut(reason),
            ServerFrame::TemporaryBan { code, until } => {
                let _ = events
                    .send(Envelope {
                        seq: None,
                        event: SessionEvent::TemporaryBan { code, until },
                    })
                    .await;
                break Ended::Banned(until);
            }
            ServerFrame::ReachoutTimelockResult { request, until } => {
                if let Some(waiter) = shared
                    .timelock_queries
                    .lock()
                    .expect("timelock lock")
                    .remove(&request)
                {
                    let _ = waiter.send(until);
                }
                None
            }
            ServerFrame::Closing { reason } => break Ended::Dropped(reason),
            ServerFrame::ServerAck { id, error } => {
                if let Some(waiter) = shared.acks.lock().expect("acks lock").remove(&id) {
                    let _ = waiter.send(error);
                }
                None
            }
            ServerFrame::CheckResult { request, results } => {
                if let Some(waiter) = shared.checks.lock().expect("checks lock").remove(&request) {
                    let _ = waiter.send(results);
                }
                None
            }
            ServerFrame::Event { seq, event } => Some((Some(seq), convert(event))),
        };
        if let Some((seq, event)) = event
            && events.send(Envelope { seq, event }).await.is_err()
        {
            // Nobody listens any more: the session is being dropped.
            break Ended::Stopped;
        }
    };
    shared.outbound.lock().expect("outbound lock").take();
    writer.abort();
    (ended, ready)
}

fn convert(event: NetworkEvent) -> SessionEvent {
    match event {
        NetworkEvent::Receipt { ids, kind, at } => SessionEvent::Receipt {
            wa_message_ids: ids,
            kind: match kind {
                wire::ReceiptKind::Delivered => ReceiptKind::Delivered,
                wire::ReceiptKind::Read => ReceiptKind::Read,
            },
            at,
        },
        NetworkEvent::Inbound {
            id,
            from,
            body,
            media_type,
            at,
        } => SessionEvent::Inbound {
            wa_message_id: id,
            from,
            kind: media_kind(media_type.as_deref()).to_string(),
            text: Some(body).filter(|b| !b.is_empty()),
            media_type,
            at,
        },
    }
}

pub struct SimSession {
    shared: Arc<Shared>,
}

#[async_trait]
impl Session for SimSession {
    fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    async fn send_text(&self, message: &OutgoingText) -> Result<(), SendError> {
        if !self.shared.is_connected() {
            return Err(SendError::NotSent("not connected".into()));
        }
        let (waiter, verdict) = oneshot::channel();
        let id = message.wa_message_id.clone();
        self.shared
            .acks
            .lock()
            .expect("acks lock")
            .insert(id.clone(), waiter);
        let written = self.shared.write(ClientFrame::Send {
            id: id.clone(),
            to: message.to.as_str().to_string(),
            body: message.body.clone(),
            media: message.media.as_ref().map(|m| wire::WireMedia {
                kind: m.kind.clone(),
                source: m.source(),
            }),
        });
        if written.is_err() {
            self.shared.acks.lock().expect("acks lock").remove(&id);
            return Err(SendError::NotSent(
                "connection closed before writing".into(),
            ));
        }
        match tokio::time::timeout(self.shared.ack_timeout, verdict).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(code))) => Err(SendError::Rejected { code }),
            Ok(Err(_)) => Err(SendError::Unknown(
                "connection lost before the server ack".into(),
            )),
            Err(_) => {
                self.shared.acks.lock().expect("acks lock").remove(&id);
                Err(SendError::Unknown(format!(
                    "no server ack within {:?}",
                    self.shared.ack_timeout
                )))
            }
        }
    }

    async fn typing(&self, to: &PhoneNumber, typing: bool) -> Result<(), SessionError> {
        self.shared.write(ClientFrame::ChatPresence {
            to: to.as_str().to_string(),
            state: if typing {
                ChatState::Composing
            } else {
                ChatState::Paused
            },
        })
    }

    async fn set_presence(&self, available: bool) -> Result<(), SessionError> {
        self.shared.write(ClientFrame::Presence { available })
    }

    async fn mark_read(&self, chat: &str, wa_message_ids: &[String]) -> Result<(), SessionError> {
        self.shared.write(ClientFrame::MarkRead {
            chat: chat.to_string(),
            ids: wa_message_ids.to_vec(),
        })
    }

    async fn reachout_timelock(&self) -> Result<Option<DateTime<Utc>>, SessionError> {
        let request = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (waiter, answer) = oneshot::channel();
        self.shared
            .timelock_queries
            .lock()
            .expect("timelock lock")
            .insert(request, waiter);
        self.shared
            .write(ClientFrame::ReachoutTimelock { request })?;
        tokio::time::timeout(CHECK_TIMEOUT, answer)
            .await
            .map_err(|_| SessionError::Failed("no answer to the time-lock query".into()))?
            .map_err(|_| SessionError::NotConnected)
    }

    async fn is_on_whatsapp(
        &self,
        phones: &[PhoneNumber],
    ) -> Result<HashMap<PhoneNumber, bool>, SessionError> {
        let request = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (waiter, answer) = oneshot::channel();
        self.shared
            .checks
            .lock()
            .expect("checks lock")
            .insert(request, waiter);
        self.shared.write(ClientFrame::Check {
            request,
            phones: phones.iter().map(|p| p.as_str().to_string()).collect(),
        })?;
        let results = tokio::time::timeout(CHECK_TIMEOUT, answer)
            .await
            .map_err(|_| SessionError::Failed("no answer to the contact check".into()))?
            .map_err(|_| SessionError::NotConnected)?;
        Ok(phones
            .iter()
            .map(|phone| {
                let on = results
                    .iter()
                    .any(|r| r.phone == phone.as_str() && r.on_whatsapp);
                (phone.clone(), on)
            })
            .collect())
    }

    async fn handled(&self, seq: u64) {
        // If the connection is gone the events come again on the next one, and
        // recording them twice changes nothing.
        let _ = self.shared.write(ClientFrame::Ack { seq });
    }

    async fn request_pair_code(&self, _phone: &PhoneNumber) -> Result<(), SessionError> {
        self.shared.write(ClientFrame::RequestPairCode)
    }

    /// Like a real logout, done when the network has answered: it unlinks
    /// the device and closes the connection. Returning once the frame is
    /// queued let a shutdown right after drop it before it was written (the
    /// device stayed linked).
    async fn logout(&self) -> Result<(), SessionError> {
        let mut state = self.shared.state.subscribe();
        self.shared.write(ClientFrame::Logout)?;
        let closed = state.wait_for(|s| !matches!(s, ConnectionState::Connected { .. }));
        match tokio::time::timeout(LOGOUT_TIMEOUT, closed).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(SessionError::NotConnected),
            Err(_) => Err(SessionError::Failed(format!(
                "the network did not end the session within {LOGOUT_TIMEOUT:?} of the logout"
            ))),
        }
    }

    async fn shutdown(&self) {
        self.shared.stop.cancel();
    }
}

impl Drop for SimSession {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// The kind of an inbound message from its attachment's MIME type.
fn media_kind(media_type: Option<&str>) -> &'static str {
    match media_type {
        None => "text",
        Some(t) if t.starts_with("image/webp") => "sticker",
        Some(t) if t.starts_with("image/") => "image",
        Some(t) if t.starts_with("video/") => "video",
        Some(t) if t.starts_with("audio/") => "audio",
        Some(_) => "document",
    }
}
