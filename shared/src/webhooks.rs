//! Webhook essentials shared by the API (which registers endpoints and
//! replays deliveries) and the scheduler (which delivers): secrets and
//! signatures per the Standard Webhooks specification, the policy on where
//! deliveries may go, and the queueing of attempts.
//!
//! Signature: `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `<webhook-id>.<webhook-timestamp>.<body>`, keyed with the base64-decoded
//! part of a `whsec_…` secret. Several space-separated signatures while a
//! rotated secret is still honoured.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use sha2::Sha256;
use url::{Host, Url};

use crate::{
    queue::{Outgoing, Publisher, Topology},
    task::WebhookTask,
};

const SECRET_PREFIX: &str = "whsec_";

/// A new random secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let key: [u8; 32] = rand::rng().random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key inside a `whsec_` secret: 24 to 64 bytes.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| format!("a secret starts with {SECRET_PREFIX:?}"))?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| "the part after whsec_ is not base64".to_string())?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "the key is {} bytes; it must have 24 to 64",
            key.len()
        ));
    }
    Ok(key)
}

/// `v1,<signature>` of one message under one key.
pub fn sign(key: &[u8], webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value: one signature per key, space
/// separated.
pub fn signature_header(keys: &[Vec<u8>], webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| sign(key, webhook_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which addresses deliveries may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetPolicy {
    pub allow_loopback: bool,
    pub allow_private_networks: bool,
}

impl TargetPolicy {
    /// Whether a delivery may connect to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        match classify(ip) {
            Reach::Public => true,
            Reach::Loopback => self.allow_loopback,
            Reach::Private => self.allow_private_networks,
            Reach::Never => false,
        }
    }

    /// Checks an endpoint URL: http(s), a host, no credentials, and (when
    /// the host is an address or `localhost`) an allowed target. Names are
    /// checked again, by address, at every delivery.
    pub fn check_url(&self, raw: &str) -> Result<Url, String> {
        if raw.len() > 2048 {
            return Err("at most 2048 characters".into());
        }
        let url = Url::parse(raw).map_err(|err| format!("not a URL: {err}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("the scheme must be http or https".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in the URL are not accepted".into());
        }
        if url.fragment().is_some() {
            return Err("a URL with a #fragment is not accepted".into());
        }
        let refused = |ip: IpAddr| {
            Err(format!(
                "{ip} is a {} address; deliveries there are not allowed",
                match classify(ip) {
                    Reach::Loopback => "loopback",
                    Reach::Private => "private or internal",
                    _ => "reserved",
                }
            ))
        };
        match url.host() {
            None => return Err("the URL has no host".into()),
            Some(Host::Ipv4(ip)) if !self.allows(ip.into()) => return refused(ip.into()),
            Some(Host::Ipv6(ip)) if !self.allows(ip.into()) => return refused(ip.into()),
            Some(Host::Domain(name)) if is_localhost(name) && !self.allow_loopback => {
                return refused(Ipv4Addr::LOCALHOST.into());
            }
            Some(_) => {}
        }
        Ok(url)
    }
}

fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

enum Reach {
    Public,
    Loopback,
    Private,
    /// Unspecified, multicast, broadcast, documentation: never a receiver.
    Never,
}

fn classify(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Reach {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Reach::Loopback
    } else if ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
    {
        Reach::Never
    } else if ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
    {
        Reach::Private
    } else {
        Reach::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Reach {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Reach::Loopback
    } else if ip.is_unspecified()
        || ip.is_multicast()
        || first == 0x2001 && ip.segments()[1] == 0xdb8
    {
        Reach::Never
    } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 || (first & 0xffc0) == 0xfec0
    {
        Reach::Private
    } else {
        Reach::Public
    }
}

/// Queues attempts: straight to `P.webhooks`, or through the waiting queue
/// of a back-off.
pub struct AttemptQueue {
    publisher: Arc<Publisher>,
    topology: Topology,
}

impl AttemptQueue {
    pub fn new(publisher: Arc<Publisher>, topology: Topology) -> Self {
        Self {
            publisher,
            topology,
        }
    }

    /// Queues `attempt` of each delivery after `delay`. Returns how many
    /// could not be queued (the sweep will find them).
    pub async fn queue(&self, jobs: &[(i64, i32)], delay: Duration) -> usize {
        if jobs.is_empty() {
            return 0;
        }
        let queue = if delay.is_zero() {
            self.topology.webhook_queue()
        } else {
            self.topology.webhook_retry_queue(delay)
        };
        let payloads: Vec<Vec<u8>> = jobs
            .iter()
            .map(|&(delivery_id, attempt)| {
                serde_json::to_vec(&WebhookTask::Deliver {
                    delivery_id,
                    attempt,
                })
                .expect("tasks serialise")
            })
            .collect();
        let outgoing: Vec<Outgoing<'_>> = payloads
            .iter()
            .map(|payload| Outgoing {
                exchange: "",
                routing_key: &queue,
                payload,
            })
            .collect();
        self.publisher
            .publish_all(&outgoing)
            .await
            .into_iter()
            .filter_map(Result::err)
            .inspect(
                |err| tracing::warn!(error = %err, %queue, "could not queue a webhook attempt"),
            )
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        // From the Standard Webhooks specification.
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn two_keys_give_two_signatures_new_first() {
        let old = decode_secret(&new_secret()).unwrap();
        let new = decode_secret(&new_secret()).unwrap();
        let header = signature_header(&[new.clone(), old.clone()], "msg_1", 7, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            parts,
            [sign(&new, "msg_1", 7, b"{}"), sign(&old, "msg_1", 7, b"{}")]
        );
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn secrets_are_whsec_base64_of_enough_bytes() {
        let secret = new_secret();
        assert_eq!(decode_secret(&secret).unwrap().len(), 32);
        assert_ne!(secret, new_secret());
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_not base64!").is_err());
        assert!(
            decode_secret("whsec_c2hvcnQ=").is_err(),
            "5 bytes is too short"
        );
    }

    #[test]
    fn private_and_loopback_targets_are_refused_unless_allowed() {
        let strict = TargetPolicy::default();
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://api.localhost/hook",
            "http://10.1.2.3/hook",
            "http://172.16.0.1/hook",
            "http://192.168.1.10/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/hook",
            "http://[::1]/hook",
            "http://[fd00::1]/hook",
            "http://[fe80::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://0.0.0.0/hook",
            "http://224.0.0.1/hook",
        ] {
            assert!(strict.check_url(url).is_err(), "{url} should be refused");
        }
        for url in [
            "https://hooks.example.com/herald",
            "http://93.184.216.34/hook",
            "https://[2606:4700::1111]/hook",
        ] {
            assert!(strict.check_url(url).is_ok(), "{url} should be accepted");
        }
        let loopback = TargetPolicy {
            allow_loopback: true,
            allow_private_networks: false,
        };
        assert!(loopback.check_url("http://127.0.0.1:9/x").is_ok());
        assert!(loopback.check_url("http://localhost:9/x").is_ok());
        assert!(loopback.check_url("http://10.0.0.1/x").is_err());
        let private = TargetPolicy {
            allow_loopback: false,
            allow_private_networks: true,
        };
        assert!(private.check_url("http://10.0.0.1/x").is_ok());
        assert!(private.check_url("http://127.0.0.1/x").is_err());
    }

    #[test]
    fn malformed_or_unsafe_urls_are_refused() {
        let policy = TargetPolicy::default();
        for url in [
            "not a url",
            "ftp://example.com/x",
            "https://user:pass@example.com/x",
            "https://example.com/x#frag",
            "file:///etc/passwd",
        ] {
            assert!(policy.check_url(url).is_err(), "{url}");
        }
        assert!(
            policy
                .check_url(&format!("https://example.com/{}", "a".repeat(2100)))
                .is_err()
        );
    }
}
