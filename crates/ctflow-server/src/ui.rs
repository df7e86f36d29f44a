//! The web dashboard: one page and its scripts, compiled into the binary so it works
//! offline. The page talks to the same REST APIs as the clients do.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");
// uPlot 1.6.32 (MIT, ui/vendor/uplot-LICENSE), the charting library.
const UPLOT_JS: &str = include_str!("../ui/vendor/uplot-1.6.32.min.js");
const UPLOT_CSS: &str = include_str!("../ui/vendor/uplot-1.6.32.min.css");

/// Scripts only from this server; styles may be set inline (uPlot sizes its canvas so);
/// artifacts previewed in sandboxed frames come from this server too.
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-src 'self'; object-src 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The files change with the binary; revalidating is cheap on loopback.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX);
    if let Ok(value) = header::HeaderValue::from_str(CSP) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

pub async fn uplot_js() -> Response {
    asset("text/javascript; charset=utf-8", UPLOT_JS)
}

pub async fn uplot_css() -> Response {
    asset("text/css; charset=utf-8", UPLOT_CSS)
}
