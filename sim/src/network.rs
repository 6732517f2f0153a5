//! The simulated network: numbers, their one connected device each, pairing,
//! message acceptance, receipts, and the per-number queue of events waiting
//! for the device to acknowledge them.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::{
    log::MessageLog,
    protocol::{ChatState, CheckedPhone, LoggedMessage, NetworkEvent, ReceiptKind, ServerFrame},
    rules::{Penalty, Recent, Rules},
};

/// How long one pairing QR code stays valid before the next is shown.
pub const QR_ROTATION: Duration = Duration::from_secs(20);

/// How long a pair code (typed on the phone) stays valid.
pub const PAIR_CODE_VALIDITY: Duration = Duration::from_secs(180);

/// Events kept for a number whose device is away; older ones are dropped past
/// this (a device gone for that long has bigger problems).
const MAX_PENDING_EVENTS: usize = 100_000;

/// How the network behaves; changed at run time through the admin API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    pub server_ack_delay_ms: u64,
    pub delivered_probability: f64,
    pub delivered_delay_ms: u64,
    pub read_probability: f64,
    pub read_delay_ms: u64,
    /// What gets a number time-locked or banned; none by default.
    #[serde(default)]
    pub rules: Rules,
}

/// A partial update of [`Behaviour`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviourPatch {
    pub server_ack_delay_ms: Option<u64>,
    pub delivered_probability: Option<f64>,
    pub delivered_delay_ms: Option<u64>,
    pub read_probability: Option<f64>,
    pub read_delay_ms: Option<u64>,
    /// Replaces the rules as a whole.
    pub rules: Option<Rules>,
}

impl Behaviour {
    fn apply(&mut self, patch: BehaviourPatch) -> Result<(), String> {
        for p in [patch.delivered_probability, patch.read_probability]
            .into_iter()
            .flatten()
        {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("probability {p} is outside 0..=1"));
            }
        }
        if let Some(rules) = &patch.rules {
            rules.validate()?;
        }
        if let Some(v) = patch.server_ack_delay_ms {
            self.server_ack_delay_ms = v;
        }
        if let Some(v) = patch.delivered_probability {
            self.delivered_probability = v;
        }
        if let Some(v) = patch.delivered_delay_ms {
            self.delivered_delay_ms = v;
        }
        if let Some(v) = patch.read_probability {
            self.read_probability = v;
        }
        if let Some(v) = patch.read_delay_ms {
            self.read_delay_ms = v;
        }
        if let Some(rules) = patch.rules {
            self.rules = rules;
        }
        Ok(())
    }
}

/// What survives a simulator restart about a number.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredNumber {
    phone: String,
    paired: bool,
    credential: Option<String>,
    push_name: String,
    /// Until then, messages to people the number never wrote to are refused
    /// with `463`.
    #[serde(default)]
    timelocked_until: Option<DateTime<Utc>>,
    /// Until then, the number cannot connect.
    #[serde(default)]
    banned_until: Option<DateTime<Utc>>,
}

struct LiveSession {
    id: u64,
    frames: UnboundedSender<ServerFrame>,
    /// Cancelled when the server ends the session (replaced, logged out).
    closed: CancellationToken,
}

struct SimNumber {
    stored: StoredNumber,
    session: Option<LiveSession>,
    /// Events not yet acknowledged by a device, oldest first.
    pending: VecDeque<(u64, NetworkEvent)>,
    next_seq: u64,
    /// The QR code the unpaired device shows right now.
    qr: Option<String>,
    /// The code to type on the phone, when the device asked for one.
    pair_code: Option<String>,
    /// When the device started "typing…" to each chat.
    composing: HashMap<String, Instant>,
    /// Everyone the number wrote to (since the simulator started).
    contacts: HashSet<String>,
    accepted: u64,
    /// What it sent lately, for the ban rules.
    recent: Recent,
    /// Penalties the rules gave it (since the simulator started), and the
    /// rule behind the last one.
    bans: u32,
    timelocks: u32,
    last_rule: Option<&'static str>,
}

struct State {
    numbers: HashMap<String, SimNumber>,
    behaviour: Behaviour,
    unregistered: HashSet<String>,
    next_session: u64,
}

/// Summary of a number for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct NumberView {
    pub phone: String,
    pub paired: bool,
    pub connected: bool,
    pub push_name: String,
    /// The code to scan, while an unpaired device is connected.
    pub qr: Option<String>,
    pub accepted: u64,
    pub pending_events: usize,
    pub timelocked_until: Option<DateTime<Utc>>,
    pub banned_until: Option<DateTime<Utc>>,
    /// Temporary bans and reach-out time-locks the ban rules gave it.
    pub bans: u32,
    pub timelocks: u32,
    /// The rule behind the last of them.
    pub last_rule: Option<&'static str>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetworkError {
    #[error("no such number")]
    UnknownNumber,
    #[error("number already exists")]
    Exists,
    #[error("no device is showing that QR code")]
    UnknownCode,
    #[error("{0}")]
    Invalid(String),
}

/// How a device's hello was answered.
pub enum Attached {
    /// Ready to send; the handler serves frames under this session id.
    Ready(u64),
    /// Connected, waiting for its QR code to be scanned.
    Pairing(u64),
    /// Refused; the frame to send before closing.
    Refused(ServerFrame),
}

pub struct Network {
    state: Mutex<State>,
    log: MessageLog,
    numbers_file: PathBuf,
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    hex::encode(buf)
}

impl Network {
    /// Opens (or creates) the simulator's data directory.
    pub fn open(data_dir: &std::path::Path, behaviour: Behaviour) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(data_dir)?;
        let numbers_file = data_dir.join("numbers.json");
        let stored: Vec<StoredNumber> = match std::fs::read(&numbers_file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(err),
        };
        let numbers = stored
            .into_iter()
            .map(|stored| (stored.phone.clone(), SimNumber::new(stored)))
            .collect();
        Ok(Arc::new(Self {
            state: Mutex::new(State {
                numbers,
                behaviour,
                unregistered: HashSet::new(),
                next_session: 1,
            }),
            log: MessageLog::open(&data_dir.join("messages.jsonl"))?,
            numbers_file,
        }))
    }

    pub fn log(&self) -> &MessageLog {
        &self.log
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("network state lock")
    }

    fn persist(&self, state: &State) {
        let mut stored: Vec<&StoredNumber> = state.numbers.values().map(|n| &n.stored).collect();
        stored.sort_by(|a, b| a.phone.cmp(&b.phone));
        let tmp = self.numbers_file.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&stored)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.numbers_file));
        if let Err(err) = written {
            tracing::error!(error = %err, "could not save numbers");
        }
    }

    pub fn behaviour(&self) -> Behaviour {
        self.lock().behaviour.clone()
    }

    pub fn update_behaviour(&self, patch: BehaviourPatch) -> Result<Behaviour, NetworkError> {
        let mut state = self.lock();
        state
            .behaviour
            .apply(patch)
            .map_err(NetworkError::Invalid)?;
        Ok(state.behaviour.clone())
    }

    pub fn set_registered(&self, phone: &str, registered: bool) {
        let mut state = self.lock();
        if registered {
            state.unregistered.remove(phone);
        } else {
            state.unregistered.insert(phone.to_string());
        }
    }

    pub fn create_number(
        &self,
        phone: &str,
        paired: bool,
        push_name: Option<String>,
    ) -> Result<NumberView, NetworkError> {
        if !looks_like_e164(phone) {
            return Err(NetworkError::Invalid(format!(
                "{phone:?} is not an E.164 number (+ and 7 to 15 digits)"
            )));
        }
        let mut state = self.lock();
        if state.numbers.contains_key(phone) {
            return Err(NetworkError::Exists);
        }
        let number = SimNumber::new(StoredNumber {
            phone: phone.to_string(),
            paired,
            credential: None,
            push_name: push_name.unwrap_or_else(|| format!("Sim {}", &phone[phone.len() - 4..])),
            timelocked_until: None,
            banned_until: None,
        });
        let view = number.view();
        state.numbers.insert(phone.to_string(), number);
        self.persist(&state);
        Ok(view)
    }

    pub fn numbers(&self) -> Vec<NumberView> {
        let state = self.lock();
        let mut views: Vec<NumberView> = state.numbers.values().map(SimNumber::view).collect();
        views.sort_by(|a, b| a.phone.cmp(&b.phone));
        views
    }

    pub fn number(&self, phone: &str) -> Option<NumberView> {
        self.lock().numbers.get(phone).map(SimNumber::view)
    }

    /// A device said hello. Replaces any older session of the same number (the
    /// server keeps one connection per device).
    pub fn attach(
        self: &Arc<Self>,
        phone: &str,
        credential: Option<&str>,
        frames: UnboundedSender<ServerFrame>,
        closed: CancellationToken,
    ) -> Attached {
        let mut state = self.lock();
        state.next_session += 1;
        let session_id = state.next_session;
        let Some(number) = state.numbers.get_mut(phone) else {
            return Attached::Refused(ServerFrame::Closing {
                reason: "unknown number".into(),
            });
        };
        if number.stored.paired
            && let Some(expected) = &number.stored.credential
            && credential != Some(expected.as_str())
        {
            return Attached::Refused(ServerFrame::LoggedOut {
                reason: "this device is not linked to the number".into(),
            });
        }
        if let Some(until) = number.stored.banned_until.filter(|u| *u > Utc::now()) {
            return Attached::Refused(ServerFrame::TemporaryBan {
                code: "503".into(),
                until,
            });
        }
        if let Some(old) = number.session.take() {
            let _ = old.frames.send(ServerFrame::Closing {
                reason: "replaced by a newer connection".into(),
            });
            old.closed.cancel();
        }
        number.session = Some(LiveSession {
            id: session_id,
            frames: frames.clone(),
            closed,
        });
        number.composing.clear();
        if number.stored.paired {
            let _ = frames.send(ServerFrame::Ready {
                push_name: number.stored.push_name.clone(),
            });
            number.replay_pending();
            Attached::Ready(session_id)
        } else {
            self.show_qr(number);
            let network = Arc::clone(self);
            let phone = phone.to_string();
            tokio::spawn(async move { network.rotate_qr(phone, session_id).await });
            Attached::Pairing(session_id)
        }
    }

    fn show_qr(&self, number: &mut SimNumber) {
        let code = format!("2@{}", random_token(24));
        number.qr = Some(code.clone());
        if let Some(session) = &number.session {
            let _ = session.frames.send(ServerFrame::PairingQr {
                code,
                timeout_ms: QR_ROTATION.as_millis() as u64,
            });
        }
    }

    /// Shows a fresh code every [`QR_ROTATION`] while the same unpaired device
    /// stays connected.
    async fn rotate_qr(self: Arc<Self>, phone: String, session_id: u64) {
        loop {
            tokio::time::sleep(QR_ROTATION).await;
            let mut state = self.lock();
            let Some(number) = state.numbers.get_mut(&phone) else {
                return;
            };
            let same_session = number.session.as_ref().is_some_and(|s| s.id == session_id);
            if !same_session || number.stored.paired {
                return;
            }
            self.show_qr(number);
        }
    }

    /// An unpaired device asks for a code to type on the phone (alongside
    /// its QR codes). `None` if the device is not an unpaired live one.
    pub fn pair_code(&self, phone: &str, session_id: u64) -> Option<String> {
        let mut state = self.lock();
        let number = state.numbers.get_mut(phone)?;
        let live = number.session.as_ref().is_some_and(|s| s.id == session_id);
        if !live || number.stored.paired {
            return None;
        }
        // Eight characters, as WhatsApp shows them (no 0/O, 1/I confusion).
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTVWXYZ23456789";
        let mut rng = rand::rng();
        let code: String = (0..8)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        number.pair_code = Some(code.clone());
        Some(code)
    }

    /// A phone scanned a QR code, or its owner typed a pair code: link the
    /// device showing it.
    pub fn scan(&self, code: &str) -> Result<NumberView, NetworkError> {
        let mut state = self.lock();
        let number = state
            .numbers
            .values_mut()
            .find(|n| {
                (n.qr.as_deref() == Some(code) || n.pair_code.as_deref() == Some(code))
                    && n.session.is_some()
            })
            .ok_or(NetworkError::UnknownCode)?;
        let credential = random_token(16);
        number.stored.paired = true;
        number.stored.credential = Some(credential.clone());
        number.qr = None;
        number.pair_code = None;
        if let Some(session) = &number.session {
            let _ = session.frames.send(ServerFrame::Paired {
                phone: number.stored.phone.clone(),
                credential,
                push_name: number.stored.push_name.clone(),
            });
            let _ = session.frames.send(ServerFrame::Ready {
                push_name: number.stored.push_name.clone(),
            });
        }
        number.replay_pending();
        let view = number.view();
        self.persist(&state);
        Ok(view)
    }

    /// The number is unlinked (from the phone, or the device logged out).
    pub fn unlink(&self, phone: &str, reason: &str) -> Result<(), NetworkError> {
        let mut state = self.lock();
        let number = state
            .numbers
            .get_mut(phone)
            .ok_or(NetworkError::UnknownNumber)?;
        number.stored.paired = false;
        number.stored.credential = None;
        if let Some(session) = number.session.take() {
            let _ = session.frames.send(ServerFrame::LoggedOut {
                reason: reason.to_string(),
            });
            session.closed.cancel();
        }
        self.persist(&state);
        Ok(())
    }

    /// Refuses the number's messages to new contacts for `duration`.
    pub fn timelock(&self, phone: &str, duration: Duration) -> Result<NumberView, NetworkError> {
        let mut state = self.lock();
        let number = state
            .numbers
            .get_mut(phone)
            .ok_or(NetworkError::UnknownNumber)?;
        number.stored.timelocked_until = Some(Utc::now() + duration);
        let view = number.view();
        self.persist(&state);
        Ok(view)
    }

    /// Bans the number for `duration`: its connection is closed with a
    /// temporary-ban notice, and it cannot connect again until then.
    pub fn ban(
        &self,
        phone: &str,
        duration: Duration,
        code: &str,
    ) -> Result<NumberView, NetworkError> {
        let mut state = self.lock();
        let number = state
            .numbers
            .get_mut(phone)
            .ok_or(NetworkError::UnknownNumber)?;
        let until = Utc::now() + duration;
        number.stored.banned_until = Some(until);
        if let Some(session) = number.session.take() {
            let _ = session.frames.send(ServerFrame::TemporaryBan {
                code: code.to_string(),
                until,
            });
            session.closed.cancel();
        }
        let view = number.view();
        self.persist(&state);
        Ok(view)
    }

    /// When the number's reach-out time-lock ends, if it has one now.
    pub fn reachout_timelock(&self, phone: &str) -> Option<DateTime<Utc>> {
        let state = self.lock();
        state
            .numbers
            .get(phone)
            .and_then(|n| n.stored.timelocked_until)
            .filter(|until| *until > Utc::now())
    }

    /// Drops the number's connection without unlinking it (a network blip).
    pub fn disconnect(&self, phone: &str) -> Result<(), NetworkError> {
        let mut state = self.lock();
        let number = state
            .numbers
            .get_mut(phone)
            .ok_or(NetworkError::UnknownNumber)?;
        if let Some(session) = number.session.take() {
            session.closed.cancel();
        }
        Ok(())
    }

    /// The device's connection ended.
    pub fn detach(&self, phone: &str, session_id: u64) {
        let mut state = self.lock();
        if let Some(number) = state.numbers.get_mut(phone)
            && number.session.as_ref().is_some_and(|s| s.id == session_id)
        {
            number.session = None;
            number.qr = None;
            number.pair_code = None;
        }
    }

    fn is_current(number: &SimNumber, session_id: u64) -> bool {
        number.stored.paired && number.session.as_ref().is_some_and(|s| s.id == session_id)
    }

    pub fn chat_presence(&self, phone: &str, session_id: u64, to: &str, chat: ChatState) {
        let mut state = self.lock();
        if let Some(number) = state.numbers.get_mut(phone)
            && Self::is_current(number, session_id)
        {
            match chat {
                ChatState::Composing => {
                    number
                        .composing
                        .entry(to.to_string())
                        .or_insert_with(Instant::now);
                }
                ChatState::Paused => {
                    number.composing.remove(to);
                }
            }
        }
    }

    pub fn ack_events(&self, phone: &str, session_id: u64, upto: u64) {
        let mut state = self.lock();
        if let Some(number) = state.numbers.get_mut(phone)
            && Self::is_current(number, session_id)
        {
            while number.pending.front().is_some_and(|(seq, _)| *seq <= upto) {
                number.pending.pop_front();
            }
        }
    }

    pub fn check(&self, phones: Vec<String>) -> Vec<CheckedPhone> {
        let state = self.lock();
        phones
            .into_iter()
            .map(|phone| CheckedPhone {
                on_whatsapp: looks_like_e164(&phone) && !state.unregistered.contains(&phone),
                phone,
            })
            .collect()
    }

    /// A device sends a message. Logged durably before the ack is scheduled;
    /// receipts follow per the configured behaviour.
    pub fn send(
        self: &Arc<Self>,
        from: &str,
        session_id: u64,
        id: String,
        to: String,
        body: &str,
        media: Option<crate::protocol::WireMedia>,
    ) {
        let (verdict, behaviour, ban) = {
            let mut state = self.lock();
            let behaviour = state.behaviour.clone();
            let registered = looks_like_e164(&to) && !state.unregistered.contains(&to);
            let Some(number) = state.numbers.get_mut(from) else {
                return;
            };
            if !Self::is_current(number, session_id) {
                return;
            }
            let timelocked = number
                .stored
                .timelocked_until
                .is_some_and(|until| until > Utc::now());
            let (mut ban, mut locked) = (None, false);
            let verdict = if registered && timelocked && !number.contacts.contains(&to) {
                // Reach-out time-lock: no new conversations.
                Some("463".to_string())
            } else if registered {
                let typing_ms = number
                    .composing
                    .remove(&to)
                    .map(|since| since.elapsed().as_millis() as u64);
                let body_sha256 = hex::encode(Sha256::digest(body.as_bytes()));
                let entry = LoggedMessage {
                    id: id.clone(),
                    from: from.to_string(),
                    to: to.clone(),
                    body_sha256: body_sha256.clone(),
                    at: Utc::now(),
                    typing_ms,
                    media: media.map(|m| format!("{}:{}", m.kind, m.source)),
                };
                match self.log.append(&entry) {
                    Ok(()) => {
                        number.accepted += 1;
                        let new_contact = number.contacts.insert(to.clone());
                        metrics::counter!("herald_sim_messages_accepted_total").increment(1);
                        let penalty = number.recent.record(
                            &behaviour.rules,
                            Instant::now(),
                            new_contact,
                            &body_sha256,
                        );
                        (ban, locked) = number.penalise(penalty);
                        None
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "message log write failed; refusing message");
                        Some("500".to_string())
                    }
                }
            } else {
                // Not on WhatsApp.
                Some("404".to_string())
            };
            if locked {
                self.persist(&state);
            }
            (verdict, behaviour, ban)
        };
        let network = Arc::clone(self);
        let from = from.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(behaviour.server_ack_delay_ms)).await;
            let accepted = verdict.is_none();
            network.to_session(
                &from,
                session_id,
                ServerFrame::ServerAck {
                    id: id.clone(),
                    error: verdict,
                },
            );
            // A ban comes after the verdict on the message that earned it.
            if let Some((duration, code)) = ban {
                let _ = network.ban(&from, duration, code);
            }
            if !accepted {
                return;
            }
            let (delivered, read) = {
                let mut rng = rand::rng();
                let delivered = rng.random_bool(behaviour.delivered_probability);
                (
                    delivered,
                    delivered && rng.random_bool(behaviour.read_probability),
                )
            };
            if !delivered {
                return;
            }
            tokio::time::sleep(Duration::from_millis(behaviour.delivered_delay_ms)).await;
            network.push_event(
                &from,
                NetworkEvent::Receipt {
                    ids: vec![id.clone()],
                    kind: ReceiptKind::Delivered,
                    at: Utc::now(),
                },
            );
            if !read {
                return;
            }
            tokio::time::sleep(Duration::from_millis(behaviour.read_delay_ms)).await;
            network.push_event(
                &from,
                NetworkEvent::Receipt {
                    ids: vec![id],
                    kind: ReceiptKind::Read,
                    at: Utc::now(),
                },
            );
        });
    }

    /// A "phone" writes to one of the numbers (a text, or an attachment of
    /// `media_type` with `body` as its caption).
    pub fn inbound(
        &self,
        from: &str,
        to: &str,
        body: &str,
        media_type: Option<&str>,
    ) -> Result<String, NetworkError> {
        let id = format!("3A{}", random_token(9).to_uppercase());
        self.push_event_checked(
            to,
            NetworkEvent::Inbound {
                id: id.clone(),
                from: from.to_string(),
                body: body.to_string(),
                media_type: media_type.map(String::from),
                at: Utc::now(),
            },
        )?;
        Ok(id)
    }

    fn to_session(&self, phone: &str, session_id: u64, frame: ServerFrame) {
        let state = self.lock();
        if let Some(session) = state.numbers.get(phone).and_then(|n| n.session.as_ref())
            && session.id == session_id
        {
            let _ = session.frames.send(frame);
        }
    }

    fn push_event(&self, phone: &str, event: NetworkEvent) {
        let _ = self.push_event_checked(phone, event);
    }

    fn push_event_checked(&self, phone: &str, event: NetworkEvent) -> Result<(), NetworkError> {
        let mut state = self.lock();
        let number = state
            .numbers
            .get_mut(phone)
            .ok_or(NetworkError::UnknownNumber)?;
        number.next_seq += 1;
        let seq = number.next_seq;
        if number.pending.len() >= MAX_PENDING_EVENTS {
            number.pending.pop_front();
        }
        number.pending.push_back((seq, event.clone()));
        if number.stored.paired
            && let Some(session) = &number.session
        {
            let _ = session.frames.send(ServerFrame::Event { seq, event });
        }
        Ok(())
    }
}

impl SimNumber {
    fn new(stored: StoredNumber) -> Self {
        Self {
            stored,
            session: None,
            pending: VecDeque::new(),
            next_seq: 0,
            qr: None,
            pair_code: None,
            composing: HashMap::new(),
            contacts: HashSet::new(),
            accepted: 0,
            recent: Recent::default(),
            bans: 0,
            timelocks: 0,
            last_rule: None,
        }
    }

    /// Applies what a rule decided: a time-lock at once (returns true), a
    /// ban returned as (duration, reason code), to be applied once the
    /// message that earned it has its verdict.
    fn penalise(&mut self, penalty: Option<Penalty>) -> (Option<(Duration, &'static str)>, bool) {
        match penalty {
            None => (None, false),
            Some(Penalty::Timelock { rule, duration }) => {
                let now = Utc::now();
                if self
                    .stored
                    .timelocked_until
                    .is_some_and(|until| until > now)
                {
                    return (None, false);
                }
                self.stored.timelocked_until = Some(now + duration);
                self.timelocks += 1;
                self.last_rule = Some(rule);
                tracing::info!(phone = %self.stored.phone, rule, ?duration, "ban rule: reach-out time-lock");
                (None, true)
            }
            Some(Penalty::Ban {
                rule,
                code,
                duration,
            }) => {
                self.bans += 1;
                self.last_rule = Some(rule);
                tracing::info!(phone = %self.stored.phone, rule, code, ?duration, "ban rule: temporary ban");
                (Some((duration, code)), false)
            }
        }
    }

    fn view(&self) -> NumberView {
        NumberView {
            phone: self.stored.phone.clone(),
            paired: self.stored.paired,
            connected: self.session.is_some(),
            push_name: self.stored.push_name.clone(),
            qr: self.qr.clone(),
            accepted: self.accepted,
            pending_events: self.pending.len(),
            timelocked_until: self.stored.timelocked_until,
            banned_until: self.stored.banned_until,
            bans: self.bans,
            timelocks: self.timelocks,
            last_rule: self.last_rule,
        }
    }

    /// Sends every unacknowledged event to the (new) session, in order.
    fn replay_pending(&self) {
        if let Some(session) = &self.session {
            for (seq, event) in &self.pending {
                let _ = session.frames.send(ServerFrame::Event {
                    seq: *seq,
                    event: event.clone(),
                });
            }
        }
    }
}

/// `+` followed by 7 to 15 digits, the first not 0.
pub fn looks_like_e164(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}
