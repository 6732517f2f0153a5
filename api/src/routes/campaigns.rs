//! `/v1/campaigns`: templates (one, or several variants) sent to inline
//! recipients or a list's contacts, through named numbers or a pool of
//! tagged numbers, within a send window in each recipient's local time.
//! Created as a draft (messages rendered and stored, suppressed recipients
//! recorded as such), sent once started; paused, resumed and cancelled at any
//! time; a dry run validates, counts and plans without storing anything.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use herald_shared::{
    config::parse_time_of_day,
    db::{
        self, DbError, GenericClient, Transaction,
        campaigns::{Campaign, NewCampaign},
        messages::NewMessage,
        sender_numbers::SenderNumber,
    },
    domain::{CampaignStatus, MessageState, is_known_region, new_wa_message_id},
    events::{Event, EventBody},
    outbox,
    policy::{
        projection::Projection,
        zones::{END_OF_DAY, SendWindow, ZoneKey},
    },
    template::MessageTemplate,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    counts::{CountsCache, Lookup},
    error::{ApiError, ApiResult, FieldError, ReadErrors, WriteErrors},
    extract::{ApiJson, ApiQuery, Page, Paging, PathId, Tenant},
    plan,
    recipients::{self, RecipientInput, RejectedRow},
    routes::numbers::valid_tag,
    state::AppState,
};

/// Rejected rows listed in one response at most (the total is always given).
const MAX_LISTED_REJECTIONS: usize = 1000;
const MAX_VARIANTS: usize = 10;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// Any invalid row rejects the whole request; nothing is created.
    #[default]
    Reject,
    /// Create the campaign without the invalid rows, reported in the response.
    Skip,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowInput {
    /// "HH:MM" in the recipient's local time.
    start: String,
    end: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCampaign {
    name: String,
    /// The template (or give `variants`).
    template_id: Option<Uuid>,
    /// Several templates; recipients get them in turn.
    #[serde(default)]
    variants: Vec<Uuid>,
    /// Ids of the numbers that send it (or give `pool`).
    #[serde(default)]
    numbers: Vec<Uuid>,
    /// A tag: the tenant's numbers carrying it send the campaign.
    pool: Option<String>,
    /// Inline recipients (or give `list_id`).
    #[serde(default)]
    recipients: Vec<RecipientInput>,
    /// Send to a list's contacts (their attributes, name and phone are the
    /// template's variables).
    list_id: Option<Uuid>,
    /// Only the list's contacts whose attributes contain these values.
    filter: Option<CampaignFilter>,
    /// ISO 3166 region for phone numbers written without `+country`.
    default_region: Option<String>,
    #[serde(default)]
    on_invalid: OnInvalid,
    /// Send window in each recipient's local time (default 09:00–20:00).
    window: Option<WindowInput>,
    /// Starting sends not before this.
    start_at: Option<DateTime<Utc>>,
    /// Whatever is not sent by then is cancelled.
    end_by: Option<DateTime<Utc>>,
    /// Recipients one variant goes to per number per day (0: no limit).
    max_per_variant: Option<i32>,
    /// Consecutive failures after which the campaign pauses itself.
    max_consecutive_failures: Option<i32>,
    /// Validate, count and plan; store nothing.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignFilter {
    /// e.g. `{"city": "Recife"}`: contacts whose attributes include these.
    attributes: serde_json::Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignBody {
    id: Uuid,
    name: String,
    status: CampaignStatus,
    /// Why the status is what it is, when Herald set it (auto-pause, end_by).
    status_reason: Option<String>,
    template_id: Option<Uuid>,
    /// Templates of the variants, in order (one for a single template).
    variants: Vec<Uuid>,
    /// The list it was built from, and the filter applied.
    list_id: Option<Uuid>,
    filter: Option<Value>,
    /// Named numbers (empty for a pool campaign).
    numbers: Vec<Uuid>,
    pool: Option<String>,
    window: WindowInput,
    start_at: Option<DateTime<Utc>>,
    end_by: Option<DateTime<Utc>>,
    max_per_variant: i32,
    max_consecutive_failures: i32,
    /// Messages in the campaign.
    recipients: i32,
    /// Rows left out at creation (`on_invalid: skip`).
    rejected: i32,
    /// Recipients on the suppression list at creation (recorded
    /// `suppressed`, never sent).
    suppressed: i32,
    /// Messages per state; every state is listed.
    counts: BTreeMap<&'static str, i64>,
    /// Messages received in answer (the campaign's message was the last one
    /// their sender got), people who answered, and those who opted out.
    replies: i64,
    repliers: i64,
    opt_outs: i64,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    paused_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
}

fn window_body(window: &SendWindow) -> WindowInput {
    let format = |t: chrono::NaiveTime| {
        if t == END_OF_DAY {
            "24:00".to_string()
        } else {
            t.format("%H:%M").to_string()
        }
    };
    WindowInput {
        start: format(window.start),
        end: format(window.end),
    }
}

/// The campaign as answered. With `kept`, its message counts may be ones
/// counted up to `api.counts_max_age_ms` earlier (see [`CountsCache`]); without,
/// they are counted now (requests that changed the campaign).
async fn campaign_body(
    client: &impl GenericClient,
    campaign: Campaign,
    kept: Option<&CountsCache>,
) -> Result<CampaignBody, DbError> {
    let counted = async {
        Ok(
            match kept.map(|cache| (cache, cache.lookup(campaign.id, campaign.status))) {
                Some((_, Lookup::Use(counts))) => counts,
                Some((cache, Lookup::Count(at))) => {
                    let counted = db::campaigns::state_counts(client, campaign.id).await?;
                    cache.store(
                        (campaign.tenant_id, campaign.id),
                        campaign.status,
                        at,
                        counted,
                    )
                }
                None => Arc::new(db::campaigns::state_counts(client, campaign.id).await?),
            },
        )
    };
    // Independent reads, sent together: one round trip instead of four.
    let (numbers, variants, counted, replies) = tokio::try_join!(
        db::campaigns::senders(client, campaign.id),
        db::campaigns::variant_templates(client, campaign.id),
        counted,
        db::inbound::replies(client, campaign.id),
    )?;
    let mut counts: BTreeMap<&'static str, i64> =
        MessageState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for (state, count) in counted.iter() {
        counts.insert(state.as_str(), *count);
    }
    Ok(CampaignBody {
        id: campaign.id,
        name: campaign.name,
        status: campaign.status,
        status_reason: campaign.status_reason,
        template_id: campaign.template_id,
        variants,
        list_id: campaign.list_id,
        filter: campaign.filter,
        numbers,
        pool: campaign.pool,
        window: window_body(&campaign.window),
        start_at: campaign.start_at,
        end_by: campaign.end_by,
        max_per_variant: campaign.max_per_variant,
        max_consecutive_failures: campaign.max_consecutive_failures,
        recipients: campaign.recipients,
        rejected: campaign.rejected,
        suppressed: campaign.suppressed,
        counts,
        replies: replies.replies,
        repliers: replies.repliers,
        opt_outs: replies.opt_outs,
        created_at: campaign.created_at,
        started_at: campaign.started_at,
        paused_at: campaign.paused_at,
        cancelled_at: campaign.cancelled_at,
        completed_at: campaign.completed_at,
    })
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Report {
    /// Recipients who become messages (suppressed ones included).
    accepted: usize,
    /// Of those, on the suppression list: recorded `suppressed`, never sent.
    suppressed: usize,
    rejected_total: usize,
    /// The first rejected rows (up to 1000).
    rejected: Vec<RejectedRow>,
    /// Accepted recipients per variant.
    per_variant: Vec<usize>,
    /// Accepted recipients per time zone key (`p:<phone prefix>` or
    /// `z:<zone>`).
    per_zone: BTreeMap<String, usize>,
    #[serde(skip)]
    chars: usize,
}

impl Report {
    fn new(variants: usize) -> Self {
        Self {
            per_variant: vec![0; variants],
            ..Self::default()
        }
    }

    fn count(&mut self, message: &NewMessage) {
        self.accepted += 1;
        self.suppressed += usize::from(message.suppressed);
        self.per_variant[message.variant as usize] += 1;
        *self
            .per_zone
            .entry(message.zone.as_str().to_string())
            .or_default() += 1;
        self.chars += message.body.chars().count();
    }

    fn reject(&mut self, row: RejectedRow) {
        self.rejected_total += 1;
        if self.rejected.len() < MAX_LISTED_REJECTIONS {
            self.rejected.push(row);
        }
    }

    fn average_chars(&self) -> usize {
        self.chars / self.accepted.max(1)
    }
}

#[derive(Serialize, ToSchema)]
pub struct Created {
    #[serde(flatten)]
    campaign: CampaignBody,
    report: Report,
}

#[derive(Serialize, ToSchema)]
pub struct DryRun {
    dry_run: bool,
    report: Report,
    plan: Projection,
}

/// A request checked against the tenant's data, ready to create.
struct Checked {
    name: String,
    templates: Vec<herald_shared::db::templates::Template>,
    senders: Vec<SenderNumber>,
    window: SendWindow,
    region: String,
}

async fn check(
    state: &AppState,
    client: &impl GenericClient,
    tenant_id: Uuid,
    request: &CreateCampaign,
) -> ApiResult<Checked> {
    let mut errors = Vec::new();
    let limits = &state.config.api;
    let name = request.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 200 {
        errors.push(FieldError::new("/name", "must have 1 to 200 characters"));
    }
    if request.list_id.is_some() {
        if !request.recipients.is_empty() {
            errors.push(FieldError::new(
                "/recipients",
                "give recipients or list_id, not both",
            ));
        }
    } else if request.filter.is_some() {
        errors.push(FieldError::new("/filter", "a filter applies to a list_id"));
    } else if request.recipients.is_empty() {
        errors.push(FieldError::new(
            "/recipients",
            "at least one recipient is needed (or a list_id)",
        ));
    } else if request.recipients.len() > limits.max_inline_recipients {
        errors.push(FieldError::new(
            "/recipients",
            format!(
                "{} recipients given; at most {} fit in one request",
                request.recipients.len(),
                limits.max_inline_recipients
            ),
        ));
    }
    let template_ids: Vec<Uuid> = match (request.template_id, request.variants.is_empty()) {
        (Some(id), true) => vec![id],
        (None, false) => request.variants.clone(),
        (Some(_), false) => {
            errors.push(FieldError::new(
                "/variants",
                "give template_id or variants, not both",
            ));
            Vec::new()
        }
        (None, true) => {
            errors.push(FieldError::new(
                "/template_id",
                "give template_id or variants",
            ));
            Vec::new()
        }
    };
    if template_ids.len() > MAX_VARIANTS {
        errors.push(FieldError::new(
            "/variants",
            format!("at most {MAX_VARIANTS} variants"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, id) in request.variants.iter().enumerate() {
        if !seen.insert(id) {
            errors.push(FieldError::new(format!("/variants/{i}"), "listed twice"));
        }
    }
    match (&request.pool, request.numbers.is_empty()) {
        (Some(_), false) => errors.push(FieldError::new("/pool", "give numbers or pool, not both")),
        (None, true) => errors.push(FieldError::new(
            "/numbers",
            "name at least one sending number, or a pool",
        )),
        (Some(tag), true) if !valid_tag(tag) => errors.push(FieldError::new(
            "/pool",
            "a tag: 1 to 50 characters among a-z, 0-9, '-' and '_'",
        )),
        _ => {}
    }
    let mut distinct = HashSet::new();
    for (i, id) in request.numbers.iter().enumerate() {
        if !distinct.insert(id) {
            errors.push(FieldError::new(format!("/numbers/{i}"), "listed twice"));
        }
    }
    let region = request
        .default_region
        .clone()
        .unwrap_or_else(|| limits.default_region.clone());
    if !region.is_empty() && !is_known_region(&region) {
        errors.push(FieldError::new(
            "/default_region",
            format!("unknown region {region:?} (use an ISO 3166 code such as \"BR\")"),
        ));
    }
    let window = match &request.window {
        None => state.config.pacing.default_window().ok(),
        Some(w) => {
            let parsed = parse_time_of_day(&w.start)
                .and_then(|start| Ok((start, parse_time_of_day(&w.end)?)))
                .and_then(|(start, end)| SendWindow::new(start, end));
            parsed
                .map_err(|err| errors.push(FieldError::new("/window", err)))
                .ok()
        }
    };
    let now = Utc::now();
    if let Some(end_by) = request.end_by {
        if end_by <= now {
            errors.push(FieldError::new("/end_by", "must be in the future"));
        } else if request.start_at.is_some_and(|start| end_by <= start) {
            errors.push(FieldError::new("/end_by", "must be after start_at"));
        }
    }
    if request
        .max_per_variant
        .is_some_and(|m| !(0..=100_000).contains(&m))
    {
        errors.push(FieldError::new(
            "/max_per_variant",
            "between 0 (no limit) and 100000",
        ));
    }
    if request
        .max_consecutive_failures
        .is_some_and(|m| !(1..=100_000).contains(&m))
    {
        errors.push(FieldError::new(
            "/max_consecutive_failures",
            "between 1 and 100000",
        ));
    }

    if let Some(list_id) = request.list_id
        && db::lists::get(client, tenant_id, list_id).await?.is_none()
    {
        errors.push(FieldError::new("/list_id", "no list with this id"));
    }
    let mut templates = Vec::new();
    for (i, id) in template_ids.iter().enumerate() {
        match db::templates::get(client, tenant_id, *id).await? {
            Some(template) => templates.push(template),
            None => errors.push(FieldError::new(
                if request.template_id.is_some() {
                    "/template_id".to_string()
                } else {
                    format!("/variants/{i}")
                },
                "no template with this id",
            )),
        }
    }
    let senders = match &request.pool {
        Some(tag) => {
            let tagged = db::sender_numbers::tagged(client, tenant_id, tag).await?;
            if tagged.is_empty() && valid_tag(tag) {
                errors.push(FieldError::new(
                    "/pool",
                    format!("no number carries the tag {tag:?}"),
                ));
            }
            tagged
        }
        None => {
            let found = db::sender_numbers::get_many(client, tenant_id, &request.numbers).await?;
            let known: HashSet<Uuid> = found.iter().map(|n| n.id).collect();
            for (i, id) in request.numbers.iter().enumerate() {
                if !known.contains(id) {
                    errors.push(FieldError::new(
                        format!("/numbers/{i}"),
                        "no number with this id",
                    ));
                }
            }
            found
        }
    };
    match window {
        Some(window) if errors.is_empty() => Ok(Checked {
            name,
            templates,
            senders,
            window,
            region,
        }),
        _ => Err(ApiError::invalid(
            "the campaign cannot be created as given",
            errors,
        )),
    }
}

/// Creates a campaign (a draft), or with `dry_run` only validates, counts
/// and plans it.
#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns", request_body = CreateCampaign,
    responses(
        (status = 201, description = "The campaign and its creation report", body = Created),
        (status = 200, description = "Dry run: the report and the plan; nothing stored", body = DryRun),
        WriteErrors),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiJson(request): ApiJson<CreateCampaign>,
) -> ApiResult<Response> {
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let checked = check(&state, &tx, tenant_id, &request).await?;
    let compiled = checked
        .templates
        .iter()
        .map(|t| MessageTemplate::compile(&t.body))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            ApiError::Internal(anyhow::anyhow!("stored template no longer compiles: {err}"))
        })?;
    let media = checked.templates[0].media.clone();
    let sender_ids: Vec<Uuid> = checked.senders.iter().map(|n| n.id).collect();
    let filter = request
        .filter
        .as_ref()
        .map(|f| Value::Object(f.attributes.clone()));

    let campaign = if request.dry_run {
        None
    } else {
        let campaign = db::campaigns::insert(
            &tx,
            &NewCampaign {
                tenant_id,
                name: &checked.name,
                template_id: checked.templates[0].id,
                recipients: 0,
                rejected: 0,
                pool: request.pool.as_deref(),
                start_at: request.start_at,
                end_by: request.end_by,
                window: checked.window,
                zones: &[],
                variants: compiled.len() as i16,
                max_per_variant: request
                    .max_per_variant
                    .unwrap_or(state.config.pacing.default_max_per_variant),
                max_consecutive_failures: request
                    .max_consecutive_failures
                    .unwrap_or(state.config.pacing.default_max_consecutive_failures),
                list_id: request.list_id,
                filter: filter.as_ref(),
            },
        )
        .await?;
        if request.pool.is_none() {
            db::campaigns::add_senders(&tx, campaign.id, &sender_ids).await?;
        }
        let template_ids: Vec<Uuid> = checked.templates.iter().map(|t| t.id).collect();
        db::campaigns::add_variants(&tx, campaign.id, &template_ids).await?;
        Some(campaign.id)
    };
    let mut build = Build {
        tx: &tx,
        tenant_id,
        campaign_id: campaign,
        senders: &sender_ids,
        report: Report::new(compiled.len()),
    };
    match request.list_id {
        Some(list_id) => {
            walk_list(
                &mut build,
                list_id,
                filter.as_ref(),
                &compiled,
                media.as_ref(),
                state.config.api.max_body_chars,
            )
            .await?
        }
        None => {
            let prepared = recipients::prepare(
                &compiled,
                &request.recipients,
                Some(checked.region.as_str()).filter(|r| !r.is_empty()),
                state.config.api.max_body_chars,
            );
            for row in prepared.rejected {
                build.report.reject(row);
            }
            build.add(prepared.messages, media.as_ref()).await?;
        }
    }
    let report = build.report;

    let rejected_total = report.rejected_total;
    let refuse = |detail: String, report: Report| ApiError::InvalidRecipients {
        detail,
        rejected_total: report.rejected_total,
        rows: report.rejected.iter().map(|r| json!(r)).collect(),
    };
    if rejected_total > 0 && request.on_invalid == OnInvalid::Reject && !request.dry_run {
        return Err(refuse(
            format!(
                "{rejected_total} of {} recipients cannot be sent to; nothing was created. \
                 Fix them, or send \"on_invalid\": \"skip\" to create the campaign without them",
                rejected_total + report.accepted
            ),
            report,
        ));
    }
    if report.accepted == 0 && !request.dry_run {
        return Err(refuse(
            "no recipient can be sent to; nothing was created".into(),
            report,
        ));
    }

    let Some(campaign_id) = campaign else {
        let backlog = report
            .per_zone
            .iter()
            .map(|(key, n)| (ZoneKey::stored(key.as_str()), *n as i64))
            .collect();
        let plan = plan::projection(
            &tx,
            &state.config,
            tenant_id,
            &checked.senders,
            backlog,
            checked.window,
            request.end_by,
            report.average_chars(),
        )
        .await?;
        // A dry run stores nothing: the transaction is rolled back.
        drop(tx);
        return Ok(Json(DryRun {
            dry_run: true,
            report,
            plan,
        })
        .into_response());
    };
    let zones: Vec<String> = report.per_zone.keys().cloned().collect();
    let campaign = db::campaigns::set_counts(
        &tx,
        campaign_id,
        report.accepted as i32,
        rejected_total as i32,
        report.suppressed as i32,
        &zones,
    )
    .await?;
    let body = campaign_body(&tx, campaign, None).await?;
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(%campaign_id, recipients = report.accepted, rejected = rejected_total, suppressed = report.suppressed, "campaign created");
    Ok((
        StatusCode::CREATED,
        Json(Created {
            campaign: body,
            report,
        }),
    )
        .into_response())
}

/// Messages being built for a campaign (or counted, for a dry run).
struct Build<'a, 'tx> {
    tx: &'a Transaction<'tx>,
    tenant_id: Uuid,
    /// `None` for a dry run: count, store nothing.
    campaign_id: Option<Uuid>,
    senders: &'a [Uuid],
    report: Report,
}

impl Build<'_, '_> {
    /// Marks suppressed recipients, counts, and stores a batch.
    async fn add(&mut self, mut messages: Vec<NewMessage>, media: Option<&Value>) -> ApiResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let phones: Vec<&str> = messages.iter().map(|m| m.recipient.as_str()).collect();
        let suppressed = db::suppressions::among(self.tx, self.tenant_id, &phones).await?;
        for message in &mut messages {
            message.suppressed = suppressed.contains(message.recipient.as_str());
            message.media = media.cloned();
            self.report.count(message);
        }
        if let Some(campaign_id) = self.campaign_id {
            db::messages::insert_for_campaign(
                self.tx,
                self.tenant_id,
                campaign_id,
                self.senders,
                &messages,
            )
            .await?;
        }
        Ok(())
    }
}

/// Contacts fetched per round trip while walking a list.
const LIST_PAGE: i32 = 5000;

/// Turns a list's contacts (those matching `filter`) into messages, a page at
/// a time through a portal, so a list of any size takes flat memory.
async fn walk_list(
    build: &mut Build<'_, '_>,
    list_id: Uuid,
    filter: Option<&Value>,
    templates: &[MessageTemplate],
    media: Option<&Value>,
    max_chars: usize,
) -> ApiResult<()> {
    let statement = build.tx.prepare(db::contacts::LIST_WALK).await?;
    let portal = build.tx.bind(&statement, &[&list_id, &filter]).await?;
    let mut row_index = 0usize;
    loop {
        let rows = build.tx.query_portal(&portal, LIST_PAGE).await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut batch = Vec::with_capacity(rows.len());
        for row in &rows {
            let contact = db::contacts::from_walk(row);
            let variant = (build.report.accepted + batch.len()) % templates.len();
            match recipients::render(&templates[variant], &contact.variables(), max_chars) {
                Ok(body) => batch.push(NewMessage {
                    zone: ZoneKey::for_phone(&contact.phone),
                    recipient: contact.phone,
                    body,
                    wa_message_id: new_wa_message_id(),
                    variant: variant as i16,
                    media: None,
                    suppressed: false,
                }),
                Err(reason) => build.report.reject(RejectedRow {
                    row: row_index,
                    pointer: format!("contact {}", contact.id),
                    phone: contact.phone.to_string(),
                    reason,
                }),
            }
            row_index += 1;
        }
        build.add(batch, media).await?;
    }
}

/// The tenant's campaigns, a page at a time.
#[utoipa::path(get, path = "/v1/campaigns", tag = "campaigns", params(Paging),
    responses((status = 200, description = "A page of campaigns", body = Page<CampaignBody>), ReadErrors),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<CampaignBody>>> {
    let limit = paging.limit(&state)?;
    let after = paging.after_uuid()?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let campaigns = db::campaigns::page(&tx, tenant_id, after, limit + 1).await?;
    let mut bodies = Vec::with_capacity(campaigns.len());
    for campaign in campaigns {
        bodies.push(campaign_body(&tx, campaign, Some(&state.counts)).await?);
    }
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(Page::new(bodies, limit, |c| c.id.to_string(), |c| c)))
}

/// One campaign, with its messages counted per state.
#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses((status = 200, description = "The campaign", body = CampaignBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<CampaignBody>> {
    let id = id.or_not_found("campaign")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let campaign = db::campaigns::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("campaign"))?;
    let body = campaign_body(&tx, campaign, Some(&state.counts)).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(body))
}

/// What a status change does: the statuses it applies from (for the error),
/// and the event it announces.
enum Action {
    Start,
    Pause,
    Resume,
    Cancel,
}

impl Action {
    fn verb(&self) -> &'static str {
        match self {
            Self::Start => "started (only a draft can be)",
            Self::Pause => "paused (only a running or scheduled campaign can be)",
            Self::Resume => "resumed (only a paused campaign can be)",
            Self::Cancel => "cancelled (it has already ended)",
        }
    }

    /// The status a repeated request finds, which is answered as success.
    fn done_status(&self) -> &'static [CampaignStatus] {
        match self {
            Self::Start | Self::Resume => &[CampaignStatus::Running, CampaignStatus::Scheduled],
            Self::Pause => &[CampaignStatus::Paused],
            Self::Cancel => &[CampaignStatus::Cancelled],
        }
    }
}

async fn act(
    state: &AppState,
    tenant_id: Uuid,
    id: PathId,
    action: Action,
) -> ApiResult<Json<CampaignBody>> {
    let id = id.or_not_found("campaign")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let now = Utc::now();
    let changed = match action {
        Action::Start => db::campaigns::start(&tx, tenant_id, id, now).await?,
        Action::Pause => db::campaigns::pause(&tx, tenant_id, id, None).await?,
        Action::Resume => db::campaigns::resume(&tx, tenant_id, id, now).await?,
        Action::Cancel => {
            db::campaigns::cancel(&tx, tenant_id, id, "cancelled through the API").await?
        }
    };
    let campaign = match changed {
        Some(campaign) => {
            let reference = EventBody::campaign(id, None);
            let body = match (&action, campaign.status) {
                (Action::Start | Action::Resume, CampaignStatus::Scheduled) => None,
                (Action::Start, _) => Some(EventBody::CampaignStarted(reference)),
                (Action::Pause, _) => Some(EventBody::CampaignPaused(reference)),
                (Action::Resume, _) => Some(EventBody::CampaignResumed(reference)),
                (Action::Cancel, _) => Some(EventBody::CampaignCancelled(reference)),
            };
            if let Some(body) = body {
                outbox::enqueue(&tx, &Event::new(tenant_id, body)).await?;
            }
            campaign
        }
        None => {
            let current = db::campaigns::get(&tx, tenant_id, id)
                .await?
                .ok_or_else(|| ApiError::not_found("campaign"))?;
            if !action.done_status().contains(&current.status) {
                return Err(ApiError::Conflict(format!(
                    "the campaign is {}; it cannot be {}",
                    current.status.as_str(),
                    action.verb()
                )));
            }
            current
        }
    };
    let body = campaign_body(&tx, campaign, None).await?;
    tx.commit().await.map_err(DbError::from)?;
    state.outbox_written.notify_one();
    Ok(Json(body))
}

/// Starts a draft (`scheduled` while its `start_at` is ahead). Starting a
/// started campaign again changes nothing.
#[utoipa::path(post, path = "/v1/campaigns/{id}/start", tag = "campaigns",
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses((status = 200, description = "The campaign", body = CampaignBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn start(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<CampaignBody>> {
    act(&state, tenant_id, id, Action::Start).await
}

/// Pauses: nothing more is claimed for sending; jobs already queued find
/// their messages back in `queued` and do nothing.
#[utoipa::path(post, path = "/v1/campaigns/{id}/pause", tag = "campaigns",
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses((status = 200, description = "The campaign", body = CampaignBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<CampaignBody>> {
    act(&state, tenant_id, id, Action::Pause).await
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/resume", tag = "campaigns",
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses((status = 200, description = "The campaign", body = CampaignBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<CampaignBody>> {
    act(&state, tenant_id, id, Action::Resume).await
}

/// Cancels: unsent messages end `cancelled`; a message already being sent
/// finishes.
#[utoipa::path(post, path = "/v1/campaigns/{id}/cancel", tag = "campaigns",
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses((status = 200, description = "The campaign", body = CampaignBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<CampaignBody>> {
    act(&state, tenant_id, id, Action::Cancel).await
}

#[derive(Serialize, ToSchema)]
pub struct PlanBody {
    campaign_id: Uuid,
    status: CampaignStatus,
    #[serde(flatten)]
    plan: Projection,
}

/// When the campaign's remaining messages would go out, per number and per
/// day, under the numbers' caps and pace and the recipients' windows.
#[utoipa::path(get, path = "/v1/campaigns/{id}/plan", tag = "campaigns",
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses((status = 200, description = "The projection", body = PlanBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn plan(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<impl IntoResponse> {
    let id = id.or_not_found("campaign")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let campaign = db::campaigns::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("campaign"))?;
    let number_ids = db::campaigns::sending_numbers(&tx, &campaign).await?;
    let numbers = db::sender_numbers::get_many(&tx, tenant_id, &number_ids).await?;
    let (backlog, chars) = db::messages::backlog_by_zone(&tx, id).await?;
    let plan = plan::projection(
        &tx,
        &state.config,
        tenant_id,
        &numbers,
        backlog
            .into_iter()
            .map(|(key, n)| (ZoneKey::stored(key), n))
            .collect(),
        campaign.window,
        campaign.end_by,
        chars,
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(PlanBody {
        campaign_id: id,
        status: campaign.status,
        plan,
    }))
}
