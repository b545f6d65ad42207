//! Bearer-token authentication of `/v1/` routes. Every configured token is compared with the
//! presented one in constant time (`subtle`), all of them on every request, so timing reveals
//! neither which token nor how much of one matched (only the presented token's length).
//!
//! A token acts as a tenant: `gateway.tokens` as the default tenant, `tenants.<name>.tokens`
//! as `<name>`, rate-limited by that tenant's `rate_per_s` ([`crate::rate`]). The request
//! carries the [`Caller`] on to the handlers.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::{Choice, ConstantTimeEq as _};

use quayside_common::config::{Config, DEFAULT_LABEL};

use super::error::{ApiError, ErrorKind};
use super::metrics::{rejected, UNKNOWN_TENANT};
use super::rate::{retry_after_s, Gcra};
use super::Gateway;

/// Who made a request: the tenant its token acts as (`None`: the default tenant).
#[derive(Clone, Debug, Default)]
pub(crate) struct Caller {
    pub tenant: Option<String>,
}

/// One accepted token.
struct Token {
    secret: Vec<u8>,
    caller: Caller,
    limit: Option<Gcra>,
}

/// The tokens a gateway accepts; empty means every request is let through (an explicitly open
/// gateway: `gateway.allow_unauthenticated`).
#[derive(Default)]
pub(super) struct Tokens(Vec<Token>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// `gateway.tokens` (the default tenant, no rate limit) and every tenant's tokens.
    pub(super) fn from_config(cfg: &Config) -> Self {
        let mut tokens: Vec<Token> = cfg
            .gateway
            .tokens
            .iter()
            .map(|t| Token {
                secret: t.expose().as_bytes().to_vec(),
                caller: Caller::default(),
                limit: None,
            })
            .collect();
        for (name, tenant) in &cfg.tenants {
            for t in &tenant.tokens {
                tokens.push(Token {
                    secret: t.expose().as_bytes().to_vec(),
                    caller: Caller {
                        tenant: Some(name.clone()),
                    },
                    // Each token has its own limit: a tenant's tokens do not share one.
                    limit: (tenant.rate_per_s > 0)
                        .then(|| Gcra::new(tenant.rate_per_s, tenant.rate_burst)),
                });
            }
        }
        Self(tokens)
    }

    /// The token equal to `presented`. Every token is compared, in constant time; the config
    /// guarantees at most one matches.
    fn find(&self, presented: &[u8]) -> Option<&Token> {
        let mut found = None;
        for t in &self.0 {
            let eq: Choice = t.secret.as_slice().ct_eq(presented);
            if bool::from(eq) {
                found = Some(t);
            }
        }
        found
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

fn rate_limited(wait: std::time::Duration) -> Response {
    let secs = retry_after_s(wait);
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("this token's request rate is exceeded; retry in {secs} s"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// Lets a request through with a valid token within its rate, carrying its [`Caller`]; `401`
/// with `WWW-Authenticate: Bearer` for a missing or wrong token, `429` with `Retry-After` over
/// the rate. Every refusal for a quota, rate or right is counted by tenant
/// (`quayside_gateway_rejected_total`).
pub(super) async fn require(
    State(gw): State<Arc<Gateway>>,
    mut req: Request<Body>,
    next: Next,
) -> Response {
    if gw.tokens.0.is_empty() {
        req.extensions_mut().insert(Caller::default());
        return counted(&Caller::default(), next.run(req).await);
    }
    let token = bearer(&req).map(|t| gw.tokens.find(t));
    let response = match token {
        Some(Some(t)) => {
            if let Some(Err(wait)) = t.limit.as_ref().map(|l| l.check(Instant::now())) {
                return counted(&t.caller, rate_limited(wait));
            }
            req.extensions_mut().insert(t.caller.clone());
            return counted(&t.caller, next.run(req).await);
        }
        Some(None) => unauthorized(
            "invalid bearer token",
            r#"Bearer realm="quayside", error="invalid_token""#,
        ),
        None => unauthorized(
            "missing bearer token: send Authorization: Bearer <token>",
            r#"Bearer realm="quayside""#,
        ),
    };
    rejected(UNKNOWN_TENANT, "unauthorized");
    response
}

/// Counts `response` if it refuses `caller` for a quota, rate or right. A token's tenant is
/// always a configured one, so its name is a bounded label.
fn counted(caller: &Caller, response: Response) -> Response {
    if let Some(ErrorKind(kind)) = response.extensions().get::<ErrorKind>() {
        let tenant = caller.tenant.as_deref().unwrap_or(DEFAULT_LABEL);
        rejected(tenant, kind);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    use quayside_common::config::{Secret, TenantConfig};

    #[test]
    fn only_a_configured_token_is_accepted_and_names_its_tenant() {
        let mut cfg = Config::default();
        cfg.gateway.tokens = vec![
            Secret::new("first-token-0123456789"),
            Secret::new("second-token-0123456789"),
        ];
        let acme = TenantConfig {
            tokens: vec![Secret::new("acme-token-0123456789")],
            rate_per_s: 1,
            ..TenantConfig::default()
        };
        cfg.tenants.insert("acme".into(), acme);
        let t = Tokens::from_config(&cfg);
        let tenant = |p: &[u8]| t.find(p).map(|t| t.caller.tenant.clone());
        assert_eq!(tenant(b"first-token-0123456789"), Some(None));
        assert_eq!(tenant(b"second-token-0123456789"), Some(None));
        assert_eq!(tenant(b"acme-token-0123456789"), Some(Some("acme".into())));
        assert!(t
            .find(b"acme-token-0123456789")
            .is_some_and(|t| t.limit.is_some()));
        assert!(t
            .find(b"first-token-0123456789")
            .is_some_and(|t| t.limit.is_none()));
        for bad in [
            &b""[..],
            b"first-token-012345678",
            b"first-token-01234567890",
            b"x",
        ] {
            assert!(t.find(bad).is_none(), "{bad:?}");
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
