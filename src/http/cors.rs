//! Cross-origin access for browser players: a page on one site (an hls.js player) fetches playlists and
//! segments from an edge on another, and the browser hands the reply to the page only if it says so.
//!
//! Every reply carries `Access-Control-Allow-Origin: *`, refusals included: without it a browser shows the
//! page a status of 0 instead of the 404 or 503 the edge sent, and a player cannot tell a missing segment
//! from a network failure. `Access-Control-Expose-Headers` lets the page read the headers players use
//! (`Content-Range` for ranges, `ETag` and `Age` for caching, `Retry-After` on a 503). A preflight
//! (`OPTIONS` before a request with `Range` or `If-None-Match`) is answered with [`preflight`]. The content
//! is public and no credentials are involved, so `*` is enough and nothing varies by origin.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::Reply;

/// The methods a viewer may use across origins.
const METHODS: &str = "GET, HEAD, OPTIONS";
/// The request headers a player sends beyond the CORS-safelisted ones.
const REQUEST_HEADERS: &str = "Range, If-None-Match, If-Modified-Since, If-Range, Cache-Control";
/// The reply headers a page may read beyond the CORS-safelisted ones.
const EXPOSED_HEADERS: &str =
    "Accept-Ranges, Age, Content-Length, Content-Range, Date, ETag, Last-Modified, Retry-After";
/// How long a browser may reuse a preflight's answer, in seconds (Chromium caps it at 7200).
const MAX_AGE_S: &str = "7200";

/// Adds the headers every reply carries.
pub fn allow(reply: &mut Reply) {
    let headers = reply.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
}

/// The answer to a preflight `OPTIONS`: 204, with what a viewer may send and for how long that holds.
pub fn preflight() -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::NO_CONTENT;
    let headers = reply.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(REQUEST_HEADERS));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_S));
    headers.insert(header::ALLOW, HeaderValue::from_static(METHODS));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preflight_allows_what_players_send() {
        let reply = preflight();
        assert_eq!(reply.status(), StatusCode::NO_CONTENT);
        let h = reply.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, HEAD, OPTIONS");
        let allowed = h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().to_ascii_lowercase();
        for wanted in ["range", "if-none-match", "if-modified-since"] {
            assert!(allowed.contains(wanted), "{allowed}");
        }
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "7200");
    }

    #[test]
    fn every_reply_may_be_read_by_a_page() {
        let mut reply = crate::http::text(StatusCode::NOT_FOUND, "no stream s");
        allow(&mut reply);
        assert_eq!(reply.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let exposed = reply.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap();
        for wanted in ["ETag", "Content-Range", "Age", "Retry-After"] {
            assert!(exposed.contains(wanted), "{exposed}");
        }
    }
}
