//! The HTTP side of a webhook attempt: a client that connects only to
//! addresses the target policy allows (checked after DNS resolution, so a
//! name cannot smuggle a private address in), follows no redirects, and
//! gives up after the configured timeouts.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use chrono::Utc;
use herald_shared::{
    config::WebhooksConfig,
    db::webhooks::AttemptOutcome,
    webhooks::{TargetPolicy, signature_header},
};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Bytes of an answer kept in the attempts log.
const RESPONSE_EXCERPT: usize = 1024;

/// Resolves names, then drops the addresses deliveries may not reach.
struct GuardedResolver {
    policy: TargetPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| policy.allows(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves only to addresses deliveries may not reach (loopback, private or reserved)"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Sends signed webhook requests.
pub struct Sender {
    client: reqwest::Client,
    policy: TargetPolicy,
}

impl Sender {
    pub fn new(config: &WebhooksConfig) -> anyhow::Result<Self> {
        // One TLS implementation in the whole tree (ring, as whatsapp-rust
        // uses); installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let policy = TargetPolicy {
            allow_loopback: config.allow_loopback,
            allow_private_networks: config.allow_private_networks,
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("Herald-Webhooks/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout())
            .connect_timeout(config.connect_timeout())
            .dns_resolver(Arc::new(GuardedResolver { policy }))
            .build()?;
        Ok(Self { client, policy })
    }

    /// POSTs `body` to `url`, signed with every key. Never fails: what went
    /// wrong is in the outcome.
    pub async fn send(
        &self,
        url: &str,
        webhook_id: &str,
        keys: &[Vec<u8>],
        body: Vec<u8>,
    ) -> AttemptOutcome {
        let started_at = Utc::now();
        let clock = Instant::now();
        let finish =
            |status: Option<u16>, error: Option<String>, response: Option<String>| AttemptOutcome {
                started_at,
                duration_ms: clock.elapsed().as_millis().min(i32::MAX as u128) as i32,
                status: status.map(i32::from),
                error,
                response,
            };
        // Addresses written in the URL never reach the resolver.
        if let Err(reason) = self.policy.check_url(url) {
            return finish(None, Some(format!("refused: {reason}")), None);
        }
        let timestamp = started_at.timestamp();
        let signature = signature_header(keys, webhook_id, timestamp, &body);
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(err) => return finish(None, Some(describe(&err)), None),
        };
        let status = response.status().as_u16();
        let mut excerpt = Vec::new();
        while excerpt.len() < RESPONSE_EXCERPT {
            match response.chunk().await {
                Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        excerpt.truncate(RESPONSE_EXCERPT);
        let text = String::from_utf8_lossy(&excerpt).into_owned();
        finish(Some(status), None, Some(text).filter(|t| !t.is_empty()))
    }
}

/// An error with its causes ("error sending request: connection refused").
fn describe(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "could not connect".to_string()
    } else {
        err.to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_that_resolve_only_to_refused_addresses_are_not_connected_to() {
        let strict = GuardedResolver {
            policy: TargetPolicy::default(),
        };
        let refused = strict.resolve("localhost".parse().unwrap()).await;
        let err = refused.err().expect("localhost is loopback").to_string();
        assert!(err.contains("may not reach"), "{err}");

        let loopback = GuardedResolver {
            policy: TargetPolicy {
                allow_loopback: true,
                allow_private_networks: false,
            },
        };
        let addrs: Vec<SocketAddr> = loopback
            .resolve("localhost".parse().unwrap())
            .await
            .expect("allowed")
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn an_address_in_the_url_is_checked_before_any_connection() {
        let sender = Sender::new(
            &herald_shared::Config::load_with_env(None, Vec::new())
                .unwrap()
                .webhooks,
        )
        .unwrap();
        let outcome = sender
            .send(
                "http://127.0.0.1:9/hook",
                "msg_1",
                &[vec![7; 32]],
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(outcome.status, None);
        let error = outcome.error.unwrap();
        assert!(
            error.starts_with("refused: 127.0.0.1 is a loopback"),
            "{error}"
        );
    }
}
