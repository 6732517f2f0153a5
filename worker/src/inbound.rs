//! What people write to a number: stored, linked to the campaign message it
//! answers, announced as `message.received`, and, when the whole text is an
//! opt-out keyword, acted on at once: the sender goes on the tenant's
//! suppression list, their waiting messages are stopped, and the tenant's
//! confirmation (if it set one) is queued. All in the transaction that
//! records the message, before the network is told it was handled.

use herald_shared::{
    config::InboundConfig,
    db::{
        self, DbError,
        inbound::NewInbound,
        messages::{NewDirect, NewMessage},
        sender_numbers::SenderNumber,
    },
    domain::{PhoneNumber, new_wa_message_id},
    events::{Event, EventBody, InboundMessage, MessageRef, OptedOut},
    metrics as m, optout, outbox,
    policy::zones::ZoneKey,
};

/// A received message, as the session reported it.
pub struct Received<'a> {
    pub wa_message_id: &'a str,
    pub from: &'a str,
    pub kind: &'a str,
    pub text: Option<&'a str>,
    pub media_type: Option<&'a str>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Records `received` inside the caller's transaction.
pub async fn record(
    tx: &impl db::GenericClient,
    config: &InboundConfig,
    number: &SenderNumber,
    received: &Received<'_>,
) -> Result<(), DbError> {
    let tenant_id = number.tenant_id;
    // A phone number when the network gives one; otherwise whatever address
    // it gave (kept as is, never suppressed: it cannot be matched to sends).
    let phone = PhoneNumber::parse(received.from, None).ok();
    let sender = phone
        .as_ref()
        .map_or_else(|| received.from.to_string(), |p| p.to_string());
    let settings = db::tenants::opt_out_settings(tx, tenant_id).await?;
    let keyword = match (&phone, received.kind, received.text) {
        (Some(_), "text", Some(text)) => optout::matching_keyword(
            text,
            settings
                .keywords
                .as_deref()
                .unwrap_or(&config.opt_out_keywords),
        ),
        _ => None,
    };
    let Some(inbound) = db::inbound::insert(
        tx,
        &NewInbound {
            tenant_id,
            number_id: number.id,
            sender: &sender,
            wa_message_id: received.wa_message_id,
            kind: received.kind,
            body: received.text,
            media_type: received.media_type,
            received_at: received.at,
            opt_out: keyword.is_some(),
        },
        config.attribution_days,
    )
    .await?
    else {
        // Recorded before: the network delivered it again.
        return Ok(());
    };
    metrics::counter!(m::INBOUND, "kind" => kind_label(received.kind)).increment(1);
    let body = EventBody::MessageReceived(InboundMessage {
        inbound_id: inbound.id,
        number_id: number.id,
        from: sender.clone(),
        wa_message_id: inbound.wa_message_id.clone(),
        kind: inbound.kind.clone(),
        text: inbound.body.clone(),
        media_type: inbound.media_type.clone(),
        received_at: inbound.received_at,
        reply_to_message_id: inbound.reply_to_message_id,
        campaign_id: inbound.campaign_id,
        opt_out: inbound.opt_out,
    });
    outbox::enqueue(tx, &Event::new(tenant_id, body)).await?;

    let (Some(phone), Some(keyword)) = (phone, keyword) else {
        return Ok(());
    };
    db::suppressions::upsert(
        tx,
        tenant_id,
        phone.as_str(),
        Some(&format!("replied {keyword:?}")),
        "opt_out",
    )
    .await?;
    let stopped =
        db::messages::suppress_recipient(tx, tenant_id, phone.as_str(), "the recipient opted out")
            .await?;
    let confirmation = match settings.reply.as_deref() {
        Some(text) => Some(confirm(tx, number, &phone, text).await?),
        None => None,
    };
    metrics::counter!(m::OPT_OUTS).increment(1);
    tracing::info!(number_id = %number.id, inbound_id = inbound.id, stopped, "recipient opted out");
    let body = EventBody::ContactOptedOut(OptedOut {
        phone: phone.to_string(),
        number_id: number.id,
        inbound_id: inbound.id,
        keyword,
        stopped_messages: stopped,
        confirmation_message_id: confirmation,
    });
    outbox::enqueue(tx, &Event::new(tenant_id, body)).await?;
    Ok(())
}

/// Queues the opt-out confirmation, from the number they wrote to.
async fn confirm(
    tx: &impl db::GenericClient,
    number: &SenderNumber,
    to: &PhoneNumber,
    text: &str,
) -> Result<i64, DbError> {
    let message = NewMessage {
        zone: ZoneKey::for_phone(to),
        recipient: to.clone(),
        body: text.to_string(),
        wa_message_id: new_wa_message_id(),
        variant: 0,
        media: None,
        suppressed: false,
    };
    let id = db::messages::insert_direct(
        tx,
        &NewDirect {
            tenant_id: number.tenant_id,
            number_id: number.id,
            message: &message,
            confirms_opt_out: true,
        },
    )
    .await?;
    let body = EventBody::MessageQueued(MessageRef {
        message_id: id,
        number_id: Some(number.id),
    });
    outbox::enqueue(tx, &Event::new(number.tenant_id, body)).await?;
    Ok(id)
}

/// Kinds as metric labels (a closed set: anything else is `other`).
fn kind_label(kind: &str) -> &'static str {
    match kind {
        "text" => "text",
        "image" => "image",
        "video" => "video",
        "audio" => "audio",
        "document" => "document",
        "sticker" => "sticker",
        "location" => "location",
        "contact" => "contact",
        _ => "other",
    }
}
