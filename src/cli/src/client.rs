//! The HTTP client over berthd's Unix socket: the failure type every command returns,
//! requests (JSON, tar or upgraded), typed JSON and streamed replies (the models of
//! `berth-api`, which berthd uses too), the daemon's error replies as Docker prints them,
//! and query-string encoding.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::PathBuf;

/// A failure: the message and the exit code.
#[derive(Debug)]
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
        body: Option<Bytes>,
        raw: Option<Bytes>,
        upgrade: bool,
    ) -> Result<Resp, Fail> {
        self.send_with(method, path, body, raw, upgrade, &[]).await
    }

    /// [`Conn::send`] with more headers (`X-Registry-Auth`).
    pub(crate) async fn send_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
        raw: Option<Bytes>,
        upgrade: bool,
        headers: &[(&str, String)],
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
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let req = match (body, raw) {
            (Some(v), _) => b.header("Content-Type", "application/json").body(full(v)),
            (None, Some(r)) => b.header("Content-Type", "application/x-tar").body(full(r)),
            (None, None) => b.body(full(Bytes::new())),
        }
        .map_err(|e| daemon_err(e.to_string()))?;
        tx.send_request(req)
            .await
            .map_err(|e| daemon_err(e.to_string()))
    }

    /// A request whose reply is JSON of type `R` (`IgnoredAny` when it does not matter,
    /// or is empty); errors become Docker's "Error response from daemon: ...".
    pub(crate) async fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<R, Fail> {
        let r = self.send(method, path, body, None, false).await?;
        json_reply(r).await
    }
}

/// A request body as JSON.
pub(crate) fn json<B: Serialize>(b: &B) -> Option<Bytes> {
    // The models serialise infallibly (no maps with non-string keys).
    serde_json::to_vec(b).ok().map(Bytes::from)
}

/// Ignores a reply's content.
pub(crate) type Ignored = serde::de::IgnoredAny;

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

/// A JSON (or empty) reply of type `R`; an error status becomes the daemon's message.
pub(crate) async fn json_reply<R: DeserializeOwned>(r: Resp) -> Result<R, Fail> {
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
    let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
    serde_json::from_slice(bytes)
        .map_err(|e| daemon_err(format!("unexpected reply from the daemon: {e}")))
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
    let m = serde_json::from_slice::<berth_api::docker::ErrorResponse>(&b)
        .map(|e| e.message)
        .unwrap_or_else(|_| format!("HTTP {status}: {}", String::from_utf8_lossy(&b)));
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
