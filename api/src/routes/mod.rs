//! The HTTP routes, and the middleware every route shares (metrics by matched
//! path, a tracing span per request, rate limits, idempotency, problem+json
//! for unknown routes).

pub mod campaigns;
pub mod checks;
pub mod contacts;
pub mod events;
pub mod health;
pub mod inbound;
pub mod lists;
pub mod media;
pub mod messages;
pub mod numbers;
pub mod pairing;
pub mod settings;
pub mod suppressions;
pub mod templates;
pub mod webhooks;

use std::time::Instant;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use herald_shared::metrics as m;
use tracing::Instrument;

use crate::{error::ApiError, middleware as mw, openapi, state::AppState};

pub fn router(state: AppState) -> Router {
    let max_body = state.config.api.max_body_bytes;
    let media_max = state.config.api.media_max_bytes;
    let v1 = Router::new()
        .route("/v1/numbers", post(numbers::create).get(numbers::list))
        .route("/v1/numbers/{id}", get(numbers::get).patch(numbers::update))
        .route("/v1/numbers/{id}/pair", post(pairing::pair))
        .route("/v1/numbers/{id}/events", get(pairing::events))
        .route("/v1/numbers/{id}/session", delete(pairing::unlink))
        .route(
            "/v1/templates",
            post(templates::create).get(templates::list),
        )
        .route(
            "/v1/templates/{id}",
            get(templates::get)
                .patch(templates::update)
                .delete(templates::delete),
        )
        .route("/v1/templates/{id}/preview", post(templates::preview))
        .route(
            "/v1/media",
            post(media::upload).layer(DefaultBodyLimit::max(media_max)),
        )
        .route("/v1/media/{id}", get(media::get))
        .route("/v1/contacts", post(contacts::create).get(contacts::list))
        .route(
            "/v1/contacts/{id}",
            get(contacts::get)
                .patch(contacts::update)
                .delete(contacts::delete),
        )
        .route("/v1/contacts/check", post(checks::check))
        .route("/v1/contacts/checks/{id}", get(checks::get))
        .route("/v1/lists", post(lists::create).get(lists::list))
        .route("/v1/lists/{id}", get(lists::get).delete(lists::delete))
        .route("/v1/lists/{id}/members", post(lists::add_members))
        .route(
            "/v1/lists/{id}/members/{contact_id}",
            delete(lists::remove_member),
        )
        .route("/v1/lists/{id}/import", post(lists::import))
        .route("/v1/imports/{id}", get(lists::get_import))
        .route("/v1/imports/{id}/rejections", get(lists::rejections))
        .route(
            "/v1/suppressions",
            post(suppressions::create).get(suppressions::list),
        )
        .route(
            "/v1/suppressions/{phone}",
            get(suppressions::get).delete(suppressions::delete),
        )
        .route(
            "/v1/campaigns",
            post(campaigns::create).get(campaigns::list),
        )
        .route("/v1/campaigns/{id}", get(campaigns::get))
        .route("/v1/campaigns/{id}/start", post(campaigns::start))
        .route("/v1/campaigns/{id}/pause", post(campaigns::pause))
        .route("/v1/campaigns/{id}/resume", post(campaigns::resume))
        .route("/v1/campaigns/{id}/cancel", post(campaigns::cancel))
        .route("/v1/campaigns/{id}/plan", get(campaigns::plan))
        .route("/v1/campaigns/{id}/messages", get(messages::of_campaign))
        .route("/v1/messages", post(messages::send).get(messages::list))
        .route("/v1/messages/{id}", get(messages::get))
        .route("/v1/inbound", get(inbound::list))
        .route("/v1/inbound/{id}", get(inbound::get))
        .route("/v1/events", get(events::stream))
        .route("/v1/settings", get(settings::get).patch(settings::update))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route("/v1/webhooks/{id}/secret", get(webhooks::secret))
        .route(
            "/v1/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/v1/webhooks/{id}/replay", post(webhooks::replay_failed))
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route(
            "/v1/webhooks/{id}/deliveries/{delivery_id}",
            get(webhooks::delivery),
        )
        .route(
            "/v1/webhooks/{id}/deliveries/{delivery_id}/replay",
            post(webhooks::replay_one),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            mw::idempotency,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            mw::rate_limit,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi::document))
        .merge(crate::console::router())
        .merge(v1)
        .route_layer(middleware::from_fn(observe))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Counts and times each request under its route template (never the raw
/// path: it would carry ids), inside a span naming the route.
async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let span = tracing::info_span!("request", %method, %route);
    let started = Instant::now();
    let response = next.run(request).instrument(span).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(m::HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(m::HTTP_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn not_found() -> impl IntoResponse {
    ApiError::NotFound("no such route; see GET /openapi.json".into())
}

async fn method_not_allowed() -> impl IntoResponse {
    ApiError::MethodNotAllowed("this route does not accept that method".into())
}
