//! Signed viewer URLs: which requests may see a stream, and how a playlist hands its viewer's credential on
//! to the segments it lists. Pure: the time is an argument, nothing here reads a clock or a socket.
//!
//! Two kinds of credential are read from a request's query:
//! - **`token=KID.EXPIRES.SCOPE.MAC`**, lightpath's own: `KID` names a key of `edge.tokens.keys` (several
//!   may be live at once, so keys rotate without cutting viewers off), `EXPIRES` is a Unix time in seconds,
//!   `SCOPE` the base64url (no padding) of a path prefix, and `MAC` the lowercase hex HMAC-SHA256, with the
//!   key, of the text before the last dot (`KID.EXPIRES.SCOPE`). A scope that names a playlist
//!   (`/live/s/index.m3u8`) covers its whole stream folder, so a playlist's token covers its segments and
//!   parts; any other scope is a plain prefix (`/live/s/` covers the stream, `/live/` every stream).
//! - **`auth_key=TIMESTAMP-RAND-UID-MD5`**, Alibaba Cloud CDN's type A: `MD5` is the lowercase hex MD5 of
//!   `PATH-TIMESTAMP-RAND-UID-KEY` with `edge.tokens.alibaba_key`, and the URL is good until `TIMESTAMP`
//!   plus `edge.tokens.alibaba_ttl_s`. A publisher that signs URLs for Alibaba Cloud keeps its code.
//!
//! [`Gate::admit`] decides by the stream's policy (`edge.tokens.policy`, per stream in
//! `edge.tokens.streams`): an open stream needs nothing (a credential it carries is still passed on); a
//! stream that requires one is refused with a [`TokenError`] that names the reason (403, and the log line
//! says which). A playlist served to an admitted viewer has the credential written into every URI it lists
//! ([`Credential::carry`]), so players that drop a playlist URL's query on relative URIs still present it:
//! a `token` is appended as it is, an `auth_key` is made afresh for each URI's own path with the same
//! timestamp, rand and uid (type A signs one exact path).

use std::collections::BTreeMap;

use base64::Engine as _;

/// Why a request's credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The stream requires a credential and the request has none.
    #[error("stream {0} requires a token (token= or auth_key=)")]
    Missing(String),
    /// The credential is not of the form its kind has.
    #[error("malformed {kind}: {why}")]
    Malformed {
        /// `token` or `auth_key`.
        kind: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The token names a key id this edge does not have (retired, or never issued).
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// The signature does not match: tampered with, or signed with another key.
    #[error("bad signature")]
    BadSignature,
    /// The credential's time has passed.
    #[error("expired at {expired} (now {now})")]
    Expired {
        /// When it expired, Unix seconds.
        expired: u64,
        /// Now, Unix seconds.
        now: u64,
    },
    /// The token is good, but for other paths.
    #[error("path {path} is outside the token's scope {scope}")]
    OutOfScope {
        /// The path asked for.
        path: String,
        /// What the token covers.
        scope: String,
    },
    /// `auth_key` was sent but this edge has no `alibaba_key`.
    #[error("auth_key is not accepted here (no edge.tokens.alibaba_key)")]
    AlibabaOff,
}

/// What a stream needs from a viewer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Anyone may watch (the default).
    #[default]
    Open,
    /// A valid `token` or `auth_key` is required.
    Token,
}

/// A request's accepted credential, to be carried into the playlists it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A `token=` value, carried as it is.
    Token(String),
    /// An Alibaba type A `auth_key`'s parts, re-signed for each URI.
    Alibaba { timestamp: u64, rand: String, uid: String },
}

/// The edge's keys and policies.
#[derive(Clone, Default)]
pub struct Gate {
    keys: BTreeMap<String, ring::hmac::Key>,
    alibaba: Option<(String, u64)>,
    policy: Policy,
    streams: BTreeMap<String, Policy>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("Gate")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("alibaba", &self.alibaba.is_some())
            .field("policy", &self.policy)
            .field("streams", &self.streams)
            .finish()
    }
}

impl Gate {
    /// From key ids and secrets, the Alibaba key and validity (`None`: `auth_key` refused), the default
    /// policy and per-stream policies.
    pub fn new<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
        alibaba: Option<(&str, u64)>,
        policy: Policy,
        streams: BTreeMap<String, Policy>,
    ) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|(kid, secret)| (kid.to_owned(), ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes())))
                .collect(),
            alibaba: alibaba.map(|(k, ttl)| (k.to_owned(), ttl)),
            policy,
            streams,
        }
    }

    /// The policy of `stream`.
    pub fn policy(&self, stream: &str) -> Policy {
        self.streams.get(stream).copied().unwrap_or(self.policy)
    }

    /// Whether a request for `path` (of `stream`) with `query` may be served at `now` (Unix seconds), and the
    /// credential its playlists carry on. An open stream admits any request, a bad credential included (it
    /// is then not carried on).
    pub fn admit(
        &self,
        stream: &str,
        path: &str,
        query: Option<&str>,
        now: u64,
    ) -> Result<Option<Credential>, TokenError> {
        let (token, auth_key) = credentials(query.unwrap_or(""));
        let checked = match (token, auth_key) {
            (Some(t), _) => Some(self.check_token(&t, path, now).map(|()| Credential::Token(t))),
            (None, Some(a)) => Some(self.check_alibaba(&a, path, now)),
            (None, None) => None,
        };
        match (self.policy(stream), checked) {
            (Policy::Token, None) => Err(TokenError::Missing(stream.to_owned())),
            (Policy::Token, Some(result)) => result.map(Some),
            (Policy::Open, checked) => Ok(checked.and_then(Result::ok)),
        }
    }

    /// Checks a `token=` value for `path` at `now`.
    pub fn check_token(&self, token: &str, path: &str, now: u64) -> Result<(), TokenError> {
        let malformed = |why| TokenError::Malformed { kind: "token", why };
        let (signed, mac) = token.rsplit_once('.').ok_or(malformed("expected KID.EXPIRES.SCOPE.MAC"))?;
        let mut parts = signed.splitn(3, '.');
        let (Some(kid), Some(expires), Some(scope)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("expected KID.EXPIRES.SCOPE.MAC"));
        };
        let expires: u64 = expires.parse().map_err(|_| malformed("EXPIRES is not a Unix time"))?;
        let mac = hex_decode(mac).ok_or(malformed("MAC is not 64 hex digits"))?;
        let key = self.keys.get(kid).ok_or_else(|| TokenError::UnknownKey(kid.to_owned()))?;
        ring::hmac::verify(key, signed.as_bytes(), &mac).map_err(|_| TokenError::BadSignature)?;
        if now > expires {
            return Err(TokenError::Expired { expired: expires, now });
        }
        let scope = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(scope)
            .ok()
            .and_then(|s| String::from_utf8(s).ok())
            .ok_or(malformed("SCOPE is not base64url text"))?;
        if !covers(&scope, path) {
            return Err(TokenError::OutOfScope { path: path.to_owned(), scope });
        }
        Ok(())
    }

    fn check_alibaba(&self, auth_key: &str, path: &str, now: u64) -> Result<Credential, TokenError> {
        let (key, ttl) = self.alibaba.as_ref().ok_or(TokenError::AlibabaOff)?;
        let malformed = |why| TokenError::Malformed { kind: "auth_key", why };
        let parts: Vec<&str> = auth_key.split('-').collect();
        let [timestamp, rand, uid, hash] = parts[..] else {
            return Err(malformed("expected TIMESTAMP-RAND-UID-MD5HASH"));
        };
        let timestamp: u64 = timestamp.parse().map_err(|_| malformed("TIMESTAMP is not a Unix time"))?;
        let expected = alibaba_hash(path, timestamp, rand, uid, key);
        if !crate::http::same_secret(&expected, &hash.to_ascii_lowercase()) {
            return Err(TokenError::BadSignature);
        }
        let expired = timestamp.saturating_add(*ttl);
        if now > expired {
            return Err(TokenError::Expired { expired, now });
        }
        Ok(Credential::Alibaba { timestamp, rand: rand.to_owned(), uid: uid.to_owned() })
    }

    /// The query parameter that carries `credential` to `path` (a URI a playlist lists, made absolute).
    fn parameter(&self, credential: &Credential, path: &str) -> Option<String> {
        match credential {
            Credential::Token(t) => Some(format!("token={t}")),
            Credential::Alibaba { timestamp, rand, uid } => {
                let (key, _) = self.alibaba.as_ref()?;
                Some(format!("auth_key={timestamp}-{rand}-{uid}-{}", alibaba_hash(path, *timestamp, rand, uid, key)))
            }
        }
    }

    /// `playlist` (served at `playlist_path`) with `credential` added to the query of every URI it lists
    /// that stays on this edge (relative, or absolute under `/`): URI lines and `URI="..."` attributes.
    pub fn carry(&self, credential: &Credential, playlist: &str, playlist_path: &str) -> String {
        let folder = &playlist_path[..playlist_path.rfind('/').map_or(0, |i| i + 1)];
        let with = |uri: &str| -> String {
            if uri.contains("://") || uri.starts_with("data:") || uri.contains("token=") || uri.contains("auth_key=") {
                return uri.to_owned();
            }
            let (bare, query) = uri.split_once('?').map_or((uri, None), |(b, q)| (b, Some(q)));
            let path = if bare.starts_with('/') { bare.to_owned() } else { format!("{folder}{bare}") };
            match (self.parameter(credential, &path), query) {
                (Some(p), Some(q)) => format!("{bare}?{q}&{p}"),
                (Some(p), None) => format!("{bare}?{p}"),
                (None, _) => uri.to_owned(),
            }
        };
        let mut out = String::with_capacity(playlist.len() + 64 * playlist.lines().count());
        for line in playlist.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() {
                out.push_str(line);
            } else if !trimmed.starts_with('#') {
                out.push_str(&with(trimmed));
            } else {
                // Every URI="..." attribute of a tag (map, part, preload hint, rendition report, key, media).
                let mut rest = line;
                while let Some(at) = rest.find("URI=\"") {
                    let start = at + 5;
                    let Some(len) = rest[start..].find('"') else { break };
                    out.push_str(&rest[..start]);
                    out.push_str(&with(&rest[start..start + len]));
                    rest = &rest[start + len..];
                }
                out.push_str(rest);
            }
            out.push('\n');
        }
        out
    }
}

/// Whether a token scope covers `path`: a playlist's scope covers its folder, any other scope is a prefix.
fn covers(scope: &str, path: &str) -> bool {
    let prefix = if scope.ends_with(".m3u8") { &scope[..scope.rfind('/').map_or(0, |i| i + 1)] } else { scope };
    !prefix.is_empty() && path.starts_with(prefix)
}

/// The `token` and `auth_key` parameters of a query (the first of each), percent-decoded.
fn credentials(query: &str) -> (Option<String>, Option<String>) {
    let mut token = None;
    let mut auth_key = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "token" => &mut token,
            "auth_key" => &mut auth_key,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned());
        }
    }
    (token, auth_key)
}

/// Alibaba type A's hash: lowercase hex MD5 of `PATH-TIMESTAMP-RAND-UID-KEY`.
fn alibaba_hash(path: &str, timestamp: u64, rand: &str, uid: &str, key: &str) -> String {
    use md5::Digest as _;
    let digest = md5::Md5::digest(format!("{path}-{timestamp}-{rand}-{uid}-{key}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
}

/// Signs a token for key `kid` with `secret`: good for paths under `scope` until `expires` (Unix s). What
/// an operator's signing service does; the format is in the module doc.
pub fn sign(kid: &str, secret: &str, expires: u64, scope: &str) -> String {
    let scope = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(scope);
    let signed = format!("{kid}.{expires}.{scope}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mac = ring::hmac::sign(&key, signed.as_bytes());
    let hex: String = mac.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{signed}.{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn gate() -> Gate {
        Gate::new(
            [("k1", "first-secret-0123456789"), ("k2", "second-secret-0123456789")],
            Some(("alibaba-key", 1800)),
            Policy::Open,
            BTreeMap::from([("paid".to_owned(), Policy::Token)]),
        )
    }

    #[test]
    fn a_playlists_token_covers_its_segments_and_nothing_else() {
        let g = gate();
        let t = sign("k1", "first-secret-0123456789", NOW + 60, "/live/paid/index.m3u8");
        let q = format!("token={t}");
        for path in ["/live/paid/index.m3u8", "/live/paid/seg7.ts", "/live/paid/part7.0.m4s"] {
            assert_eq!(g.admit("paid", path, Some(&q), NOW), Ok(Some(Credential::Token(t.clone()))), "{path}");
        }
        assert!(matches!(g.admit("paid", "/live/other/seg7.ts", Some(&q), NOW), Err(TokenError::OutOfScope { .. })));
        assert!(matches!(g.admit("paid", "/live/paid/seg7.ts", Some(&q), NOW + 61), Err(TokenError::Expired { .. })));
        assert_eq!(g.admit("paid", "/live/paid/seg7.ts", None, NOW), Err(TokenError::Missing("paid".into())));
        // Rotation: k2 is as good as k1; an unknown id, a tampered scope or a wrong key are not.
        let t2 = sign("k2", "second-secret-0123456789", NOW + 60, "/live/paid/");
        assert!(g.admit("paid", "/live/paid/seg7.ts", Some(&format!("token={t2}")), NOW).is_ok());
        let t3 = sign("k3", "second-secret-0123456789", NOW + 60, "/live/paid/");
        assert_eq!(
            g.admit("paid", "/live/paid/a.ts", Some(&format!("token={t3}")), NOW),
            Err(TokenError::UnknownKey("k3".into()))
        );
        let wrong = sign("k1", "second-secret-0123456789", NOW + 60, "/live/paid/");
        assert_eq!(g.check_token(&wrong, "/live/paid/a.ts", NOW), Err(TokenError::BadSignature));
        // A scope widened by hand keeps the old MAC, which no longer matches.
        let (signed, mac) = t.rsplit_once('.').unwrap();
        let (head, _) = signed.rsplit_once('.').unwrap();
        let wider = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("/live/");
        let forged = format!("{head}.{wider}.{mac}");
        assert_eq!(g.check_token(&forged, "/live/x/a.ts", NOW), Err(TokenError::BadSignature));
        // An open stream needs nothing.
        assert_eq!(g.admit("free", "/live/free/a.ts", None, NOW), Ok(None));
    }

    #[test]
    fn alibaba_type_a_signs_each_path() {
        let g = gate();
        // md5("/live/paid/index.m3u8-1800000000-0-0-alibaba-key"), as Alibaba's documentation computes it.
        let hash = alibaba_hash("/live/paid/index.m3u8", NOW, "0", "0", "alibaba-key");
        let q = format!("auth_key={NOW}-0-0-{hash}");
        let credential = g.admit("paid", "/live/paid/index.m3u8", Some(&q), NOW + 10).unwrap().unwrap();
        assert_eq!(g.admit("paid", "/live/paid/seg1.ts", Some(&q), NOW), Err(TokenError::BadSignature));
        assert!(matches!(
            g.admit("paid", "/live/paid/index.m3u8", Some(&q), NOW + 1801),
            Err(TokenError::Expired { .. })
        ));
        let playlist =
            "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\nseg1.ts\n/live/paid/seg2.ts?x=1\nhttps://cdn.example/x.ts\n";
        let carried = g.carry(&credential, playlist, "/live/paid/index.m3u8");
        let seg1 =
            format!("seg1.ts?auth_key={NOW}-0-0-{}", alibaba_hash("/live/paid/seg1.ts", NOW, "0", "0", "alibaba-key"));
        assert!(carried.contains(&seg1), "{carried}");
        let init = alibaba_hash("/live/paid/init.mp4", NOW, "0", "0", "alibaba-key");
        assert!(carried.contains(&format!("URI=\"init.mp4?auth_key={NOW}-0-0-{init}\"")), "{carried}");
        assert!(carried.contains("/live/paid/seg2.ts?x=1&auth_key="), "{carried}");
        assert!(carried.contains("https://cdn.example/x.ts\n"), "{carried}");
        for line in carried.lines().filter(|l| l.ends_with(".ts") || l.contains(".ts?")) {
            if let Some((path, query)) = line.split_once('?') {
                let path = if path.starts_with('/') { path.to_owned() } else { format!("/live/paid/{path}") };
                assert!(g.admit("paid", &path, Some(query), NOW).is_ok(), "{line}");
            }
        }
    }

    #[test]
    fn a_token_is_carried_into_every_uri() {
        let g = gate();
        let c = Credential::Token("k1.1.x.y".into());
        let playlist = "#EXTM3U\n#EXT-X-PART:DURATION=0.5,URI=\"p1.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.m4s\"\nseg1.m4s\n";
        let carried = g.carry(&c, playlist, "/live/s/index.m3u8");
        assert_eq!(
            carried,
            "#EXTM3U\n#EXT-X-PART:DURATION=0.5,URI=\"p1.m4s?token=k1.1.x.y\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.m4s?token=k1.1.x.y\"\nseg1.m4s?token=k1.1.x.y\n"
        );
    }

    proptest::proptest! {
        /// Any query reads without a panic; a token that passes was signed by a configured key for a scope
        /// that covers the path.
        #[test]
        fn any_query_is_judged_without_panic(query in "\\PC{0,120}", path in "/live/[a-z]{1,3}/[a-z0-9.]{1,8}") {
            let g = gate();
            let _ = g.admit("paid", &path, Some(&query), NOW);
            let _ = g.admit("free", &path, Some(&query), NOW);
        }

        /// A signed token passes, and changing any one character of it makes it fail.
        #[test]
        fn one_changed_character_breaks_a_token(at in 0usize..200, to in proptest::char::range('0', 'z')) {
            let g = gate();
            let t = sign("k1", "first-secret-0123456789", NOW + 60, "/live/paid/");
            proptest::prop_assert!(g.check_token(&t, "/live/paid/a.ts", NOW).is_ok());
            let at = at % t.len();
            let mut changed: Vec<char> = t.chars().collect();
            proptest::prop_assume!(changed[at] != to && !(changed[at].is_ascii_hexdigit() && to.is_ascii_hexdigit() && changed[at].eq_ignore_ascii_case(&to)));
            changed[at] = to;
            let changed: String = changed.into_iter().collect();
            proptest::prop_assert!(g.check_token(&changed, "/live/paid/a.ts", NOW).is_err(), "{changed} passed");
        }
    }
}
