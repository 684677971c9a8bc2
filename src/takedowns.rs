//! Operators' stream takedowns as the HTTP side and the disk see them: the admin request
//! (`POST /admin/streams/{stream}/takedown` with the reason as the body, `DELETE` to lift) and the file that
//! keeps them across restarts. Nodes and control replicas both take the request; what a takedown does is
//! the relay core's ([`crate::relay`]) and the edge's.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::http::{refuse, Reply, Side};
use crate::id::StreamName;
use crate::relay::Takedown;
use crate::wire::{is_valid_reason, MAX_REASON};

/// What an operator asked: take `stream` down (`active`, with `reason`) or lift its takedown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub stream: StreamName,
    pub active: bool,
    pub reason: String,
}

/// Reads an admin request under `/admin/streams/`, `rest` being the path after that; a refusal is the reply.
pub async fn request(req: http::Request<Incoming>, rest: &str) -> Result<Request, Reply> {
    let Some(stream) = rest.strip_suffix("/takedown") else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            Side::Downstream,
            format!("no admin endpoint /admin/streams/{rest}"),
        ));
    };
    let stream = StreamName::new(stream)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, Side::Downstream, format!("bad stream name: {e}")))?;
    match req.method().clone() {
        Method::POST => {
            let body = http_body_util::Limited::new(req.into_body(), 4096)
                .collect()
                .await
                .map_err(|e| refuse(StatusCode::BAD_REQUEST, Side::Downstream, format!("body not read: {e}")))?
                .to_bytes();
            let reason = reason(&body).map_err(|e| refuse(StatusCode::BAD_REQUEST, Side::Downstream, e))?;
            Ok(Request { stream, active: true, reason })
        }
        Method::DELETE => Ok(Request { stream, active: false, reason: String::new() }),
        m => Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            Side::Downstream,
            format!("{m} is not served here; POST or DELETE"),
        )),
    }
}

/// A takedown's reason from its request body: plain text or `{"reason": "..."}`; empty gives a default.
pub fn reason(body: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the reason is not UTF-8".to_owned())?.trim();
    let reason = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(o)) => match o.get("reason") {
            Some(serde_json::Value::String(r)) => r.trim().to_owned(),
            _ => return Err("expected {\"reason\": \"...\"} or the reason as plain text".to_owned()),
        },
        _ => text.to_owned(),
    };
    let reason = if reason.is_empty() { "taken down by the operator".to_owned() } else { reason };
    if !is_valid_reason(&reason) {
        return Err(format!("the reason must be one line of at most {MAX_REASON} bytes without control characters"));
    }
    Ok(reason)
}

/// Reads the takedowns kept in `file` (none when it does not exist yet).
pub fn load(file: &Path) -> Result<BTreeMap<StreamName, Takedown>> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a takedowns file (JSON of stream -> takedown)", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading the takedowns file {}", file.display())),
    }
}

/// Writes the takedowns to `file` whole: a crash leaves the old file or the new one, never half of one.
pub fn save<'a>(file: &Path, takedowns: impl IntoIterator<Item = (&'a StreamName, &'a Takedown)>) -> Result<()> {
    let all: BTreeMap<&StreamName, &Takedown> = takedowns.into_iter().collect();
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&all)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("renaming {} to {}", tmp.display(), file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_come_as_text_or_json_and_must_be_one_line() {
        assert_eq!(reason(b"  court order 12\n"), Ok("court order 12".to_owned()));
        assert_eq!(reason(br#"{"reason": "rights holder"}"#), Ok("rights holder".to_owned()));
        assert_eq!(reason(b""), Ok("taken down by the operator".to_owned()));
        assert!(reason(b"two\nlines").is_err());
        assert!(reason(br#"{"why": 1}"#).is_err());
        assert!(reason(&[0xff]).is_err());
    }

    #[test]
    fn the_file_round_trips_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("takedowns.json");
        assert!(load(&file).unwrap().is_empty());
        let stream = StreamName::new("shop").unwrap();
        let t = Takedown { version: 7, active: true, reason: "policy".into() };
        save(&file, [(&stream, &t)]).unwrap();
        assert_eq!(load(&file).unwrap(), BTreeMap::from([(stream, t)]));
        std::fs::write(&file, "not json").unwrap();
        assert!(format!("{:#}", load(&file).unwrap_err()).contains("takedowns.json"));
    }
}
