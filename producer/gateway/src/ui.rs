//! The dashboard: a read-only web UI served at `/`, plain HTML/CSS/JS embedded in the binary (no
//! CDN, no build step: it works on an air-gapped fleet). The files hold no data and no secret;
//! the page asks for a token and reads everything through `/v1/` like any client. Every answer
//! carries a strict Content-Security-Policy: scripts, styles and requests only from the gateway
//! itself, no inline script or style, no framing.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Only the gateway's own files and API; nothing inline, nothing from elsewhere, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The embedded files: name under `/ui/`, content type, content.
pub const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../ui/app.css"),
    ),
];

/// `GET /`: the dashboard's page.
pub(super) async fn index() -> Response {
    file("index.html")
}

/// `GET /ui/{file}`: one of [`FILES`]; anything else is `404`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    file(&name)
}

fn file(name: &str) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::not_found("no such dashboard file").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing in the files names another origin: no `http(s)://` or protocol-relative URL, no
    /// inline script or style the policy would block anyway.
    #[test]
    fn files_load_nothing_from_outside_the_gateway() {
        for (name, _, body) in FILES {
            let lower = body.to_ascii_lowercase();
            for needle in ["http://", "https://", "\"//", "'//", "(//", "`//", "url("] {
                assert!(!lower.contains(needle), "{name} contains {needle}");
            }
            assert!(!lower.contains("innerhtml"), "{name} writes HTML");
            assert!(!lower.contains("eval("), "{name} evaluates code");
        }
        let html = FILES[0].2.to_ascii_lowercase();
        assert!(!html.contains("<style"), "inline style");
        assert!(!html.contains(" style="), "inline style attribute");
        assert!(!html.contains("<script>"), "inline script");
        let handler = html.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].trim_start().starts_with('=')
        });
        assert!(!handler, "inline event handler");
    }
}
