//! `/v1/lists`: named sets of contacts, filled one by one or from a CSV file.
//!
//! A CSV import streams: the body is parsed as it arrives and each row is
//! written to Postgres with `COPY` (valid and rejected rows alike, into a
//! temporary table), then merged into the contacts and the list in one
//! statement. Nothing holds the file in memory; the whole import is one
//! transaction, so a refused import (too large, bad header) changes nothing.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use axum::{
    Json,
    extract::{Request, State},
    http::{StatusCode, header},
    response::IntoResponse,
};
use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use herald_shared::{
    db::{
        self, DbError,
        imports::{Import, ImportStatus, Merged},
    },
    domain::{PhoneNumber, is_known_region},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, FieldError, ReadErrors, WriteErrors},
    extract::{ApiJson, ApiQuery, Page, Paging, PathId, Tenant},
    state::AppState,
};

/// Rejected rows returned with an import's report (the rest are paged at
/// `GET /v1/imports/{id}/rejections`).
const REPORTED_REJECTIONS: i64 = 100;
/// COPY data is sent in chunks of about this size.
const COPY_CHUNK: usize = 64 * 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateList {
    name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListBody {
    id: Uuid,
    name: String,
    /// Members now.
    size: i64,
    created_at: DateTime<Utc>,
}

impl From<db::lists::List> for ListBody {
    fn from(l: db::lists::List) -> Self {
        Self {
            id: l.id,
            name: l.name,
            size: l.size,
            created_at: l.created_at,
        }
    }
}

#[utoipa::path(post, path = "/v1/lists", tag = "lists", request_body = CreateList,
    responses((status = 201, description = "The list", body = ListBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiJson(request): ApiJson<CreateList>,
) -> ApiResult<impl IntoResponse> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::field("/name", "must have 1 to 200 characters"));
    }
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let list = db::lists::insert(&tx, tenant_id, name).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok((StatusCode::CREATED, Json(ListBody::from(list))))
}

#[utoipa::path(get, path = "/v1/lists", tag = "lists", params(Paging),
    responses((status = 200, description = "A page of lists", body = Page<ListBody>), ReadErrors),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<ListBody>>> {
    let limit = paging.limit(&state)?;
    let after = paging.after_uuid()?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let lists = db::lists::page(&tx, tenant_id, after, limit + 1).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(Page::new(
        lists,
        limit,
        |l| l.id.to_string(),
        ListBody::from,
    )))
}

#[utoipa::path(get, path = "/v1/lists/{id}", tag = "lists",
    params(("id" = Uuid, Path, description = "List id")),
    responses((status = 200, description = "The list", body = ListBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<ListBody>> {
    let id = id.or_not_found("list")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let list = db::lists::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("list"))?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(list.into()))
}

/// Deletes a list (its contacts stay). A list a campaign was built from
/// cannot be deleted (`409`).
#[utoipa::path(delete, path = "/v1/lists/{id}", tag = "lists",
    params(("id" = Uuid, Path, description = "List id")),
    responses((status = 204, description = "Deleted"), WriteErrors),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<StatusCode> {
    let id = id.or_not_found("list")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    match db::lists::delete(&tx, tenant_id, id).await {
        Ok(true) => {
            tx.commit().await.map_err(DbError::from)?;
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => Err(ApiError::not_found("list")),
        Err(err) if err.is_foreign_key_violation() => Err(ApiError::Conflict(
            "campaigns were built from this list; it cannot be deleted".into(),
        )),
        Err(err) => Err(err.into()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    contact_ids: Vec<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Added {
    /// Contacts that were not members yet.
    added: u64,
}

/// Adds existing contacts to a list.
#[utoipa::path(post, path = "/v1/lists/{id}/members", tag = "lists", request_body = AddMembers,
    params(("id" = Uuid, Path, description = "List id")),
    responses((status = 200, description = "Members added", body = Added), WriteErrors),
    security(("api_key" = [])))]
pub async fn add_members(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    ApiJson(request): ApiJson<AddMembers>,
) -> ApiResult<Json<Added>> {
    let id = id.or_not_found("list")?;
    if request.contact_ids.is_empty() || request.contact_ids.len() > 10_000 {
        return Err(ApiError::field("/contact_ids", "1 to 10000 contact ids"));
    }
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    db::lists::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("list"))?;
    let known = db::contacts::existing(&tx, tenant_id, &request.contact_ids).await?;
    let errors: Vec<FieldError> = request
        .contact_ids
        .iter()
        .enumerate()
        .filter(|(_, id)| !known.contains(id))
        .map(|(i, _)| FieldError::new(format!("/contact_ids/{i}"), "no contact with this id"))
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "some contacts do not exist; nothing was added",
            errors,
        ));
    }
    let added = db::lists::add_members(&tx, id, &request.contact_ids).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(Added { added }))
}

/// Removes a contact from a list (the contact stays).
#[utoipa::path(delete, path = "/v1/lists/{id}/members/{contact_id}", tag = "lists",
    params(("id" = Uuid, Path, description = "List id"), ("contact_id" = Uuid, Path, description = "Contact id")),
    responses((status = 204, description = "Removed"), WriteErrors),
    security(("api_key" = [])))]
pub async fn remove_member(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    axum::extract::Path((list_id, contact_id)): axum::extract::Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let not_found = || ApiError::NotFound("no such list member".into());
    let list_id = Uuid::parse_str(&list_id).map_err(|_| not_found())?;
    let contact_id = Uuid::parse_str(&contact_id).map_err(|_| not_found())?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    if !db::lists::remove_member(&tx, list_id, contact_id).await? {
        return Err(not_found());
    }
    tx.commit().await.map_err(DbError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// ISO 3166 region for phones written without `+country`.
    default_region: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rejection {
    /// Line in the file (the header is line 1).
    line: i64,
    reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReport {
    id: Uuid,
    list_id: Uuid,
    status: ImportStatus,
    /// Data rows read.
    rows: i64,
    /// Valid rows.
    accepted: i64,
    rejected: i64,
    /// Valid rows whose phone appeared earlier in the file (the last one wins).
    duplicates: i64,
    /// Contacts that existed before and were updated (attributes merged).
    merged: i64,
    error: Option<String>,
    /// The first rejected rows; all of them at `/v1/imports/{id}/rejections`.
    rejections: Vec<Rejection>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

fn report(import: Import, rejections: Vec<(i64, String)>) -> ImportReport {
    ImportReport {
        id: import.id,
        list_id: import.list_id,
        status: import.status,
        rows: import.rows,
        accepted: import.accepted,
        rejected: import.rejected,
        duplicates: import.duplicates,
        merged: import.merged,
        error: import.error,
        rejections: rejections
            .into_iter()
            .map(|(line, reason)| Rejection { line, reason })
            .collect(),
        started_at: import.started_at,
        finished_at: import.finished_at,
    }
}

/// One COPY text-format field.
fn put_field(buf: &mut BytesMut, value: Option<&str>) {
    let Some(value) = value else {
        buf.put_slice(b"\\N");
        return;
    };
    for byte in value.bytes() {
        match byte {
            b'\\' => buf.put_slice(b"\\\\"),
            b'\t' => buf.put_slice(b"\\t"),
            b'\n' => buf.put_slice(b"\\n"),
            b'\r' => buf.put_slice(b"\\r"),
            other => buf.put_u8(other),
        }
    }
}

fn put_row(
    buf: &mut BytesMut,
    line: u64,
    id: Option<Uuid>,
    phone: Option<&str>,
    name: Option<&str>,
    attributes: Option<&str>,
    reason: Option<&str>,
) {
    buf.put_slice(line.to_string().as_bytes());
    let id = id.map(|id| id.hyphenated().to_string());
    for field in [id.as_deref(), phone, name, attributes, reason] {
        buf.put_u8(b'\t');
        put_field(buf, field);
    }
    buf.put_u8(b'\n');
}

/// What the header says about the columns.
struct Columns {
    phone: usize,
    name: Option<usize>,
    /// (index, attribute name) of every other column.
    attributes: Vec<(usize, String)>,
}

fn columns(header: &csv_async::ByteRecord, max: usize) -> ApiResult<Columns> {
    let fail = |reason: String| {
        ApiError::invalid(
            "the CSV header cannot be used",
            vec![FieldError::new("line 1", reason)],
        )
    };
    if header.len() > max {
        return Err(fail(format!("{} columns; at most {max}", header.len())));
    }
    let mut names = Vec::with_capacity(header.len());
    for (i, raw) in header.iter().enumerate() {
        let name = std::str::from_utf8(raw)
            .map_err(|_| fail(format!("column {} is not UTF-8", i + 1)))?
            .trim()
            .trim_start_matches('\u{feff}')
            .to_string();
        if name.is_empty() {
            return Err(fail(format!("column {} has no name", i + 1)));
        }
        if names.contains(&name) {
            return Err(fail(format!("column {name:?} appears twice")));
        }
        names.push(name);
    }
    let position = |wanted: &str| names.iter().position(|n| n.eq_ignore_ascii_case(wanted));
    let phone = position("phone").ok_or_else(|| fail("no \"phone\" column".into()))?;
    let name = position("name");
    let attributes = names
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != phone && Some(*i) != name)
        .map(|(i, n)| (i, n.clone()))
        .collect();
    Ok(Columns {
        phone,
        name,
        attributes,
    })
}

/// Imports a CSV file into a list. The header row names the columns:
/// `phone` (required), `name`, and any others, which become the contacts'
/// attributes. Phones are normalised to E.164; rows that cannot be used are
/// rejected with their line and reason; a phone seen twice keeps its last
/// row; existing contacts are updated (attributes merged). Limits: file size
/// (413), rows (413), columns (422), field length (422): past them nothing is
/// imported.
#[utoipa::path(post, path = "/v1/lists/{id}/import", tag = "lists", params(("id" = Uuid, Path, description = "List id"), ImportQuery),
    request_body(content = String, content_type = "text/csv", description = "The CSV file, header first"),
    responses((status = 201, description = "The import's report", body = ImportReport), WriteErrors),
    security(("api_key" = [])))]
pub async fn import(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    ApiQuery(query): ApiQuery<ImportQuery>,
    request: Request,
) -> ApiResult<impl IntoResponse> {
    let list_id = id.or_not_found("list")?;
    let limits = &state.config.api;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(content_type.starts_with("text/csv") || content_type.starts_with("application/csv")) {
        return Err(ApiError::UnsupportedMediaType(
            "send the file as Content-Type: text/csv".into(),
        ));
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "CSV files may be at most {} bytes",
            limits.import_max_bytes
        ))
    };
    if declared.is_some_and(|n| n > limits.import_max_bytes) {
        return Err(too_large());
    }
    let region = query.default_region.filter(|r| !r.is_empty());
    if let Some(region) = &region
        && !is_known_region(region)
    {
        return Err(ApiError::field(
            "default_region",
            format!("unknown region {region:?}"),
        ));
    }

    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    db::lists::get(&tx, tenant_id, list_id)
        .await?
        .ok_or_else(|| ApiError::not_found("list"))?;
    // A million rows take longer than an API statement normally may.
    tx.batch_execute("SET LOCAL statement_timeout = '15min'")
        .await?;

    // The body, counted as it streams.
    let received = Arc::new(AtomicUsize::new(0));
    let over = Arc::new(AtomicBool::new(false));
    let max_bytes = limits.import_max_bytes;
    let body = {
        let (received, over) = (received.clone(), over.clone());
        request.into_body().into_data_stream().map(move |chunk| {
            let chunk = chunk.map_err(io::Error::other)?;
            if received.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len() > max_bytes {
                over.store(true, Ordering::Relaxed);
                return Err(io::Error::other("too large"));
            }
            Ok::<Bytes, io::Error>(chunk)
        })
    };
    let reader = tokio_util::io::StreamReader::new(body.into_stream());
    let mut csv = csv_async::AsyncReaderBuilder::new()
        .flexible(true)
        .create_reader(reader);
    let csv_error = |err: csv_async::Error| -> ApiError {
        if over.load(Ordering::Relaxed) {
            return too_large();
        }
        let line = err.position().map(|p| p.line()).unwrap_or(0);
        ApiError::invalid(
            "the file is not valid CSV",
            vec![FieldError::new(format!("line {line}"), err.to_string())],
        )
    };
    let header = csv.byte_headers().await.map_err(csv_error)?.clone();
    let columns = columns(&header, limits.import_max_columns)?;

    db::imports::create_staging(&tx).await?;
    let import_id = db::imports::start(&tx, tenant_id, list_id).await?;
    let copy = tx.prepare(db::imports::COPY_STAGING).await?;
    let sink = tx.copy_in::<_, Bytes>(&copy).await?;
    futures_util::pin_mut!(sink);
    let mut buf = BytesMut::with_capacity(COPY_CHUNK * 2);
    let mut record = csv_async::ByteRecord::new();
    let mut rows: u64 = 0;
    let mut attributes = Map::new();
    while csv.read_byte_record(&mut record).await.map_err(csv_error)? {
        rows += 1;
        if rows > limits.import_max_rows {
            return Err(ApiError::PayloadTooLarge(format!(
                "the file has more than {} rows",
                limits.import_max_rows
            )));
        }
        let line = record.position().map(|p| p.line()).unwrap_or(rows + 1);
        let max_chars = limits.import_max_field_chars;
        let too_long = |f: &[u8]| {
            f.len() > max_chars
                && std::str::from_utf8(f).map_or(true, |s| s.chars().count() > max_chars)
        };
        if let Some(long) = record.iter().position(too_long) {
            return Err(ApiError::invalid(
                "a field is too long; nothing was imported",
                vec![FieldError::new(
                    format!("line {line}"),
                    format!(
                        "column {} is longer than {} characters",
                        long + 1,
                        limits.import_max_field_chars
                    ),
                )],
            ));
        }
        let rejected = |buf: &mut BytesMut, reason: &str| {
            put_row(buf, line, None, None, None, None, Some(reason))
        };
        if record.len() != header.len() {
            rejected(
                &mut buf,
                &format!("{} fields; the header has {}", record.len(), header.len()),
            );
        } else {
            let text = |i: usize| std::str::from_utf8(&record[i]).ok().map(str::trim);
            match text(columns.phone).map(|p| PhoneNumber::parse(p, region.as_deref())) {
                None => rejected(&mut buf, "not UTF-8"),
                Some(Err(err)) => rejected(&mut buf, &err.to_string()),
                Some(Ok(phone)) => {
                    attributes.clear();
                    for (i, name) in &columns.attributes {
                        if let Some(value) = text(*i).filter(|v| !v.is_empty()) {
                            attributes.insert(name.clone(), Value::String(value.to_string()));
                        }
                    }
                    let name = columns.name.and_then(text).filter(|n| !n.is_empty());
                    let attributes = serde_json::to_string(&attributes).expect("maps serialise");
                    // Ids in creation order (UUIDv7): a new contact lands at
                    // the right edge of every index on ids, which halves
                    // the merge's time against random ids (docs/BENCHMARKS.md).
                    put_row(
                        &mut buf,
                        line,
                        Some(Uuid::now_v7()),
                        Some(phone.as_str()),
                        name,
                        Some(&attributes),
                        None,
                    );
                }
            }
        }
        if buf.len() >= COPY_CHUNK {
            sink.send(buf.split().freeze()).await?;
        }
    }
    if !buf.is_empty() {
        sink.send(buf.split().freeze()).await?;
    }
    sink.finish().await?;
    let merged: Merged = db::imports::merge_staging(&tx, tenant_id, list_id, import_id).await?;
    let import = db::imports::finish(&tx, import_id, rows as i64, &merged).await?;
    let first = db::imports::rejections(&tx, import_id, None, REPORTED_REJECTIONS).await?;
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(%import_id, rows, accepted = merged.accepted, rejected = merged.rejected, bytes = received.load(Ordering::Relaxed), "import finished");
    Ok((StatusCode::CREATED, Json(report(import, first))))
}

/// An import's report.
#[utoipa::path(get, path = "/v1/imports/{id}", tag = "lists",
    params(("id" = Uuid, Path, description = "Import id")),
    responses((status = 200, description = "The report", body = ImportReport), ReadErrors),
    security(("api_key" = [])))]
pub async fn get_import(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
) -> ApiResult<Json<ImportReport>> {
    let id = id.or_not_found("import")?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let import = db::imports::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("import"))?;
    let first = db::imports::rejections(&tx, id, None, REPORTED_REJECTIONS).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(report(import, first)))
}

/// Every rejected row of an import, by line.
#[utoipa::path(get, path = "/v1/imports/{id}/rejections", tag = "lists",
    params(("id" = Uuid, Path, description = "Import id"), Paging),
    responses((status = 200, description = "A page of rejected rows", body = Page<Rejection>), ReadErrors),
    security(("api_key" = [])))]
pub async fn rejections(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    id: PathId,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<Rejection>>> {
    let id = id.or_not_found("import")?;
    let limit = paging.limit(&state)?;
    let after = paging.after_i64()?;
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    db::imports::get(&tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("import"))?;
    let rows = db::imports::rejections(&tx, id, after, limit + 1).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(Page::new(
        rows,
        limit,
        |(line, _)| line.to_string(),
        |(line, reason)| Rejection { line, reason },
    )))
}
