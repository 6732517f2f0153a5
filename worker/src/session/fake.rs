//! An in-process stand-in for a WhatsApp network, for tests that exercise the
//! worker without the simulator process: it records what was sent and typed,
//! answers sends with scripted outcomes (or holds them unanswered), and lets
//! the test push events.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use herald_shared::{db::sender_numbers::SenderNumber, domain::PhoneNumber};
use tokio::sync::{mpsc, watch};

use super::{
    ConnectionState, Connector, Envelope, Events, OutgoingText, SendError, Session, SessionError,
    SessionEvent,
};

/// What the fake saw a session do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Typing {
        from: PhoneNumber,
        to: PhoneNumber,
        on: bool,
    },
    Sent {
        from: PhoneNumber,
        message_id: String,
        to: PhoneNumber,
        body: String,
    },
    Handled {
        from: PhoneNumber,
        seq: u64,
    },
}

#[derive(Default)]
struct Inner {
    actions: Vec<Action>,
    /// Outcomes for the next sends, in order; `Ok` once empty.
    outcomes: VecDeque<Result<(), SendError>>,
    /// Each open session's state and event sender, by number.
    sessions: HashMap<PhoneNumber, (watch::Sender<ConnectionState>, mpsc::Sender<Envelope>)>,
    /// What `reachout_timelock` answers.
    timelocked_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// The fake network; cheap to clone, all clones share it.
#[derive(Clone, Default)]
pub struct FakeNetwork {
    inner: Arc<Mutex<Inner>>,
    /// While true, calls wait unanswered (see [`FakeNetwork::hold`]).
    held: Arc<watch::Sender<bool>>,
}

impl FakeNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake network lock")
    }

    pub fn actions(&self) -> Vec<Action> {
        self.lock().actions.clone()
    }

    pub fn sent(&self) -> Vec<Action> {
        self.actions()
            .into_iter()
            .filter(|a| matches!(a, Action::Sent { .. }))
            .collect()
    }

    /// What sessions answer when asked when their time-lock ends.
    pub fn set_timelocked_until(&self, until: Option<chrono::DateTime<chrono::Utc>>) {
        self.lock().timelocked_until = until;
    }

    /// From now on calls wait, unanswered and unrecorded, until
    /// [`release`](Self::release): a call in flight for as long as a test
    /// needs.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Lets held calls (and later ones) be answered.
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// The next sends end this way, in order.
    pub fn script(&self, outcomes: impl IntoIterator<Item = Result<(), SendError>>) {
        self.lock().outcomes.extend(outcomes);
    }

    /// Puts a number's session in `state` (and tells the worker).
    pub async fn set_state(&self, number: &PhoneNumber, state: ConnectionState) {
        let events = {
            let inner = self.lock();
            let Some((watch, events)) = inner.sessions.get(number) else {
                return;
            };
            watch.send_replace(state.clone());
            events.clone()
        };
        let _ = events
            .send(Envelope {
                seq: None,
                event: SessionEvent::StateChanged(state),
            })
            .await;
    }

    /// Delivers an event to a number's session.
    pub async fn push(&self, number: &PhoneNumber, seq: Option<u64>, event: SessionEvent) {
        let events = self.lock().sessions.get(number).map(|(_, e)| e.clone());
        if let Some(events) = events {
            let _ = events.send(Envelope { seq, event }).await;
        }
    }
}

#[async_trait]
impl Connector for FakeNetwork {
    async fn open(
        &self,
        number: &SenderNumber,
    ) -> Result<(Arc<dyn Session>, Events), SessionError> {
        let connected = ConnectionState::Connected {
            push_name: "Fake".into(),
        };
        let (state, _) = watch::channel(connected.clone());
        let (events, receiver) = mpsc::channel(1024);
        // Connected at once, and says so, like a real session's first event.
        events
            .try_send(Envelope {
                seq: None,
                event: SessionEvent::StateChanged(connected),
            })
            .expect("fresh channel has room");
        self.lock()
            .sessions
            .insert(number.phone.clone(), (state.clone(), events));
        Ok((
            Arc::new(FakeSession {
                network: self.clone(),
                phone: number.phone.clone(),
                state,
            }),
            receiver,
        ))
    }
}

struct FakeSession {
    network: FakeNetwork,
    phone: PhoneNumber,
    state: watch::Sender<ConnectionState>,
}

impl FakeSession {
    fn connected(&self) -> bool {
        matches!(*self.state.borrow(), ConnectionState::Connected { .. })
    }
}

#[async_trait]
impl Session for FakeSession {
    fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    async fn send_text(&self, message: &OutgoingText) -> Result<(), SendError> {
        if !self.connected() {
            return Err(SendError::NotSent("not connected".into()));
        }
        // Only `send_replace` ever changes the value, and the sender lives
        // as long as the network: the wait cannot fail.
        let _ = self.network.held.subscribe().wait_for(|held| !held).await;
        let mut inner = self.network.lock();
        let outcome = inner.outcomes.pop_front().unwrap_or(Ok(()));
        if !matches!(outcome, Err(SendError::NotSent(_))) {
            inner.actions.push(Action::Sent {
                from: self.phone.clone(),
                message_id: message.wa_message_id.clone(),
                to: message.to.clone(),
                body: message.body.clone(),
            });
        }
        outcome
    }

    async fn typing(&self, to: &PhoneNumber, on: bool) -> Result<(), SessionError> {
        self.network.lock().actions.push(Action::Typing {
            from: self.phone.clone(),
            to: to.clone(),
            on,
        });
        Ok(())
    }

    async fn set_presence(&self, _available: bool) -> Result<(), SessionError> {
        Ok(())
    }

    async fn mark_read(&self, _chat: &str, _ids: &[String]) -> Result<(), SessionError> {
        Ok(())
    }

    async fn reachout_timelock(
        &self,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, SessionError> {
        Ok(self.network.lock().timelocked_until)
    }

    async fn is_on_whatsapp(
        &self,
        phones: &[PhoneNumber],
    ) -> Result<HashMap<PhoneNumber, bool>, SessionError> {
        Ok(phones.iter().map(|p| (p.clone(), true)).collect())
    }

    async fn handled(&self, seq: u64) {
        self.network.lock().actions.push(Action::Handled {
            from: self.phone.clone(),
            seq,
        });
    }

    async fn request_pair_code(&self, _phone: &PhoneNumber) -> Result<(), SessionError> {
        Err(SessionError::Failed(
            "the fake network does not pair".into(),
        ))
    }

    async fn logout(&self) -> Result<(), SessionError> {
        self.state.send_replace(ConnectionState::LoggedOut {
            reason: "logout".into(),
        });
        Ok(())
    }

    async fn shutdown(&self) {
        self.state.send_replace(ConnectionState::Closed);
    }
}
