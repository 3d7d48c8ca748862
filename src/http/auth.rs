//! What our HTTP listeners check before they answer: the token (compared in constant time, by
//! its digest, so neither its bytes nor its length leak through timing), the Host header on a
//! listener without one (DNS rebinding), and the peer's address the server put on the request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// An access token, kept only as its SHA-256.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(hidden)")
    }
}

fn digest(text: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Token {
    /// The token `text` (its first line, as read from a token file).
    pub fn new(text: &str) -> Token {
        Token(digest(text))
    }

    /// Whether `candidate` (trimmed) is the token.
    pub fn matches(&self, candidate: &str) -> bool {
        bool::from(digest(candidate.trim()).ct_eq(&self.0))
    }

    /// The digest in hex: what a login cookie carries instead of the token.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `value` is [`Token::hex`].
    pub fn matches_hex(&self, value: &str) -> bool {
        bool::from(value.as_bytes().ct_eq(self.hex().as_bytes()))
    }
}

/// The token of an `Authorization: Bearer` header, if the request has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Whether the Host header names this machine (an IP address or `localhost`): without a token,
/// that is what keeps a page from another site out (DNS rebinding).
pub fn local_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

/// The peer's address, as [`super::serve`] put it on the request (unspecified if absent).
pub fn peer(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// `429 Too Many Requests` for a peer locked out for `wait` more.
pub fn locked_out(wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many wrong tokens from your address: try again in {secs} s\n"),
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    #[test]
    fn only_local_host_names_pass_without_a_token() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "192.168.1.20:8080",
        ] {
            assert!(local_host(&host(ok)), "{ok}");
        }
        for bad in ["evil.example:8080", "127.0.0.1.nip.io:8080", "pi.local"] {
            assert!(!local_host(&host(bad)), "{bad}");
        }
        assert!(!local_host(&HeaderMap::new()), "no Host header");
    }

    #[test]
    fn a_token_matches_itself_trimmed_and_nothing_else() {
        let t = Token::new("correct-horse-battery-staple-42");
        assert!(t.matches("correct-horse-battery-staple-42\n"));
        assert!(!t.matches("correct-horse-battery-staple-4"));
        assert!(t.matches_hex(&t.hex()));
        assert!(!format!("{t:?}").contains("horse"));
    }
}
