//! HTTP plumbing for the Docker Engine API: bodies, JSON and error replies in Docker's
//! shape (`{"message": ...}`), query strings, and the multiplexed stream framing.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use std::collections::HashMap;
use std::io;
use tokio::sync::mpsc;

/// A response body.
pub type Body = BoxBody<Bytes, io::Error>;
/// A response.
pub type Resp = Response<Body>;

/// An API error: an HTTP status and Docker's one-line message.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// 400.
    pub fn bad(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: m.into(),
        }
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: m.into(),
        }
    }
    /// 409.
    pub fn conflict(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            message: m.into(),
        }
    }
    /// 500.
    pub fn internal(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: m.into(),
        }
    }
    /// 501: a Docker feature berth has not built.
    pub fn not_implemented(what: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_IMPLEMENTED,
            message: format!("not implemented: {what} is not supported by berthd yet"),
        }
    }
    /// The reply.
    pub fn into_resp(self) -> Resp {
        json(self.status, &serde_json::json!({ "message": self.message }))
    }
}

impl From<berth_image::ImageError> for ApiError {
    fn from(e: berth_image::ImageError) -> ApiError {
        use berth_image::ImageError as E;
        match &e {
            E::NotFound(_) => ApiError::not_found(e.to_string()),
            E::Conflict(_) => ApiError::conflict(e.to_string()),
            E::Reference(_) => ApiError::bad(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

/// A full body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// An empty reply.
pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// A JSON reply.
pub fn json(status: StatusCode, v: &impl serde::Serialize) -> Resp {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "Content-Type",
        "application/json".parse().expect("static header"),
    );
    r
}

/// A streamed body fed through a channel.
pub fn channel_body() -> (mpsc::UnboundedSender<Bytes>, Body) {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, io::Error>(Frame::data(b)), rx))
    });
    (tx, StreamBody::new(stream).boxed())
}

/// A streamed reply with a content type.
pub fn streamed(content_type: &str, body: Body) -> Resp {
    let mut r = Response::new(body);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert("Content-Type", v);
    }
    r
}

/// One frame of Docker's multiplexed stream: [stream, 0, 0, 0, len (BE u32)] then data.
/// Stream 0 is stdin, 1 stdout, 2 stderr.
pub fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(8 + data.len());
    v.extend_from_slice(&[stream, 0, 0, 0]);
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    Bytes::from(v)
}

/// Decodes %XX and '+' in a query component.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed query string (repeated keys keep every value).
#[derive(Debug, Default)]
pub struct Query(HashMap<String, Vec<String>>);

impl Query {
    /// Parses `a=1&b=2`.
    pub fn parse(q: Option<&str>) -> Query {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for part in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            m.entry(percent_decode(k))
                .or_default()
                .push(percent_decode(v));
        }
        Query(m)
    }
    /// The first value.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|v| v.first()).map(String::as_str)
    }
    /// Every value.
    pub fn all(&self, k: &str) -> Vec<String> {
        self.0.get(k).cloned().unwrap_or_default()
    }
    /// A boolean flag as Docker reads them: 1/true/True; absent is `default`.
    pub fn flag(&self, k: &str, default: bool) -> bool {
        match self.get(k) {
            None => default,
            Some(v) => matches!(v, "1" | "true" | "True" | "yes"),
        }
    }
    /// An integer, with a 400 naming the parameter when malformed.
    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad(format!("invalid value for {k}: {v:?} is not an integer"))
            }),
        }
    }
}

/// One filter's values as Docker sends them: `["v"]`, or the older `{"v": true}`.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum FilterValues {
    List(Vec<String>),
    Set(HashMap<String, bool>),
}

impl Query {
    /// Docker's `filters` parameter, by key; a key not in `known` is refused by name.
    pub fn filters(
        &self,
        what: &str,
        known: &[&str],
    ) -> Result<HashMap<String, Vec<String>>, ApiError> {
        let raw: HashMap<String, FilterValues> = match self.get("filters") {
            Some(f) if !f.is_empty() => serde_json::from_str(f)
                .map_err(|e| ApiError::bad(format!("invalid filters: {e}")))?,
            _ => HashMap::new(),
        };
        if let Some(k) = raw.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ApiError::not_implemented(&format!(
                "the {k:?} filter of {what}"
            )));
        }
        Ok(raw
            .into_iter()
            .map(|(k, v)| {
                let vals = match v {
                    FilterValues::List(l) => l,
                    FilterValues::Set(m) => m.into_keys().collect(),
                };
                (k, vals)
            })
            .collect())
    }
}

/// Decodes standard or URL-safe base64 (with or without padding).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_like_go() {
        let q = Query::parse(Some(
            "filters=%7B%22status%22%3A%5B%22exited%22%5D%7D&all=1&names=a&names=b+c",
        ));
        assert_eq!(q.get("filters"), Some(r#"{"status":["exited"]}"#));
        assert!(q.flag("all", false) && !q.flag("size", false));
        assert_eq!(q.all("names"), ["a", "b c"]);
        assert!(Query::parse(Some("t=x")).int("t").is_err());
        assert_eq!(percent_decode("100%"), "100%");
        let q = Query::parse(Some(
            "filters=%7B%22status%22%3A%5B%22exited%22%5D%2C%22label%22%3A%7B%22a%3Db%22%3Atrue%7D%7D",
        ));
        let f = q.filters("container list", &["status", "label"]).unwrap();
        assert_eq!(f["status"], ["exited"]);
        assert_eq!(f["label"], ["a=b"]);
        assert_eq!(
            q.filters("container list", &["status"]).unwrap_err().status,
            StatusCode::NOT_IMPLEMENTED
        );
    }

    #[test]
    fn frames_and_base64() {
        assert_eq!(&frame(2, b"hi")[..], &[2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
        assert_eq!(
            base64_decode("eyJ1c2VybmFtZSI6ImEifQ==").unwrap(),
            br#"{"username":"a"}"#
        );
        assert_eq!(
            base64_decode("eyJ1c2VybmFtZSI6ImEifQ").unwrap(),
            br#"{"username":"a"}"#
        );
        assert!(base64_decode("***").is_none());
    }
}
