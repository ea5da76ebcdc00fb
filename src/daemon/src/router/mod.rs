//! The Docker Engine API (1.44, accepting 1.41 and up and unversioned paths): one router
//! per Docker object, in the spirit of moby's `api/server/router/<object>`. A router
//! parses the request into typed models, calls the daemon core, and writes the typed
//! reply; [`status_of`] is the one mapping from the core's errors to HTTP statuses.
//!
//! Where things go: a new endpoint goes in its object's router (or a new router, listed
//! in [`route`]); a new HostConfig field is applied in `daemon/create.rs` and
//! `daemon/start.rs`, and until it is, refused in `models::refuse_unapplied`.

pub mod containers;
pub mod exec;
pub mod images;
pub mod networks;
pub mod notbuilt;
pub mod streams;
pub mod system;
pub mod volumes;

use crate::daemon::Daemon;
use crate::errors::Error;
use crate::http::{empty, ApiError, Query, Resp};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;

/// The API version berthd speaks.
pub const API_VERSION: &str = "1.44";
/// The oldest it accepts.
pub const MIN_API_VERSION: &str = "1.41";

/// Who is calling, put in each request's extensions by the listener: the operator (the
/// Unix socket, or plain TCP when forced), or a client named by the common name of its
/// TLS client certificate, which [`handle`] maps to a tenant when berthd has tenants
/// (docs/tenants.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The tenant; None for the operator.
    pub tenant: Option<String>,
}

impl Caller {
    /// A tenant's call.
    pub fn tenant(name: String) -> Caller {
        Caller { tenant: Some(name) }
    }
}

/// The HTTP status for each class of core error.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::InvalidParameter(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::NotModified => StatusCode::NOT_MODIFIED,
        Error::Start { user_error, .. } => {
            if *user_error {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
        Error::Image(i) => {
            use berth_image::ImageError as E;
            match i {
                E::NotFound(_) => StatusCode::NOT_FOUND,
                E::Conflict(_) => StatusCode::CONFLICT,
                E::Reference(_) => StatusCode::BAD_REQUEST,
                E::Layer(berth_image::layer::LayerError::TooLarge(_)) => {
                    StatusCode::PAYLOAD_TOO_LARGE
                }
                E::Layer(berth_image::layer::LayerError::NoSpace(_)) => {
                    StatusCode::INSUFFICIENT_STORAGE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            }
        }
        Error::Sandbox(_) | Error::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError {
            status: status_of(&e),
            message: e.to_string(),
        }
    }
}

/// A router's result.
pub type Reply = Result<Resp, ApiError>;

/// Serves one request.
pub async fn handle(d: Arc<Daemon>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    // A TLS client is a tenant when berthd has tenants, and must be one of them.
    let cn = req
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.tenant.clone());
    let tenant = match (cn, &d.opts.tenants) {
        (Some(cn), Some(known)) => {
            if !known.contains_key(&cn) {
                let e = ApiError {
                    status: StatusCode::FORBIDDEN,
                    message: format!(
                        "the client certificate's name {cn:?} is no tenant of this berthd"
                    ),
                };
                return Ok(e.into_resp());
            }
            Some(cn)
        }
        _ => None,
    };
    let reply = if runs_to_completion(&method, &path) {
        // Its own task: a client that hangs up drops this future, not the task. Counted
        // until the task ends and until its reply is handed to the connection.
        let guard = Inflight::enter();
        let _replying = Inflight::enter();
        tokio::spawn(crate::tenant::scope(tenant, async move {
            let _guard = guard;
            route(d, req).await
        }))
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("the request failed: {e}"))))
    } else {
        crate::tenant::scope(tenant, route(d, req)).await
    };
    let resp = match reply {
        Ok(r) => r,
        Err(e) if e.status == StatusCode::NOT_MODIFIED => empty(StatusCode::NOT_MODIFIED),
        Err(e) => e.into_resp(),
    };
    crate::log(
        "info",
        "request",
        &[
            ("method", method.as_str()),
            ("path", &path),
            ("status", resp.status().as_str()),
        ],
    );
    Ok(resp)
}

/// Whether a request changes a container's, network's, volume's or image's state, and so
/// runs to completion whoever is still listening, as dockerd's do: a `stop` whose client
/// hangs up after a second still stops the container. Streams (attach, wait, logs, pulls,
/// exec sessions) end with their client.
fn runs_to_completion(method: &Method, path: &str) -> bool {
    if method == Method::GET || method == Method::HEAD {
        return false;
    }
    let (_, rest) = version_of(path);
    let seg: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (seg.first().copied(), seg.len()) {
        (Some("containers"), 2) => seg[1] == "create" || method == Method::DELETE,
        (Some("containers"), 3) => matches!(
            seg[2],
            "start" | "stop" | "restart" | "kill" | "pause" | "unpause" | "update" | "rename"
        ),
        (Some("networks" | "volumes"), _) => true,
        // Image names may hold slashes: `DELETE /images/user/repo:1`, `.../user/repo/tag`.
        (Some("images"), n) if n >= 2 => {
            method == Method::DELETE || (method == Method::POST && seg[n - 1] == "tag")
        }
        _ => false,
    }
}

/// Counts the requests that run to completion, so that berthd lets them finish before it
/// exits.
struct Inflight;

static INFLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static INFLIGHT_DONE: tokio::sync::Notify = tokio::sync::Notify::const_new();

impl Inflight {
    fn enter() -> Inflight {
        INFLIGHT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Inflight
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        INFLIGHT.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        INFLIGHT_DONE.notify_waiters();
    }
}

/// Waits until no request that runs to completion is left, or `limit` passes; returns how
/// many are still running.
pub async fn drain(limit: std::time::Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let done = INFLIGHT_DONE.notified();
        let n = INFLIGHT.load(std::sync::atomic::Ordering::SeqCst);
        if n == 0 {
            return 0;
        }
        if tokio::time::timeout_at(deadline, done).await.is_err() {
            return INFLIGHT.load(std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Splits `/v1.44/containers/json` into the version and the rest.
fn version_of(path: &str) -> (Option<(u32, u32)>, &str) {
    let Some(rest) = path.strip_prefix("/v") else {
        return (None, path);
    };
    let (v, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some((maj, min)) = v.split_once('.') else {
        return (None, path);
    };
    match (maj.parse::<u32>(), min.parse::<u32>()) {
        (Ok(a), Ok(b)) => (Some((a, b)), if tail.is_empty() { "/" } else { tail }),
        _ => (None, path),
    }
}

/// One request, parsed for the routers.
pub struct Call {
    /// The method.
    pub method: Method,
    /// Path segments after the version.
    pub seg: Vec<String>,
    /// The query.
    pub q: Query,
    /// The request (body, upgrade).
    pub req: Request<Incoming>,
}

async fn route(d: Arc<Daemon>, req: Request<Incoming>) -> Reply {
    let full_path = req.uri().path().to_owned();
    let (ver, path) = version_of(&full_path);
    if let Some((a, b)) = ver {
        if (a, b) < (1, 41) {
            return Err(ApiError::bad(format!(
                "client version {a}.{b} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
            )));
        }
        if (a, b) > (1, 44) {
            return Err(ApiError::bad(format!(
                "client version {a}.{b} is too new. Maximum supported API version is {API_VERSION}"
            )));
        }
    }
    let call = Call {
        method: req.method().clone(),
        seg: path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        q: Query::parse(req.uri().query()),
        req,
    };
    let method = call.method.clone();
    if crate::tenant::current().is_some() && call.seg.last().is_some_and(|s| s == "prune") {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: "prune is for the operator; a tenant removes its objects one by one".into(),
        });
    }
    let first = call.seg.first().cloned().unwrap_or_default();
    let r = match first.as_str() {
        "containers" => containers::route(&d, call).await,
        "exec" => exec::route(&d, call).await,
        "networks" => networks::route(&d, call).await,
        "volumes" => volumes::route(&d, call).await,
        "images" | "commit" | "auth" => images::route(d.clone(), call).await,
        "_ping" | "version" | "info" | "events" | "system" => system::route(&d, call).await,
        _ => notbuilt::route(call),
    };
    r.unwrap_or_else(|| {
        Err(ApiError::not_found(format!(
            "page not found: {method} {full_path}"
        )))
    })
}

/// Runs a handler that walks the disk (writable layers' sizes) on a blocking thread, off
/// the async workers that every other request needs.
pub async fn off_thread(f: impl FnOnce() -> Reply + Send + 'static) -> Reply {
    tokio::task::spawn_blocking(crate::tenant::carry(f))
        .await
        .unwrap_or_else(|e| {
            Err(ApiError::from(crate::errors::Error::Sandbox(format!(
                "a worker failed: {e}"
            ))))
        })
}

/// Reads a typed JSON body (at most 4 MiB); malformed JSON or a wrong type is a 400
/// naming the problem; an empty body is the type's default.
pub async fn body<T: serde::de::DeserializeOwned + Default>(
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let b = body_bytes(req, 4 << 20).await?;
    if b.iter().all(|c| c.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(&b).map_err(|e| ApiError::bad(format!("invalid JSON: {e}")))
}

/// Reads a whole body, refusing more than `limit` bytes.
pub async fn body_bytes(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::bad(format!("reading the request body: {e}")))
}

#[cfg(test)]
mod tests {
    use hyper::Method;

    #[test]
    fn lifecycle_requests_run_to_completion_and_streams_do_not() {
        use super::runs_to_completion as r;
        assert!(r(&Method::POST, "/v1.44/containers/abc/stop"));
        assert!(r(&Method::POST, "/containers/create"));
        assert!(r(&Method::DELETE, "/v1.41/containers/abc"));
        assert!(r(&Method::POST, "/networks/n/connect"));
        assert!(r(&Method::DELETE, "/images/bb:1"));
        assert!(r(&Method::DELETE, "/images/user/repo:1"));
        assert!(r(&Method::POST, "/v1.44/images/user/repo/tag"));
        assert!(!r(&Method::POST, "/images/user/repo/push"));
        assert!(!r(&Method::GET, "/containers/json"));
        assert!(!r(&Method::POST, "/containers/abc/wait"));
        assert!(!r(&Method::POST, "/containers/abc/attach"));
        assert!(!r(&Method::POST, "/exec/abc/start"));
        assert!(!r(&Method::POST, "/images/create"));
    }
}
