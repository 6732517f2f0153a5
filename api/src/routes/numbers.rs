//! `/v1/numbers`: the WhatsApp numbers a tenant sends from, with their limits
//! and pacing.

use std::collections::HashSet;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use chrono::{DateTime, Utc};
use herald_shared::{
    db::{
        self, DbError,
        sender_numbers::{NewSenderNumber, NumberChanges, SenderNumber},
    },
    domain::{NumberKind, NumberState, PhoneNumber},
    policy::{
        breaker::BreakerState,
        jitter::Jitter,
        zones::{home_zone, parse_zone},
    },
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, FieldError, ReadErrors, WriteErrors},
    extract::{ApiJson, ApiQuery, Page, Paging, PathId, Tenant},
    state::AppState,
};

/// Highest daily cap accepted: far above what any number survives, low enough
/// to catch a typo (an extra zero or two).
const MAX_DAILY_CAP: i32 = 100_000;
const MAX_MIN_GAP_MS: i32 = 24 * 60 * 60 * 1000;
const MAX_TAGS: usize = 20;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNumber {
    /// E.164, or any common formatting with a country code.
    phone: String,
    kind: NumberKind,
    label: Option<String>,
    daily_cap: Option<i32>,
    min_gap_ms: Option<i32>,
    /// IANA zone the number's days are counted in (default: from its phone).
    time_zone: Option<String>,
    warmup_plan: Option<String>,
    jitter: Option<Jitter>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNumber {
    #[serde(default, deserialize_with = "crate::extract::nullable")]
    #[schema(nullable)]
    label: Option<Option<String>>,
    daily_cap: Option<i32>,
    min_gap_ms: Option<i32>,
    time_zone: Option<String>,
    warmup_plan: Option<String>,
    /// `null` returns to the configured default.
    #[serde(default, deserialize_with = "crate::extract::nullable")]
    #[schema(nullable)]
    jitter: Option<Option<Jitter>>,
    tags: Option<Vec<String>>,
    /// `active` or `disabled` (other states are the network's doing).
    state: Option<NumberState>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NumberBody {
    id: Uuid,
    phone: String,
    kind: NumberKind,
    state: NumberState,
    label: Option<String>,
    daily_cap: i32,
    min_gap_ms: i32,
    /// The gap's random extra (the number's own, or the default).
    jitter: Jitter,
    time_zone: String,
    warmup_plan: String,
    /// Today's day index in the warm-up plan (0 = the first day).
    warmup_day: i64,
    tags: Vec<String>,
    /// The circuit breaker: `closed`, `slowed` or `open` (stopped).
    breaker: BreakerState,
    breaker_until: Option<DateTime<Utc>>,
    /// Profile name reported by WhatsApp when the number last connected.
    push_name: Option<String>,
    /// Whether a worker holds the number with its session connected now.
    connected: bool,
    last_connected_at: Option<DateTime<Utc>>,
    banned_until: Option<DateTime<Utc>>,
    timelocked_until: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    /// The latest pairing (only on `GET /v1/numbers/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pairing: Option<crate::routes::pairing::PairingBody>,
}

impl NumberBody {
    fn new(state: &AppState, number: SenderNumber, connected: &HashSet<Uuid>) -> Self {
        let zone = parse_zone(&number.time_zone).unwrap_or(chrono_tz::Tz::UTC);
        let today = Utc::now().with_timezone(&zone).date_naive();
        Self {
            id: number.id,
            connected: connected.contains(&number.id),
            phone: number.phone.to_string(),
            kind: number.kind,
            state: number.state,
            label: number.label,
            daily_cap: number.daily_cap,
            min_gap_ms: number.min_gap_ms,
            jitter: number
                .jitter
                .unwrap_or(state.config.pacing.default_jitter()),
            time_zone: number.time_zone,
            warmup_plan: number.warmup_plan,
            warmup_day: (today - number.warmup_started_on).num_days(),
            tags: number.tags,
            breaker: number.breaker,
            breaker_until: number.breaker_until,
            push_name: number.push_name,
            last_connected_at: number.last_connected_at,
            banned_until: number.banned_until,
            timelocked_until: number.timelocked_until,
            created_at: number.created_at,
            pairing: None,
        }
    }
}

/// Checks the settings shared by creation and update, collecting errors.
struct SettingsCheck<'a> {
    state: &'a AppState,
    errors: Vec<FieldError>,
}

impl SettingsCheck<'_> {
    fn daily_cap(&mut self, value: i32) {
        if !(0..=MAX_DAILY_CAP).contains(&value) {
            self.errors.push(FieldError::new(
                "/daily_cap",
                format!("must be between 0 and {MAX_DAILY_CAP}"),
            ));
        }
    }

    fn min_gap(&mut self, value: i32) {
        if !(0..=MAX_MIN_GAP_MS).contains(&value) {
            self.errors.push(FieldError::new(
                "/min_gap_ms",
                format!("must be between 0 and {MAX_MIN_GAP_MS} (one day)"),
            ));
        }
    }

    fn time_zone(&mut self, value: &str) {
        if let Err(err) = parse_zone(value) {
            self.errors.push(FieldError::new("/time_zone", err));
        }
    }

    fn warmup_plan(&mut self, value: &str) {
        let plans = &self.state.config.warmup.plans;
        if !plans.contains_key(value) {
            let known: Vec<&str> = plans.keys().map(String::as_str).collect();
            self.errors.push(FieldError::new(
                "/warmup_plan",
                format!("no plan {value:?}; configured plans: {}", known.join(", ")),
            ));
        }
    }

    fn jitter(&mut self, value: &Jitter) {
        if let Err(err) = value.validate() {
            self.errors.push(FieldError::new("/jitter", err));
        }
    }

    fn tags(&mut self, tags: &[String]) {
        if tags.len() > MAX_TAGS {
            self.errors
                .push(FieldError::new("/tags", format!("at most {MAX_TAGS} tags")));
        }
        for (i, tag) in tags.iter().enumerate() {
            if !valid_tag(tag) {
                self.errors.push(FieldError::new(
                    format!("/tags/{i}"),
                    "1 to 50 characters among a-z, 0-9, '-' and '_'",
                ));
            }
        }
    }

    fn label(&mut self, label: Option<&str>) {
        if label.is_some_and(|l| l.chars().count() > 100) {
            self.errors
                .push(FieldError::new("/label", "at most 100 characters"));
        }
    }
}

/// A pool tag: what campaigns name in `pool`.
pub fn valid_tag(tag: &str) -> bool {
    (1..=50).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn clean_label(label: Option<String>) -> Option<String> {
    label
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}

/// Registers a sending number.
#[utoipa::path(post, path = "/v1/numbers", tag = "numbers", request_body = CreateNumber,
    responses((status = 201, description = "The number", body = NumberBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiJson(body): ApiJson<CreateNumber>,
) -> ApiResult<impl IntoResponse> {
    let mut check = SettingsCheck {
        state: &state,
        errors: Vec::new(),
    };
    let phone = PhoneNumber::parse(&body.phone, None)
        .map_err(|err| {
            check
                .errors
                .push(FieldError::new("/phone", err.to_string()))
        })
        .ok();
    let daily_cap = body
        .daily_cap
        .unwrap_or(state.config.pacing.default_daily_cap);
    check.daily_cap(daily_cap);
    let min_gap_ms = body
        .min_gap_ms
        .unwrap_or(state.config.pacing.default_min_gap_ms);
    check.min_gap(min_gap_ms);
    if let Some(zone) = &body.time_zone {
        check.time_zone(zone);
    }
    let warmup_plan = body
        .warmup_plan
        .clone()
        .unwrap_or_else(|| state.config.warmup.default_plan.clone());
    check.warmup_plan(&warmup_plan);
    if let Some(jitter) = &body.jitter {
        check.jitter(jitter);
    }
    check.tags(&body.tags);
    let label = clean_label(body.label);
    check.label(label.as_deref());
    let errors = check.errors;
    let Some(phone) = phone.filter(|_| errors.is_empty()) else {
        return Err(ApiError::invalid(
            "the number cannot be added as given",
            errors,
        ));
    };
    let time_zone = body
        .time_zone
        .unwrap_or_else(|| home_zone(&phone).name().to_string());
    // A simulated number is usable at once (the simulator links it); a real
    // one must be paired first.
    let initial = match body.kind {
        NumberKind::Sim => NumberState::Active,
        NumberKind::Whatsapp => NumberState::NeedsPairing,
    };
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let inserted = db::sender_numbers::insert(
        &tx,
        &NewSenderNumber {
            tenant_id,
            phone: &phone,
            kind: body.kind,
            state: initial,
            label: label.as_deref(),
            daily_cap,
            min_gap_ms,
            time_zone: &time_zone,
            warmup_plan: &warmup_plan,
            jitter: body.jitter,
            tags: &body.tags,
        },
    )
    .await;
    match inserted {
        Ok(number) => {
            tx.commit().await.map_err(DbError::from)?;
            Ok((
                StatusCode::CREATED,
                Json(NumberBody::new(&state, number, &HashSet::new())),
            ))
        }
        Err(err) if err.is_unique_violation() => Err(ApiError::Conflict(format!(
            "the number {phone} is already registered"
        ))),
        Err(err) => Err(err.into()),
    }
}

/// Changes a number's settings; they apply to its next jobs.
#[utoipa::path(patch, path = "/v1/numbers/{id}", tag = "numbers", request_body = UpdateNumber,
    params(("id" = Uuid, Path, description = "Number id")),
    responses((status = 200, description = "The number", body = NumberBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    ApiJson(body): ApiJson<UpdateNumber>,
) -> ApiResult<Json<NumberBody>> {
    let id = id.or_not_found("number")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let current = db::sender_numbers::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("number"))?;
    let mut check = SettingsCheck {
        state: &state,
        errors: Vec::new(),
    };
    body.daily_cap.inspect(|v| check.daily_cap(*v));
    body.min_gap_ms.inspect(|v| check.min_gap(*v));
    if let Some(zone) = &body.time_zone {
        check.time_zone(zone);
    }
    if let Some(plan) = &body.warmup_plan {
        check.warmup_plan(plan);
    }
    if let Some(Some(jitter)) = &body.jitter {
        check.jitter(jitter);
    }
    if let Some(tags) = &body.tags {
        check.tags(tags);
    }
    let label = body.label.map(clean_label);
    if let Some(label) = &label {
        check.label(label.as_deref());
    }
    match body.state {
        None => {}
        Some(NumberState::Active | NumberState::Disabled)
            if matches!(current.state, NumberState::Active | NumberState::Disabled) => {}
        Some(NumberState::Active | NumberState::Disabled) => check.errors.push(FieldError::new(
            "/state",
            format!(
                "the number is {:?}: only the network changes that",
                current.state
            ),
        )),
        Some(_) => check.errors.push(FieldError::new(
            "/state",
            "only \"active\" or \"disabled\" can be set",
        )),
    }
    if !check.errors.is_empty() {
        return Err(ApiError::invalid(
            "the number cannot be changed as given",
            check.errors,
        ));
    }
    let updated = db::sender_numbers::update(
        &tx,
        tenant_id,
        id,
        &NumberChanges {
            label,
            daily_cap: body.daily_cap,
            min_gap_ms: body.min_gap_ms,
            time_zone: body.time_zone,
            warmup_plan: body.warmup_plan,
            jitter: body.jitter,
            tags: body.tags,
            state: body.state,
        },
    )
    .await?
    .ok_or_else(|| ApiError::not_found("number"))?;
    let connected = db::number_leases::connected_among(&tx, &[id]).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(NumberBody::new(&state, updated, &connected)))
}

/// The tenant's numbers, a page at a time.
#[utoipa::path(get, path = "/v1/numbers", tag = "numbers", params(Paging),
    responses((status = 200, description = "A page of numbers", body = Page<NumberBody>), ReadErrors),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<NumberBody>>> {
    let limit = paging.limit(&state)?;
    let after = paging.after_uuid()?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let numbers = db::sender_numbers::page(&tx, tenant_id, after, limit + 1).await?;
    let ids: Vec<Uuid> = numbers.iter().map(|n| n.id).collect();
    let connected = db::number_leases::connected_among(&tx, &ids).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(Page::new(
        numbers,
        limit,
        |n| n.id.to_string(),
        |n| NumberBody::new(&state, n, &connected),
    )))
}

/// One number, with its live connection state.
#[utoipa::path(get, path = "/v1/numbers/{id}", tag = "numbers",
    params(("id" = Uuid, Path, description = "Number id")),
    responses((status = 200, description = "The number", body = NumberBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<NumberBody>> {
    let id = id.or_not_found("number")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let number = db::sender_numbers::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("number"))?;
    let connected = db::number_leases::connected_among(&tx, &[id]).await?;
    let pairing = crate::routes::pairing::current(&tx, id).await?;
    tx.commit().await.map_err(DbError::from)?;
    let mut body = NumberBody::new(&state, number, &connected);
    body.pairing = pairing;
    Ok(Json(body))
}
