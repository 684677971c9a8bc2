//! Building a viewer's reply from a cached object: the headers players and downstream caches rely on, and
//! the parts of HTTP that pick what to send of it (conditional requests, byte ranges).
//!
//! [`serve`] makes the whole reply: content type, `Cache-Control`, `Age` (from when the origin received the
//! object), a strong `ETag` derived from the body's bytes (so every edge, and every hop a segment took,
//! gives the same validator for the same bytes, and a restarted publisher's new `index0.m4s` a different
//! one), `Last-Modified` (the origin's receive time) and `Accept-Ranges: bytes`. [`select`] then answers the
//! request's preconditions and range from that reply: `If-None-Match` / `If-Modified-Since` that still hold
//! give 304, one satisfiable range 206 with `Content-Range`, an unsatisfiable one 416. A range of a sealed
//! body is a slice of the same mapping, so it still leaves with `sendfile` when it is large enough
//! ([`crate::http::sendfile`]); shorter ones are copied, as short bodies are.
//!
//! Segment names are not trusted forever: a publisher that restarts may upload a new `index0.m4s`, so a
//! segment's `max-age` is the edge's `segment_max_age_s` (about the live window), not a day; a cache that
//! revalidates after it gets a 304 when the bytes are the same.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use crate::cache::Object;
use crate::clock::unix_ms;
use crate::hls::media::{is_playlist, known_content_type};
use crate::http::range::{range, RangeRequest};
use crate::http::{refuse, Reply, Side};

/// How long a cache may keep a playlist: it changes with every segment.
const PLAYLIST_MAX_AGE: &str = "public, max-age=1";

/// The whole body of a reply that [`select`] may cut or replace. It travels in the reply's extensions
/// (never sent), so that a HEAD reply, whose body is empty, still knows the length a range is taken from.
#[derive(Clone)]
struct Whole(Bytes);

/// The reply to a `GET` or `HEAD` of `obj`, whole. Segments may be cached for `segment_max_age`.
pub fn serve(method: &Method, obj: &Object, segment_max_age: Duration) -> Reply {
    let h = &obj.header;
    let body = if method == Method::HEAD { Bytes::new() } else { obj.body.clone() };
    let mut resp = Response::new(Full::new(body));
    let headers = resp.headers_mut();
    // The usual types without a copy; anything else (from another origin's version) validated.
    let content_type = match known_content_type(&h.content_type) {
        Some(t) => Ok(HeaderValue::from_static(t)),
        None => HeaderValue::from_str(&h.content_type),
    };
    if let Ok(v) = content_type {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let cache_control = if is_playlist(&h.name) {
        HeaderValue::from_static(PLAYLIST_MAX_AGE)
    } else {
        segment_cache_control(segment_max_age)
    };
    headers.insert(header::CACHE_CONTROL, cache_control);
    let age = unix_ms().saturating_sub(h.born_unix_ms) / 1000;
    headers.insert(header::AGE, HeaderValue::from(age));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(obj.body.len()));
    headers.insert(header::ETAG, etag(obj));
    headers.insert(header::LAST_MODIFIED, last_modified(h.born_unix_ms));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp.extensions_mut().insert(Whole(obj.body.clone()));
    resp
}

/// A whole playlist reply ([`serve`]) with its text passed through `rewrite` (a viewer's credential written
/// into its URIs, [`crate::edge::token::Gate::carry`]): the new length, no `ETag` (the body is this
/// viewer's own), and `Cache-Control: private` so no shared cache hands it to another viewer. Any other
/// reply passes unchanged.
pub fn rewrite_playlist(method: &Method, mut reply: Reply, rewrite: impl FnOnce(&str) -> String) -> Reply {
    let Some(Whole(body)) = reply.extensions().get::<Whole>().cloned() else {
        return reply;
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return reply;
    };
    let rewritten = Bytes::from(rewrite(text));
    let headers = reply.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
    headers.remove(header::ETAG);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=1"));
    reply.extensions_mut().insert(Whole(rewritten.clone()));
    if method != Method::HEAD {
        *reply.body_mut() = Full::new(rewritten);
    }
    reply
}

fn segment_cache_control(max_age: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs())).expect("digits are a valid header")
}

/// The object's strong validator: its content hash, quoted.
fn etag(obj: &Object) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{:016x}\"", obj.content_hash())).expect("hex digits are a valid header")
}

/// `Last-Modified` of an object the origin received at `born_unix_ms`. The objects asked for at any moment
/// (the live edge's segments, parts and playlist versions) mostly share their second, so each thread keeps
/// the last one it wrote: ten thousand woken requests for one playlist format its date once.
fn last_modified(born_unix_ms: u64) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    let secs = born_unix_ms / 1000;
    LAST.with_borrow_mut(|last| match last {
        Some((at, value)) if *at == secs => value.clone(),
        _ => {
            let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            let value = HeaderValue::from_str(&date).expect("an HTTP date is a valid header");
            *last = Some((secs, value.clone()));
            value
        }
    })
}

/// Why a range could not be served, for the viewer and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("range {range:?} not satisfiable: the object has {len} bytes")]
pub struct RangeNotSatisfiable {
    /// The `Range` header as sent.
    pub range: String,
    /// The object's length.
    pub len: u64,
}

/// Answers a request's preconditions and range from the whole reply [`serve`] made; any other reply
/// (a refusal) passes unchanged. `If-None-Match` is checked before `If-Modified-Since`, which is then
/// ignored, and both before `Range` (RFC 9110, section 13.2.2); `If-Range` that does not match the
/// object's validator turns a range request into a whole one.
pub fn select(method: &Method, request: &HeaderMap, mut reply: Reply) -> Reply {
    let Some(Whole(body)) = reply.extensions_mut().remove::<Whole>() else {
        return reply;
    };
    if reply.status() != StatusCode::OK {
        return reply;
    }
    let etag = reply.headers().get(header::ETAG).cloned();
    let last_modified = reply.headers().get(header::LAST_MODIFIED).cloned();
    if not_modified(request, etag.as_ref(), last_modified.as_ref()) {
        return not_modified_reply(reply);
    }
    if method != Method::GET {
        return reply;
    }
    let Some(asked) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return reply;
    };
    if let Some(if_range) = request.get(header::IF_RANGE) {
        let same_etag = etag.as_ref().is_some_and(|e| strong_match(if_range.as_bytes(), e.as_bytes()));
        let same_date = last_modified.as_ref().is_some_and(|d| d == if_range);
        if !same_etag && !same_date {
            return reply;
        }
    }
    let len = body.len() as u64;
    match range(asked, len) {
        RangeRequest::Whole => reply,
        RangeRequest::Part(part) => {
            let (first, last) = (*part.start(), *part.end());
            let (parts, _) = reply.into_parts();
            let mut partial = Response::from_parts(parts, Full::new(body.slice(first as usize..=last as usize)));
            *partial.status_mut() = StatusCode::PARTIAL_CONTENT;
            let headers = partial.headers_mut();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(last - first + 1));
            let content_range = format!("bytes {first}-{last}/{len}");
            headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&content_range).expect("digits"));
            partial
        }
        RangeRequest::Unsatisfiable => {
            let cause = RangeNotSatisfiable { range: asked.to_owned(), len };
            let mut refused = refuse(StatusCode::RANGE_NOT_SATISFIABLE, Side::Downstream, cause);
            let headers = refused.headers_mut();
            let content_range = format!("bytes */{len}");
            headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&content_range).expect("digits"));
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            refused
        }
    }
}

/// Whether the viewer's copy is still good: its `If-None-Match` lists the object's tag (weak comparison,
/// `*` for any), or, without `If-None-Match`, the object is no newer than its `If-Modified-Since`.
fn not_modified(request: &HeaderMap, etag: Option<&HeaderValue>, last_modified: Option<&HeaderValue>) -> bool {
    if let Some(if_none_match) = request.get(header::IF_NONE_MATCH) {
        let Some(etag) = etag else { return false };
        let ours = weak(etag.as_bytes());
        return if_none_match
            .to_str()
            .is_ok_and(|list| list.split(',').map(str::trim).any(|t| t == "*" || weak(t.as_bytes()) == ours));
    }
    let since = request.get(header::IF_MODIFIED_SINCE).and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok());
    let modified = last_modified.and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok());
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// An entity tag without its weakness prefix.
fn weak(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

/// Strong comparison: both tags strong and equal.
fn strong_match(a: &[u8], b: &[u8]) -> bool {
    !a.starts_with(b"W/") && a == b
}

/// 304: the validators and caching headers of the whole reply, no body.
fn not_modified_reply(whole: Reply) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::NOT_MODIFIED;
    for name in [header::ETAG, header::LAST_MODIFIED, header::CACHE_CONTROL, header::AGE] {
        if let Some(v) = whole.headers().get(&name) {
            reply.headers_mut().insert(name, v.clone());
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::cache::sealed::{self, SealedSlice, MIN_SEALED_BYTES};
    use crate::id::{ObjectName, StreamName};
    use crate::wire::ObjectHeader;

    const BORN: u64 = 1_700_000_000_123;

    fn object(name: &str, body: Bytes) -> Object {
        let header = ObjectHeader {
            stream: StreamName::new("s").unwrap(),
            name: ObjectName::new(name).unwrap(),
            version: 1,
            seq: 1,
            content_type: "video/mp2t".into(),
            duration_ms: 0,
            born_unix_ms: BORN,
            len: body.len() as u64,
        };
        Object::new(header, body)
    }

    fn segment() -> Object {
        object("seg7.ts", Bytes::from((0..1000u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>()))
    }

    fn request(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap())).collect()
    }

    fn body(reply: Reply) -> Bytes {
        futures_util::FutureExt::now_or_never(reply.into_body().collect()).unwrap().unwrap().to_bytes()
    }

    fn get(obj: &Object, headers: &[(header::HeaderName, &str)]) -> Reply {
        select(&Method::GET, &request(headers), serve(&Method::GET, obj, Duration::from_secs(30)))
    }

    #[test]
    fn a_whole_reply_carries_validators_and_a_bounded_max_age() {
        let obj = segment();
        let reply = get(&obj, &[]);
        assert_eq!(reply.status(), StatusCode::OK);
        let h = reply.headers();
        assert_eq!(h[header::CACHE_CONTROL], "public, max-age=30");
        assert_eq!(h[header::ACCEPT_RANGES], "bytes");
        assert_eq!(h[header::LAST_MODIFIED], "Tue, 14 Nov 2023 22:13:20 GMT");
        let tag = h[header::ETAG].to_str().unwrap().to_owned();
        assert!(tag.len() == 18 && tag.starts_with('"') && tag.ends_with('"'), "{tag}");
        assert_eq!(body(reply), obj.body);
        // The same bytes give the same tag wherever they come from; other bytes another.
        assert_eq!(get(&segment(), &[]).headers()[header::ETAG], tag.as_str());
        let other = object("seg7.ts", Bytes::from_static(b"another session's seg7"));
        assert_ne!(get(&other, &[]).headers()[header::ETAG], tag.as_str());
        let playlist = object("index.m3u8", Bytes::from_static(b"#EXTM3U\n"));
        assert_eq!(get(&playlist, &[]).headers()[header::CACHE_CONTROL], "public, max-age=1");
    }

    #[test]
    fn last_modified_is_each_objects_own_second() {
        // The same second twice, another, and the first again: the thread's memo never answers for another.
        for (born, date) in [
            (BORN, "Tue, 14 Nov 2023 22:13:20 GMT"),
            (BORN + 500, "Tue, 14 Nov 2023 22:13:20 GMT"),
            (BORN + 1000, "Tue, 14 Nov 2023 22:13:21 GMT"),
            (BORN, "Tue, 14 Nov 2023 22:13:20 GMT"),
        ] {
            assert_eq!(last_modified(born), date);
        }
    }

    #[test]
    fn a_matching_validator_gives_304_without_a_body() {
        let obj = segment();
        let tag = get(&obj, &[]).headers()[header::ETAG].to_str().unwrap().to_owned();
        for matching in [tag.clone(), format!("W/{tag}"), format!("\"x\", {tag}"), "*".into()] {
            let reply = get(&obj, &[(header::IF_NONE_MATCH, &matching)]);
            assert_eq!(reply.status(), StatusCode::NOT_MODIFIED, "{matching}");
            assert_eq!(reply.headers()[header::ETAG], tag.as_str());
            assert!(reply.headers().get(header::CONTENT_LENGTH).is_none());
            assert!(body(reply).is_empty());
        }
        assert_eq!(get(&obj, &[(header::IF_NONE_MATCH, "\"0000\"")]).status(), StatusCode::OK);
        let at_birth = "Tue, 14 Nov 2023 22:13:20 GMT";
        assert_eq!(get(&obj, &[(header::IF_MODIFIED_SINCE, at_birth)]).status(), StatusCode::NOT_MODIFIED);
        let before = "Tue, 14 Nov 2023 22:13:19 GMT";
        assert_eq!(get(&obj, &[(header::IF_MODIFIED_SINCE, before)]).status(), StatusCode::OK);
        // If-None-Match decides alone when present.
        let both = [(header::IF_NONE_MATCH, "\"0000\""), (header::IF_MODIFIED_SINCE, at_birth)];
        assert_eq!(get(&obj, &both).status(), StatusCode::OK);
        let head = select(
            &Method::HEAD,
            &request(&[(header::IF_NONE_MATCH, &tag)]),
            serve(&Method::HEAD, &obj, Duration::from_secs(30)),
        );
        assert_eq!(head.status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn one_range_gives_206_with_its_bytes() {
        let obj = segment();
        for (asked, first, last) in [("bytes=10-19", 10, 19), ("bytes=990-", 990, 999), ("bytes=-5", 995, 999)] {
            let reply = get(&obj, &[(header::RANGE, asked)]);
            assert_eq!(reply.status(), StatusCode::PARTIAL_CONTENT, "{asked}");
            let h = reply.headers();
            assert_eq!(h[header::CONTENT_RANGE], format!("bytes {first}-{last}/1000").as_str());
            assert_eq!(h[header::CONTENT_LENGTH], (last - first + 1).to_string().as_str());
            assert!(h.contains_key(header::ETAG));
            assert_eq!(body(reply), obj.body.slice(first..=last));
        }
        // Several ranges, or a range with an If-Range of other bytes: the whole body.
        assert_eq!(get(&obj, &[(header::RANGE, "bytes=0-1,5-6")]).status(), StatusCode::OK);
        let stale = [(header::RANGE, "bytes=0-1"), (header::IF_RANGE, "\"0000000000000000\"")];
        assert_eq!(get(&obj, &stale).status(), StatusCode::OK);
        let tag = get(&obj, &[]).headers()[header::ETAG].to_str().unwrap().to_owned();
        let fresh = [(header::RANGE, "bytes=0-1"), (header::IF_RANGE, tag.as_str())];
        assert_eq!(get(&obj, &fresh).status(), StatusCode::PARTIAL_CONTENT);
        // HEAD ignores Range.
        let head = select(
            &Method::HEAD,
            &request(&[(header::RANGE, "bytes=0-1")]),
            serve(&Method::HEAD, &obj, Duration::from_secs(30)),
        );
        assert_eq!(head.status(), StatusCode::OK);
    }

    #[test]
    fn a_range_past_the_end_gives_416_with_the_length() {
        let reply = get(&segment(), &[(header::RANGE, "bytes=1000-")]);
        assert_eq!(reply.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(reply.headers()[header::CONTENT_RANGE], "bytes */1000");
        assert!(reply.extensions().get::<crate::http::Refusal>().is_some(), "the log says why");
    }

    #[test]
    fn a_range_of_a_sealed_body_is_still_sent_from_its_file() {
        let data = sealed::tests::pattern(MIN_SEALED_BYTES * 4);
        let obj = object("seg8.ts", sealed::seal(&data, usize::MAX).unwrap());
        let first = MIN_SEALED_BYTES as u64;
        let reply = get(&obj, &[(header::RANGE, &format!("bytes={first}-"))]);
        assert_eq!(reply.status(), StatusCode::PARTIAL_CONTENT);
        let sent = body(reply);
        assert_eq!(&sent[..], &data[first as usize..]);
        let slice = SealedSlice::find(&sent).expect("the range lies in the sealed mapping");
        assert_eq!((slice.offset(), slice.len()), (first, data.len() - first as usize));
    }

    #[test]
    fn refusals_pass_unchanged() {
        let refused = crate::edge::EdgeError::NoViewers.into_reply();
        let reply = select(&Method::GET, &request(&[(header::RANGE, "bytes=0-1")]), refused);
        assert_eq!(reply.status(), StatusCode::NOT_FOUND);
    }
}
