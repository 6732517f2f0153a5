//! HTTP clients for Herald's API and the simulator's admin API.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use herald_sim::protocol::LoggedMessage;

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Panics with the body unless the status is `expected`.
    pub fn expect(self, expected: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            expected,
            "unexpected status; body: {}",
            self.body
        );
        self.body
    }
}

#[derive(Clone)]
pub struct ApiClient {
    pub base: String,
    pub key: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: impl Into<String>, key: Option<String>) -> Self {
        Self {
            base: base.into(),
            key,
            http: crate::http(),
        }
    }

    /// The same server with another key (or none).
    pub fn with_key(&self, key: Option<&str>) -> Self {
        Self {
            base: self.base.clone(),
            key: key.map(String::from),
            http: self.http.clone(),
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    pub async fn send(&self, builder: reqwest::RequestBuilder) -> Reply {
        let response = builder.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = response.bytes().await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            content_type,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// Registers a simulated number; returns its id.
    pub async fn create_number(&self, phone: &str) -> String {
        let body = self
            .post("/v1/numbers", &json!({ "phone": phone, "kind": "sim" }))
            .await
            .expect(201);
        body["id"].as_str().expect("number id").to_string()
    }

    pub async fn create_template(&self, name: &str, body: &str) -> String {
        let created = self
            .post("/v1/templates", &json!({ "name": name, "body": body }))
            .await
            .expect(201);
        created["id"].as_str().expect("template id").to_string()
    }

    pub async fn create_campaign(&self, request: &Value) -> Value {
        self.post("/v1/campaigns", request).await.expect(201)
    }

    pub async fn start_campaign(&self, id: &str) -> Value {
        self.post(&format!("/v1/campaigns/{id}/start"), &json!({}))
            .await
            .expect(200)
    }

    pub async fn campaign(&self, id: &str) -> Value {
        self.get(&format!("/v1/campaigns/{id}")).await.expect(200)
    }

    /// Opens the live event stream (`GET /v1/events?{query}`), resuming
    /// after `last_event_id` when given.
    pub async fn events(&self, query: &str, last_event_id: Option<&str>) -> EventStream {
        let mut request = self.request(Method::GET, &format!("/v1/events?{query}"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("stream opened");
        assert_eq!(response.status(), StatusCode::OK, "stream refused");
        EventStream {
            response,
            buffer: String::new(),
        }
    }
}

/// Server-Sent Events, read as they come.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    /// The next event (its `id` and JSON `data`), or `None` if none comes
    /// within `wait`.
    pub async fn next(&mut self, wait: std::time::Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().to_string());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if let Some(id) = id {
                    let json = serde_json::from_str(&data).expect("event data is JSON");
                    return Some((id, json));
                }
                // A keep-alive comment: nothing to return.
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}

#[derive(Clone)]
pub struct SimClient {
    pub base: String,
    http: reqwest::Client,
}

impl SimClient {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            http: crate::http(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("sim reachable");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Creates a number on the simulated network, already linked.
    pub async fn create_paired_number(&self, phone: &str) {
        self.create_number(phone, true).await;
    }

    /// Creates a number on the simulated network, linked or not.
    pub async fn create_number(&self, phone: &str, paired: bool) {
        let (status, body) = self
            .call(
                Method::POST,
                "/admin/numbers",
                Some(&json!({ "phone": phone, "paired": paired })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "sim number: {body}");
    }

    /// The number as the network sees it (`paired`, `qr`, …).
    pub async fn number(&self, phone: &str) -> Value {
        self.call(
            Method::GET,
            &format!("/admin/numbers/{}", &phone[1..]),
            None,
        )
        .await
        .1
    }

    /// A phone scans a QR code, or its owner types a pair code.
    pub async fn scan(&self, code: &str) {
        let (status, body) = self
            .call(Method::POST, "/admin/scan", Some(&json!({ "code": code })))
            .await;
        assert_eq!(status, StatusCode::OK, "scan: {body}");
    }

    /// A phone writes to one of the numbers (`media_type`: an attachment,
    /// `body` its caption). Returns the message's id on the network.
    pub async fn inbound(
        &self,
        from: &str,
        to: &str,
        body: &str,
        media_type: Option<&str>,
    ) -> String {
        let (status, reply) = self
            .call(
                Method::POST,
                "/admin/inbound",
                Some(&json!({ "from": from, "to": to, "body": body, "media_type": media_type })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "sim inbound: {reply}");
        reply["id"].as_str().expect("inbound id").to_string()
    }

    /// The network bans a number for `seconds`.
    pub async fn ban(&self, phone: &str, seconds: u64) {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/admin/numbers/{}/ban", &phone[1..]),
                Some(&json!({ "seconds": seconds })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "sim ban: {body}");
    }

    /// Changes delays and receipt probabilities.
    pub async fn set_network(&self, patch: &Value) {
        let (status, body) = self.call(Method::PUT, "/admin/network", Some(patch)).await;
        assert_eq!(status, StatusCode::OK, "sim network: {body}");
    }

    pub async fn numbers(&self) -> Value {
        self.call(Method::GET, "/admin/numbers", None).await.1
    }

    /// Every message the simulated network accepted, in order.
    pub async fn log(&self) -> Vec<LoggedMessage> {
        let text = self
            .http
            .get(format!("{}/admin/log", self.base))
            .send()
            .await
            .expect("sim reachable")
            .text()
            .await
            .expect("log body");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("log lines are JSON"))
            .collect()
    }
}
