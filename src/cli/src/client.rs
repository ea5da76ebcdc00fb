//! The HTTP client over berthd's Unix socket: the failure type every command returns,
//! requests (JSON, tar or upgraded), JSON and streamed replies, the daemon's error replies
//! as Docker prints them, and query-string encoding.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::PathBuf;

/// A failure: the message and the exit code.
pub(crate) struct Fail(pub(crate) String, pub(crate) u8);

/// A daemon-side failure (exit code 125).
pub(crate) fn daemon_err(m: impl Into<String>) -> Fail {
    Fail(m.into(), 125)
}

/// Where berthd listens; each request opens a fresh connection.
pub(crate) struct Conn {
    pub(crate) sock: PathBuf,
}

/// A reply from the daemon.
pub(crate) type Resp = Response<Incoming>;

fn full(b: Bytes) -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    Full::new(b).map_err(|never| match never {}).boxed()
}

impl Conn {
    /// Sends one request (a JSON body, a tar body or none; upgraded if asked) and returns
    /// the reply as is.
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        raw: Option<Bytes>,
        upgrade: bool,
    ) -> Result<Resp, Fail> {
        let s = tokio::net::UnixStream::connect(&self.sock)
            .await
            .map_err(|e| {
                daemon_err(format!(
                    "Cannot connect to the berth daemon at unix://{}: {e}. Is berthd running?",
                    self.sock.display()
                ))
            })?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .map_err(|e| daemon_err(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://berth/v1.44{path}"))
            .header("Host", "berth");
        if upgrade {
            b = b.header("Connection", "Upgrade").header("Upgrade", "tcp");
        }
        let req = match (body, raw) {
            (Some(v), _) => b
                .header("Content-Type", "application/json")
                .body(full(Bytes::from(v.to_string()))),
            (None, Some(r)) => b.header("Content-Type", "application/x-tar").body(full(r)),
            (None, None) => b.body(full(Bytes::new())),
        }
        .map_err(|e| daemon_err(e.to_string()))?;
        tx.send_request(req)
            .await
            .map_err(|e| daemon_err(e.to_string()))
    }

    /// A request whose reply is JSON (or empty); errors become Docker's "Error response
    /// from daemon: ...".
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Fail> {
        let r = self.send(method, path, body, None, false).await?;
        json_reply(r).await
    }
}

/// Feeds each data frame of the reply body to `each`.
pub(crate) async fn read_body(r: Resp, mut each: impl FnMut(&[u8])) -> Result<(), Fail> {
    let mut body = r.into_body();
    while let Some(f) = body.frame().await {
        let f = f.map_err(|e| daemon_err(e.to_string()))?;
        if let Some(d) = f.data_ref() {
            each(d);
        }
    }
    Ok(())
}

/// A JSON (or empty) reply; an error status becomes the daemon's message.
pub(crate) async fn json_reply(r: Resp) -> Result<Value, Fail> {
    let status = r.status();
    if !status.is_success() && status.as_u16() != 304 {
        return Err(error_of(r).await);
    }
    let bytes = r
        .into_body()
        .collect()
        .await
        .map_err(|e| daemon_err(e.to_string()))?
        .to_bytes();
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The daemon's error reply as Docker prints it: "Error response from daemon: ...".
pub(crate) async fn error_of(r: Resp) -> Fail {
    let status = r.status();
    let b = r
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    let m = v["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {status}: {}", String::from_utf8_lossy(&b)));
    daemon_err(format!("Error response from daemon: {m}"))
}

/// Percent-encodes a query-string value.
pub(crate) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
