//! A webhook receiver for tests: an HTTP server on a local port that records
//! every request (headers and exact body bytes) and answers with the status
//! the test chooses, so tests can play a receiver that is down, flaky, gone
//! (410) or fine, and then check what arrived.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

impl Arrival {
    pub fn webhook_id(&self) -> &str {
        self.headers.get("webhook-id").map_or("", String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook bodies are JSON")
    }
}

/// Chooses the answer to a request, given how many times its `webhook-id`
/// arrived before.
pub type Answer = Arc<dyn Fn(&Arrival, usize) -> u16 + Send + Sync>;

struct Shared {
    arrivals: Mutex<Vec<Arrival>>,
    answer: Mutex<Answer>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Listens on a free port, answering 200 to everything.
    pub async fn start() -> Self {
        Self::on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Listens on `addr` (a port kept free until now: the receiver "comes
    /// up" there).
    pub async fn on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("receiver binds");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            arrivals: Mutex::new(Vec::new()),
            answer: Mutex::new(Arc::new(|_, _| 200)),
        });
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/{*path}", post(receive))
            .route("/", post(receive))
            .with_state(shared.clone());
        let until = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(until.cancelled_owned())
                .await
                .expect("receiver serves");
        });
        Self {
            addr,
            shared,
            stop,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers every later request with `answer`.
    pub fn answer_with(&self, answer: impl Fn(&Arrival, usize) -> u16 + Send + Sync + 'static) {
        *self.shared.answer.lock().unwrap() = Arc::new(answer);
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared.arrivals.lock().unwrap().clone()
    }

    /// Arrivals the receiver accepted (2xx).
    pub fn accepted(&self) -> Vec<Arrival> {
        self.arrivals()
            .into_iter()
            .filter(|a| (200..300).contains(&a.status))
            .collect()
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut arrival = Arrival {
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
        body: body.to_vec(),
        status: 0,
    };
    let answer = shared.answer.lock().unwrap().clone();
    let mut arrivals = shared.arrivals.lock().unwrap();
    let seen = arrivals
        .iter()
        .filter(|a| a.webhook_id() == arrival.webhook_id())
        .count();
    arrival.status = answer(&arrival, seen);
    let status = StatusCode::from_u16(arrival.status).unwrap_or(StatusCode::OK);
    arrivals.push(arrival);
    status
}

/// Verifies each arrival's signature with the Standard Webhooks reference
/// library for Python (`standardwebhooks` on PyPI), under `secret`. Returns,
/// per arrival, whether it verified.
pub fn verify_with_reference_library(secret: &str, arrivals: &[Arrival]) -> Vec<bool> {
    let input: Vec<Value> = arrivals
        .iter()
        .map(|a| {
            json!({
                "headers": a.headers,
                "body": String::from_utf8(a.body.clone()).expect("UTF-8 bodies"),
            })
        })
        .collect();
    let script = "import json, sys\n\
                  from standardwebhooks.webhooks import Webhook\n\
                  data = json.load(sys.stdin)\n\
                  hook = Webhook(data['secret'])\n\
                  out = []\n\
                  for item in data['arrivals']:\n\
                  \x20   try:\n\
                  \x20       hook.verify(item['body'], item['headers'])\n\
                  \x20       out.append(True)\n\
                  \x20   except Exception as err:\n\
                  \x20       out.append(False)\n\
                  print(json.dumps(out))";
    let payload = serde_json::to_vec(&json!({"secret": secret, "arrivals": input})).unwrap();
    let text = crate::python::run("standardwebhooks", script, &payload);
    serde_json::from_str(text.trim()).expect("the checker prints a JSON list")
}
