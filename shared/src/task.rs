//! What travels on RabbitMQ: typed, versioned payloads. Each names its `type`
//! so a consumer can refuse what it does not understand instead of guessing.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::policy::jitter::Jitter;

/// A job on a number's send queue. It only points at a message: Postgres holds
/// the message and decides whether it may still be sent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SendTask {
    #[serde(rename = "send.v1")]
    Send {
        message_id: i64,
        number_id: Uuid,
        /// How to space this send from the number's previous one, as the
        /// scheduler decided it (the number's settings, slowed by its breaker).
        /// Absent: the worker's defaults.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pacing: Option<JobPacing>,
    },
}

/// A job on the webhook queue: one attempt of one delivery. Postgres holds
/// the delivery and lets only the job for its next attempt go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WebhookTask {
    #[serde(rename = "webhook.v1")]
    Deliver {
        delivery_id: i64,
        /// Which attempt of the delivery's current run (1 = the first).
        attempt: i32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JobPacing {
    pub min_gap_ms: u64,
    pub jitter: Jitter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms_are_stable() {
        let id = Uuid::nil();
        let job = SendTask::Send {
            message_id: 7,
            number_id: id,
            pacing: None,
        };
        assert_eq!(
            serde_json::to_string(&job).unwrap(),
            r#"{"type":"send.v1","message_id":7,"number_id":"00000000-0000-0000-0000-000000000000"}"#
        );
        let paced = SendTask::Send {
            message_id: 7,
            number_id: id,
            pacing: Some(JobPacing {
                min_gap_ms: 60000,
                jitter: Jitter::Uniform { max_ms: 10 },
            }),
        };
        let text = serde_json::to_string(&paced).unwrap();
        assert!(
            text.contains(
                r#""pacing":{"min_gap_ms":60000,"jitter":{"kind":"uniform","max_ms":10}}"#
            ),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<SendTask>(&text).unwrap(), paced);
    }

    #[test]
    fn webhook_jobs_have_a_stable_wire_form() {
        let job = WebhookTask::Deliver {
            delivery_id: 12,
            attempt: 3,
        };
        let text = serde_json::to_string(&job).unwrap();
        assert_eq!(
            text,
            r#"{"type":"webhook.v1","delivery_id":12,"attempt":3}"#
        );
        assert_eq!(serde_json::from_str::<WebhookTask>(&text).unwrap(), job);
    }

    #[test]
    fn unknown_task_types_are_refused() {
        let err = serde_json::from_str::<SendTask>(r#"{"type":"send.v9","message_id":1}"#);
        assert!(err.is_err());
    }
}
