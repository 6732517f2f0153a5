//! The web console: a single page served at `/console`, its files built into
//! the binary (machines running Herald may have no internet, so nothing comes
//! from a CDN). It signs in with a tenant API key and uses the public API like
//! any other client; these routes themselves need no key.

use axum::{
    Router,
    http::header,
    response::{IntoResponse, Redirect},
    routing::get,
};

const INDEX: &str = include_str!("../console/index.html");
const APP: &str = include_str!("../console/app.js");
const STYLE: &str = include_str!("../console/style.css");

/// Only this origin's scripts, styles and API; QR codes arrive as data URLs;
/// never framed (clickjacking).
const POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                      base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP) }),
        )
        .route(
            "/console/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_offers_every_event_type_the_api_accepts() {
        let start = APP.find("const EVENT_TYPES = [").expect("the list");
        let end = start + APP[start..].find("];").expect("its end");
        let listed: Vec<&str> = APP[start..end].split('"').skip(1).step_by(2).collect();
        assert_eq!(listed, herald_shared::events::PUBLIC_TYPES);
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        for line in INDEX.lines().chain(APP.lines()).chain(STYLE.lines()) {
            assert!(
                !line.contains("http://") && !line.contains("https://")
                    || line.contains("example.com"),
                "an outside address in the console: {line}"
            );
        }
    }
}
