//! Who may call: the local socket's peers (the user, by file permissions), and TCP callers that
//! present the bearer token, name a loopback Host (no DNS rebinding) and are not a browser page on
//! another origin.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};

use super::{ApiError, Format, Listener};

pub async fn guard(State(state): State<super::State>, mut request: Request, next: Next) -> Response {
    let listener = request.extensions().get::<Listener>().copied().unwrap_or(Listener::Tcp);
    let format = Format::of(request.uri().path(), request.headers());
    let deny = |status: StatusCode, message: &str| ApiError::new(status, format, message).into_response();

    // Browsers: a CORS preflight or any request that carries an Origin is a page calling in.
    if request.method() == Method::OPTIONS {
        return deny(
            StatusCode::FORBIDDEN,
            "cross-origin requests are refused: tollgate serves local tools, not web pages",
        );
    }
    if request.headers().contains_key(http::header::ORIGIN) {
        return deny(
            StatusCode::FORBIDDEN,
            "requests from a browser origin are refused: tollgate serves local tools, not web pages",
        );
    }
    let presented = presented_token(request.headers()).map(str::to_string);
    let named = presented.as_deref().and_then(|p| state.callers.who(p));
    if listener == Listener::Tcp {
        if !host_is_loopback(request.headers()) {
            return deny(
                StatusCode::FORBIDDEN,
                "the Host header must name this machine (localhost, 127.0.0.1 or [::1])",
            );
        }
        let path = request.uri().path();
        if path.starts_with("/v1/admin/") {
            return deny(StatusCode::FORBIDDEN, "administrative endpoints are served on the local socket only");
        }
        let main = presented.as_deref().is_some_and(|p| constant_time_eq(p.as_bytes(), state.token.as_bytes()));
        if path != "/healthz" && !main && named.is_none() {
            return deny(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key: send the token from `tollgate token` as `Authorization: Bearer ...` (or `x-api-key`)",
            );
        }
    }
    // Who called: a named token's name; the main token's `default`; on the socket, `local`.
    let caller = match (named, listener) {
        (Some(name), _) => name,
        (None, Listener::Tcp) => crate::callers::DEFAULT.into(),
        (None, Listener::Local) => crate::callers::LOCAL.into(),
    };
    request.extensions_mut().insert(crate::callers::Caller(caller));
    next.run(request).await
}

/// Whether the Host header (required by HTTP/1.1) names a loopback address.
pub fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, port)) if port.is_empty() || port.starts_with(':') => inside,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The token a caller presents: `Authorization: Bearer ...` or `x-api-key` (as the Anthropic SDKs
/// send it).
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

#[cfg(test)]
fn token_matches(headers: &HeaderMap, token: &str) -> bool {
    presented_token(headers).is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(http::header::HOST, h.parse().unwrap());
        m
    }

    #[test]
    fn only_loopback_hosts_pass() {
        for ok in ["localhost", "localhost:8788", "127.0.0.1:1", "127.0.0.2", "[::1]:8788", "[::1]", "LOCALHOST"] {
            assert!(host_is_loopback(&host(ok)), "{ok}");
        }
        for bad in
            ["evil.example", "evil.example:8788", "localhost.evil.example", "10.0.0.1:8788", "[::1]x", "127.0.0.1:80x"]
        {
            assert!(!host_is_loopback(&host(bad)), "{bad}");
        }
        assert!(!host_is_loopback(&HeaderMap::new()));
    }

    #[test]
    fn the_token_is_accepted_as_bearer_or_x_api_key_only_when_equal() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer tg-abc".parse().unwrap());
        assert!(token_matches(&h, "tg-abc"));
        assert!(!token_matches(&h, "tg-abd"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "tg-abc".parse().unwrap());
        assert!(token_matches(&h, "tg-abc"));
        assert!(!token_matches(&HeaderMap::new(), "tg-abc"));
    }
}
