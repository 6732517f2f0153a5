//! The OpenAPI 3.1 description of the API, generated from the handlers'
//! annotations and served at `GET /openapi.json`.

use std::sync::OnceLock;

use axum::{http::header, response::IntoResponse};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::{
    error::{FieldError, Problem},
    routes::{
        campaigns, checks, contacts, events, health, inbound, lists, media, messages, numbers,
        pairing, settings, suppressions, templates, webhooks,
    },
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "WhatsApp campaign engine. Every request under /v1 needs `Authorization: Bearer <key>`. \
                       Errors are application/problem+json (RFC 9457). POST requests accept an `Idempotency-Key` header.",
    ),
    paths(
        health::healthz, health::readyz,
        numbers::create, numbers::list, numbers::get, numbers::update,
        pairing::pair, pairing::events, pairing::unlink,
        templates::create, templates::list, templates::get, templates::update, templates::delete, templates::preview,
        media::upload, media::get,
        contacts::create, contacts::list, contacts::get, contacts::update, contacts::delete,
        checks::check, checks::get,
        lists::create, lists::list, lists::get, lists::delete, lists::add_members, lists::remove_member,
        lists::import, lists::get_import, lists::rejections,
        suppressions::create, suppressions::list, suppressions::get, suppressions::delete,
        campaigns::create, campaigns::list, campaigns::get, campaigns::start, campaigns::pause,
        campaigns::resume, campaigns::cancel, campaigns::plan,
        messages::send, messages::list, messages::get, messages::of_campaign,
        inbound::list, inbound::get,
        events::stream,
        settings::get, settings::update,
        webhooks::create, webhooks::list, webhooks::get, webhooks::update, webhooks::delete,
        webhooks::secret, webhooks::rotate_secret, webhooks::replay_failed,
        webhooks::deliveries, webhooks::delivery, webhooks::replay_one,
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerAuth, &OperationIds),
)]
pub struct ApiDoc;

/// Operation ids from method and path (`get_contacts_checks_id`): unique by
/// construction, where the handlers' names (`list`, `get`) repeat across
/// resources.
struct OperationIds;

impl Modify for OperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let name: Vec<&str> = path
                .split('/')
                .filter(|s| !s.is_empty() && *s != "v1")
                .map(|s| s.trim_matches(|c| c == '{' || c == '}'))
                .collect();
            let operations = [
                ("get", item.get.as_mut()),
                ("post", item.post.as_mut()),
                ("patch", item.patch.as_mut()),
                ("put", item.put.as_mut()),
                ("delete", item.delete.as_mut()),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation {
                    operation.operation_id = Some(format!("{method}_{}", name.join("_")));
                }
            }
        }
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "api_key",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "A tenant API key (hk_…), created with `herald-api tenants create`",
                        ))
                        .build(),
                ),
            );
        }
    }
}

/// `GET /openapi.json`.
pub async fn document() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the document serialises")
    });
    ([(header::CONTENT_TYPE, "application/json")], body.as_str())
}
