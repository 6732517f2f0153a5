//! `/v1/settings`: the tenant's own settings (opt-out keywords and
//! confirmation).

use axum::{Json, extract::State};
use herald_shared::{
    db::{self, DbError, tenants::OptOutSettings},
    optout,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ApiResult, FieldError, ReadErrors, WriteErrors},
    extract::{ApiJson, Tenant},
    state::AppState,
};

/// Most opt-out keywords a tenant may set, and their longest length.
const MAX_KEYWORDS: usize = 100;
const MAX_KEYWORD_CHARS: usize = 50;

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsBody {
    /// Whole-message keywords that opt a sender out (compared ignoring case,
    /// accents, surrounding spaces and punctuation).
    opt_out_keywords: Vec<String>,
    /// Whether those are Herald's configured defaults (the tenant set none).
    opt_out_keywords_default: bool,
    /// Sent to whoever opts out, from the number they wrote to (none: no
    /// confirmation).
    opt_out_reply: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettings {
    /// The tenant's own keywords; `null`: back to the defaults.
    #[serde(default, deserialize_with = "crate::extract::nullable")]
    #[schema(nullable)]
    opt_out_keywords: Option<Option<Vec<String>>>,
    /// `null`: no confirmation.
    #[serde(default, deserialize_with = "crate::extract::nullable")]
    #[schema(nullable)]
    opt_out_reply: Option<Option<String>>,
}

fn body(state: &AppState, settings: OptOutSettings) -> SettingsBody {
    SettingsBody {
        opt_out_keywords_default: settings.keywords.is_none(),
        opt_out_keywords: settings
            .keywords
            .unwrap_or_else(|| state.config.inbound.opt_out_keywords.clone()),
        opt_out_reply: settings.reply,
    }
}

#[utoipa::path(get, path = "/v1/settings", tag = "settings",
    responses((status = 200, description = "The tenant's settings", body = SettingsBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
) -> ApiResult<Json<SettingsBody>> {
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let settings = db::tenants::opt_out_settings(&tx, tenant_id).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(body(&state, settings)))
}

#[utoipa::path(patch, path = "/v1/settings", tag = "settings", request_body = UpdateSettings,
    responses((status = 200, description = "The tenant's settings", body = SettingsBody), WriteErrors),
    security(("api_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiJson(request): ApiJson<UpdateSettings>,
) -> ApiResult<Json<SettingsBody>> {
    let mut errors = Vec::new();
    if let Some(Some(keywords)) = &request.opt_out_keywords {
        if keywords.is_empty() || keywords.len() > MAX_KEYWORDS {
            errors.push(FieldError::new(
                "/opt_out_keywords",
                format!("1 to {MAX_KEYWORDS} keywords (null: the defaults)"),
            ));
        }
        for (i, keyword) in keywords.iter().enumerate() {
            if optout::normalize(keyword).is_empty() || keyword.chars().count() > MAX_KEYWORD_CHARS
            {
                errors.push(FieldError::new(
                    format!("/opt_out_keywords/{i}"),
                    format!("a word or phrase of at most {MAX_KEYWORD_CHARS} characters"),
                ));
            }
        }
    }
    if let Some(Some(reply)) = &request.opt_out_reply {
        let cap = state.config.api.max_body_chars;
        if reply.trim().is_empty() || reply.chars().count() > cap {
            errors.push(FieldError::new(
                "/opt_out_reply",
                format!("1 to {cap} characters (null: no confirmation)"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "the settings cannot be changed as given",
            errors,
        ));
    }
    let mut client = state.tenant_client().await?;
    let tx = db::tenant_tx(&mut client, tenant_id).await?;
    let mut settings = db::tenants::opt_out_settings(&tx, tenant_id).await?;
    if let Some(keywords) = request.opt_out_keywords {
        settings.keywords = keywords;
    }
    if let Some(reply) = request.opt_out_reply {
        settings.reply = reply;
    }
    db::tenants::set_opt_out_settings(&tx, tenant_id, &settings).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(body(&state, settings)))
}
