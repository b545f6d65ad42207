//! Bearer-token authentication of `/v1/` routes. Every configured token is compared with the
//! presented one in constant time (`subtle`), all of them on every request, so timing reveals
//! neither which token nor how much of one matched (only the presented token's length).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::{Choice, ConstantTimeEq as _};

use super::error::ApiError;
use super::Gateway;

/// The tokens a gateway accepts; empty means every request is let through (an explicitly open
/// gateway: `gateway.allow_unauthenticated`).
#[derive(Clone, Default)]
pub(super) struct Tokens(Vec<Vec<u8>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    pub(super) fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        Self(tokens.into_iter().map(|t| t.as_bytes().to_vec()).collect())
    }

    fn accepts(&self, presented: &[u8]) -> bool {
        let mut ok = Choice::from(0);
        for t in &self.0 {
            ok |= t.as_slice().ct_eq(presented);
        }
        ok.into()
    }
}

/// The `token` of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(req: &Request<Body>) -> Option<&[u8]> {
    let value = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

fn unauthorized(message: &'static str, challenge: &'static str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

/// Lets a request through with a valid token; `401` with `WWW-Authenticate: Bearer` otherwise.
pub(super) async fn require(
    State(gw): State<Arc<Gateway>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    if gw.tokens.0.is_empty() {
        return next.run(req).await;
    }
    match bearer(&req) {
        Some(t) if gw.tokens.accepts(t) => next.run(req).await,
        Some(_) => unauthorized(
            "invalid bearer token",
            r#"Bearer realm="quayside", error="invalid_token""#,
        ),
        None => unauthorized(
            "missing bearer token: send Authorization: Bearer <token>",
            r#"Bearer realm="quayside""#,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_configured_token_is_accepted() {
        let t = Tokens::new(["first-token-0123456789", "second-token-0123456789"]);
        assert!(t.accepts(b"first-token-0123456789"));
        assert!(t.accepts(b"second-token-0123456789"));
        for bad in [
            &b""[..],
            b"first-token-012345678",
            b"first-token-01234567890",
            b"x",
        ] {
            assert!(!t.accepts(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_required() {
        let req = |v: &str| {
            Request::builder()
                .header(header::AUTHORIZATION, v)
                .body(Body::empty())
                .expect("request")
        };
        assert_eq!(bearer(&req("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&req("bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&req("Basic abc")), None);
        assert_eq!(bearer(&req("Bearer ")), None);
    }
}
