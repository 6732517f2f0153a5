//! The broker client's subscriptions (`Broker::subscribe`), on the real
//! RabbitMQ: an error that closes one channel leaves the connection's other
//! subscriptions consuming, and a connection closed by the broker ends every
//! subscription on it at once, so its consumer subscribes again.

use std::{sync::Arc, time::Duration};

use herald_shared::queue::{self, Broker, Outgoing, Publisher, Settle, Subscription};
use herald_tests::{services, stack::rabbit_config, unique_suffix};
use lapin::{Channel, options::QueueDeclareOptions, types::FieldTable};

/// Unused: these tests declare their own queues, not Herald's topology.
const PREFIX: &str = "herald-test";

/// A throwaway queue (deleted with its last consumer).
async fn declare(channel: Channel, queue: &str) -> Result<(), queue::QueueError> {
    let options = QueueDeclareOptions {
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await?;
    Ok(())
}

async fn subscribe(broker: &Broker, queue: &str) -> Subscription {
    broker
        .subscribe(queue, "test", 1, |channel| declare(channel, queue))
        .await
        .expect("subscribed")
}

/// Publishes `payload` to `queue` and expects `subscription` to receive it
/// (and acks it).
async fn round_trip(
    broker: &Arc<Broker>,
    queue: &str,
    subscription: &mut Subscription,
    payload: &[u8],
) {
    let publisher = Publisher::new(broker.clone(), &rabbit_config(PREFIX));
    publisher
        .publish(Outgoing {
            exchange: "",
            routing_key: queue,
            payload,
        })
        .await
        .expect("published");
    let delivery = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the subscription runs")
        .expect("a delivery, not an error");
    assert_eq!(delivery.data, payload);
    assert!(queue::settle(&delivery, Settle::Ack).await);
}

#[tokio::test]
async fn a_channel_error_leaves_the_other_subscriptions_consuming() {
    let suffix = unique_suffix();
    let broker = Broker::new(&rabbit_config(PREFIX), &format!("subscriptions {suffix}"));
    let queue = format!("herald-test-{suffix}.jobs");
    let mut jobs = subscribe(&broker, &queue).await;

    // The same queue declared again with other arguments: the broker closes
    // that channel (PRECONDITION_FAILED), and the connection reports it.
    let other = broker.channel().await.unwrap();
    let redeclared = other
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await;
    assert!(redeclared.is_err(), "a conflicting declaration must fail");
    tokio::time::sleep(Duration::from_millis(300)).await;

    round_trip(&broker, &queue, &mut jobs, b"still here").await;
    jobs.close().await;
    broker.close().await;
}

#[tokio::test]
async fn a_connection_closed_by_the_broker_ends_its_subscriptions() {
    let suffix = unique_suffix();
    let name = format!("subscriptions {suffix}");
    let broker = Broker::new(&rabbit_config(PREFIX), &name);
    let first = format!("herald-test-{suffix}.first");
    let second = format!("herald-test-{suffix}.second");
    let mut subscriptions = vec![
        subscribe(&broker, &first).await,
        subscribe(&broker, &second).await,
    ];

    assert_eq!(services::rabbitmq_close_connections(&name), 1);
    for subscription in &mut subscriptions {
        let next = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("the subscription ends within 10 s");
        assert!(
            !matches!(next, Some(Ok(_))),
            "no delivery can come from a closed connection"
        );
    }

    // Subscribing again opens a new connection, which consumes.
    let mut again = subscribe(&broker, &first).await;
    round_trip(&broker, &first, &mut again, b"again").await;
    again.close().await;
    broker.close().await;
}
