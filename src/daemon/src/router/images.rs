//! The image endpoints of the Docker Engine API, over the berth-image store.

use crate::daemon::{unix_of, Daemon};
use crate::http::{base64_decode, channel_body, empty, json, streamed, ApiError, Query, Resp};
use crate::models::{docker, JsonMessage, ProgressDetail, PushResult};
use berth_image::archive;
use berth_image::registry::{self, Progress, PullOptions, RegistryOptions};
use berth_image::{ImageRecord, Reference};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedSender;

/// Routes `/images/...` (names may contain slashes) and `/commit`; None if no route
/// matches.
pub async fn route(d: Arc<Daemon>, call: super::Call) -> Option<Result<Resp, ApiError>> {
    let super::Call {
        method,
        seg,
        q,
        req,
    } = call;
    let path = format!("/{}", seg.join("/"));
    Some(route_images(d, req, &method, &path, q).await)
}

async fn route_images(
    d: Arc<Daemon>,
    req: Request<Incoming>,
    m: &Method,
    path: &str,
    q: Query,
) -> Result<Resp, ApiError> {
    if path == "/commit" && m == Method::POST {
        return commit(d, &q).await;
    }
    if path == "/auth" && m == Method::POST {
        let b = super::body::<docker::AuthConfig>(req).await?;
        return login(&d, b).await;
    }
    let rest = path.trim_start_matches("/images").trim_start_matches('/');
    match (m, rest) {
        (&Method::GET, "json") => list(&d, &q),
        (&Method::POST, "create") => create(d, req, q).await,
        (&Method::POST, "load") => load(d, req).await,
        (&Method::GET, "get") => save(d, q.all("names")).await,
        (&Method::POST, "prune") => prune(&d, &q),
        (&Method::GET, "search") => Err(ApiError::not_implemented("image search")),
        (&Method::DELETE, name) if !name.is_empty() => remove(&d, name, &q),
        (_, r) => {
            let (name, what) = r
                .rsplit_once('/')
                .ok_or_else(|| ApiError::not_found(format!("page not found: {m} {path}")))?;
            match (m, what) {
                (&Method::GET, "json") => inspect(&d, name),
                (&Method::GET, "history") => history(&d, name),
                (&Method::GET, "get") => save(d, vec![name.to_owned()]).await,
                (&Method::POST, "tag") => tag(&d, name, &q),
                (&Method::POST, "push") => push(d, name, &q, &req).await,
                _ => Err(ApiError::not_found(format!("page not found: {m} {path}"))),
            }
        }
    }
}

/// The `repo` and `tag` query parameters as one reference (None without a repo).
fn repo_tag(q: &Query) -> Result<Option<Reference>, ApiError> {
    let Some(r) = q.get("repo").filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let full = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{r}:{t}"),
        None => r.to_owned(),
    };
    full.parse::<Reference>()
        .map(Some)
        .map_err(|e| ApiError::bad(e.to_string()))
}

/// An image by name, among those the caller sees (a tenant: its own).
pub(crate) fn resolve(d: &Daemon, name: &str) -> Result<ImageRecord, ApiError> {
    Ok(d.find_image(name)?)
}

/// The tags as they are before a tenant's request that may move some (None for the
/// operator, who may move any).
fn tags_before(
    d: &Daemon,
) -> Result<Option<std::collections::BTreeMap<String, berth_image::Digest>>, ApiError> {
    match crate::tenant::current() {
        None => Ok(None),
        Some(_) => Ok(Some(d.images.tags()?)),
    }
}

/// What a tag-writing request was: a pull (whose tag names the registry's content) or
/// a name the tenant gives its own content (tag, import, commit, load).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Naming {
    /// `docker pull`.
    Pull,
    /// Everything else.
    Own,
}

/// A tag as the store keys it: full, with `latest` for no tag.
fn tag_key(name: &str) -> Option<String> {
    let mut r: Reference = name.parse().ok()?;
    r.digest = None;
    if r.tag.is_none() {
        r.tag = Some("latest".into());
    }
    Some(r.to_string())
}

/// After a tenant's pull, import, load, commit or tag: gives it the images made, and
/// checks the tags the request wrote (`written`). A tenant names its own content only
/// under `<tenant>/...` (so nobody else, the operator included, runs it by a name they
/// meant for something else), and never moves a tag off an image that is not its alone;
/// a pull may name the registry's content by its own reference. A tag that breaks this
/// is put back as it was, and the request answers 409 naming it.
pub(crate) fn claim(
    d: &Daemon,
    before: Option<std::collections::BTreeMap<String, berth_image::Digest>>,
    made: &[berth_image::Digest],
    written: &[String],
    naming: Naming,
) -> Result<(), ApiError> {
    let (Some(t), Some(before)) = (crate::tenant::current(), before) else {
        return Ok(());
    };
    for id in made {
        d.image_owners.add(&t, &id.to_string())?;
    }
    let after = d.images.tags()?;
    let mut refused = Vec::new();
    for key in written.iter().filter_map(|w| tag_key(w)) {
        let (old, new) = (before.get(&key), after.get(&key));
        if old == new {
            continue;
        }
        let shown = key
            .parse::<Reference>()
            .map(|r| r.familiar())
            .unwrap_or_else(|_| key.clone());
        let ok = match naming {
            Naming::Pull => true,
            Naming::Own => {
                shown.starts_with(&format!("{t}/"))
                    && old.is_none_or(|o| !d.image_owners.others(&t, &o.to_string()))
            }
        };
        if ok {
            continue;
        }
        match old.and_then(|o| key.parse::<Reference>().ok().map(|r| (r, o))) {
            Some((r, o)) => d.images.tag(&r, o)?,
            None => d.images.untag(&key)?,
        }
        refused.push(shown);
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ApiError::conflict(format!(
            "tenant {t} may name its images only under \"{t}/\", and never take a name from an image that is not its alone: {} refused",
            refused.join(", ")
        )))
    }
}

pub(crate) fn summary(d: &Daemon, r: &ImageRecord) -> Result<docker::ImageSummary, ApiError> {
    let cfg = d.images.config(r)?;
    let repo_digests: Vec<String> = r
        .repo_digests
        .iter()
        .map(|rd| {
            rd.parse::<Reference>()
                .map(|x| x.familiar())
                .unwrap_or_else(|_| rd.clone())
        })
        .collect();
    Ok(docker::ImageSummary {
        id: r.id.to_string(),
        parent_id: r.parent.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        repo_tags: d.images.tags_of(&r.id)?,
        repo_digests,
        created: cfg.created().as_deref().map(unix_of).unwrap_or(0),
        size: r.size as i64,
        shared_size: -1,
        virtual_size: Some(r.size as i64),
        labels: cfg
            .config()
            .as_ref()
            .and_then(|c| c.labels().clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        containers: -1,
    })
}

/// Docker's reference pattern match: `*` any run of characters but `/`, `?` one. A
/// table over the pattern (time |pattern| x |text|), so that no pattern a client sends
/// can make it backtrack for ever.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    // ok[j]: the pattern so far matches s[..j].
    let mut ok = vec![false; s.len() + 1];
    ok[0] = true;
    for &p in pat {
        let mut next = vec![false; s.len() + 1];
        if p == b'*' {
            for j in 0..=s.len() {
                next[j] = ok[j] || (j > 0 && next[j - 1] && s[j - 1] != b'/');
            }
        } else {
            for j in 1..=s.len() {
                let c = s[j - 1];
                next[j] = ok[j - 1] && if p == b'?' { c != b'/' } else { c == p };
            }
        }
        ok = next;
    }
    ok[s.len()]
}

/// Whether a tag (`repo:tag`, familiar) matches a `reference` filter: the whole
/// reference, or its repository when the pattern names no tag.
fn reference_matches(pattern: &str, tag: &str) -> bool {
    let repo = tag.rsplit_once(':').map(|(r, _)| r).unwrap_or(tag);
    glob(pattern.as_bytes(), tag.as_bytes())
        || (!pattern.contains(':') && glob(pattern.as_bytes(), repo.as_bytes()))
}

/// `GET /images/json`, with Docker's filters: `reference` (glob over `repo:tag`; the
/// tags shown are the matching ones), `dangling`, `label` and `before`/`since` (another
/// image).
fn list(d: &Daemon, q: &Query) -> Result<Resp, ApiError> {
    let filters = q.filters(
        "image list",
        &["dangling", "reference", "label", "before", "since"],
    )?;
    let get = |k: &str| filters.get(k).cloned().unwrap_or_default();
    let dangling = match get("dangling").first().map(String::as_str) {
        None => None,
        Some("true" | "1") => Some(true),
        Some("false" | "0") => Some(false),
        Some(v) => return Err(ApiError::bad(format!("invalid filter 'dangling={v}'"))),
    };
    let created_of = |name: &str| -> Result<i64, ApiError> {
        let r = resolve(d, name)?;
        Ok(summary(d, &r)?.created)
    };
    let before = get("before").first().map(|n| created_of(n)).transpose()?;
    let since = get("since").first().map(|n| created_of(n)).transpose()?;
    let references = get("reference");
    let labels = get("label");
    let mut out = Vec::new();
    for r in d.images.records()? {
        if !d.image_owners.sees(&r.id.to_string()) {
            continue;
        }
        let mut s = summary(d, &r)?;
        if dangling.is_some_and(|want| want != s.repo_tags.is_empty()) {
            continue;
        }
        if !references.is_empty() {
            s.repo_tags
                .retain(|t| references.iter().any(|p| reference_matches(p, t)));
            if s.repo_tags.is_empty() {
                continue;
            }
        }
        let label_ok = labels.iter().all(|l| match l.split_once('=') {
            Some((k, v)) => s.labels.get(k).is_some_and(|x| x == v),
            None => s.labels.contains_key(l),
        });
        if !label_ok
            || before.is_some_and(|b| s.created >= b)
            || since.is_some_and(|t| s.created <= t)
        {
            continue;
        }
        out.push(s);
    }
    Ok(json(StatusCode::OK, &out))
}

/// An image config's `config` as Docker reads it: OCI's run defaults plus Docker's own
/// (Healthcheck, Shell, OnBuild...), which inspect shows.
#[derive(serde::Deserialize, Default)]
struct DockerRunDefaults {
    #[serde(default)]
    config: Option<docker::ContainerConfig>,
}

fn inspect(d: &Daemon, name: &str) -> Result<Resp, ApiError> {
    let r = resolve(d, name)?;
    let s = summary(d, &r)?;
    let cfg = d.images.config(&r)?;
    let run: DockerRunDefaults =
        serde_json::from_slice(&d.images.read_document(&r.id)?).unwrap_or_default();
    Ok(json(
        StatusCode::OK,
        &docker::ImageInspect {
            id: Some(s.id),
            repo_tags: Some(s.repo_tags),
            repo_digests: Some(s.repo_digests),
            parent: Some(s.parent_id.clone()),
            comment: cfg
                .history()
                .as_ref()
                .and_then(|h| h.first())
                .and_then(|h| h.comment().clone()),
            created: cfg.created().clone(),
            docker_version: Some(String::new()),
            author: cfg.author().clone(),
            config: run.config,
            architecture: Some(cfg.architecture().to_string()),
            os: Some(cfg.os().to_string()),
            size: Some(r.size as i64),
            virtual_size: Some(r.size as i64),
            root_fs: Some(docker::ImageInspectRootFs {
                typ: "layers".into(),
                layers: Some(cfg.rootfs().diff_ids().clone()),
            }),
            graph_driver: Some(docker::GraphDriverData {
                name: "berth".into(),
                data: [
                    (
                        "RootFS".to_owned(),
                        d.images.rootfs_path(&r.id).display().to_string(),
                    ),
                    (
                        "RootDisk".to_owned(),
                        d.images.disk_path(&r.id).display().to_string(),
                    ),
                ]
                .into_iter()
                .collect(),
            }),
            ..Default::default()
        },
    ))
}

fn history(d: &Daemon, name: &str) -> Result<Resp, ApiError> {
    let r = resolve(d, name)?;
    let cfg = d.images.config(&r)?;
    let m = d.images.manifest(&r)?;
    let mut layers = m.layers().iter().rev();
    let tags = d.images.tags_of(&r.id)?;
    let mut out = Vec::new();
    let history = cfg.history().clone().unwrap_or_default();
    for (i, h) in history.iter().rev().enumerate() {
        let size = if h.empty_layer().unwrap_or(false) {
            0
        } else {
            layers.next().map(|l| l.size()).unwrap_or(0)
        };
        out.push(docker::HistoryResponseItem {
            id: if i == 0 {
                r.id.to_string()
            } else {
                "<missing>".into()
            },
            created: h.created().as_deref().map(unix_of).unwrap_or(0),
            created_by: h.created_by().clone().unwrap_or_default(),
            tags: if i == 0 { tags.clone() } else { vec![] },
            size: size as i64,
            comment: h.comment().clone().unwrap_or_default(),
        });
    }
    Ok(json(StatusCode::OK, &out))
}

fn tag(d: &Daemon, name: &str, q: &Query) -> Result<Resp, ApiError> {
    let r = resolve(d, name)?;
    let repo = q
        .get("repo")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad("repository name must have at least one component"))?;
    let full = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_owned(),
    };
    let target: Reference = full
        .parse()
        .map_err(|e: berth_image::reference::ReferenceError| ApiError::bad(e.to_string()))?;
    if target.digest.is_some() {
        return Err(ApiError::bad(
            "refusing to create a tag with a digest reference",
        ));
    }
    let before = tags_before(d)?;
    d.images.tag(&target, &r.id)?;
    claim(
        d,
        before,
        std::slice::from_ref(&r.id),
        &[target.to_string()],
        Naming::Own,
    )?;
    d.event(
        "image",
        "tag",
        &r.id.to_string(),
        &[("name", target.familiar())],
    );
    Ok(empty(StatusCode::CREATED))
}

fn remove(d: &Daemon, name: &str, q: &Query) -> Result<Resp, ApiError> {
    let r = resolve(d, name)?;
    let force = q.flag("force", false);
    let users: Vec<String> = d
        .containers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(|c| c.record())
        .filter(|c| c.image_id == r.id.to_string())
        .map(|c| c.id)
        .collect();
    let tags = d.images.tags_of(&r.id)?;
    let by_tag = name
        .parse::<Reference>()
        .ok()
        .map(|x| x.familiar())
        .filter(|t| tags.contains(t));
    let last = by_tag.is_none() || tags.len() <= 1;
    if let Some(u) = users.first().filter(|_| last && !force) {
        // (another tenant's container is not named)
        let who = match d.find(u) {
            Ok(_) => format!("container {}", &u[..12]),
            Err(_) => "a container".into(),
        };
        return Err(ApiError::conflict(format!(
            "conflict: unable to remove repository reference \"{name}\" (must force) - {who} is using its referenced image {}",
            &r.id.hex()[..12]
        )));
    }
    if let Some(t) = crate::tenant::current() {
        if d.image_owners.others(&t, &r.id.to_string()) {
            // Others have it: it goes from this tenant's images only.
            d.image_owners.remove(&t, &r.id.to_string())?;
            let out = vec![docker::ImageDeleteResponseItem {
                untagged: by_tag.clone(),
                deleted: by_tag.is_none().then(|| r.id.to_string()),
            }];
            return Ok(json(StatusCode::OK, &out));
        }
    }
    let done = d.images.remove(name, force)?;
    if let Some(t) = crate::tenant::current() {
        if d.images.record(&r.id).ok().flatten().is_none() {
            d.image_owners.remove(&t, &r.id.to_string())?;
        }
    }
    let out: Vec<docker::ImageDeleteResponseItem> = done
        .into_iter()
        .map(|x| match x {
            berth_image::images::Removed::Untagged(t) => docker::ImageDeleteResponseItem {
                untagged: Some(t),
                deleted: None,
            },
            berth_image::images::Removed::Deleted(id) => docker::ImageDeleteResponseItem {
                untagged: None,
                deleted: Some(id.to_string()),
            },
        })
        .collect();
    d.event(
        "image",
        "delete",
        &r.id.to_string(),
        &[("name", name.to_string())],
    );
    Ok(json(StatusCode::OK, &out))
}

/// `image prune`: dangling images (untagged), or with `dangling=false` (`-a`) every
/// image no container uses.
fn prune(d: &Daemon, q: &Query) -> Result<Resp, ApiError> {
    let filters = q.filters("image prune", &["dangling"])?;
    let only_dangling = match filters.get("dangling").and_then(|v| v.first()) {
        None => true,
        Some(v) if v == "true" || v == "1" => true,
        Some(v) if v == "false" || v == "0" => false,
        Some(v) => return Err(ApiError::bad(format!("invalid filter 'dangling={v}'"))),
    };
    let used: Vec<String> = d
        .containers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(|c| c.record().image_id)
        .collect();
    let mut deleted = Vec::new();
    let mut space = 0u64;
    for r in d.images.records()? {
        let tagged = !d.images.tags_of(&r.id)?.is_empty();
        if (!tagged || !only_dangling) && !used.contains(&r.id.to_string()) {
            if let Ok(done) = d.images.remove(&r.id.to_string(), true) {
                space += r.size;
                for x in done {
                    deleted.push(match x {
                        berth_image::images::Removed::Deleted(id) => {
                            docker::ImageDeleteResponseItem {
                                untagged: None,
                                deleted: Some(id.to_string()),
                            }
                        }
                        berth_image::images::Removed::Untagged(t) => {
                            docker::ImageDeleteResponseItem {
                                untagged: Some(t),
                                deleted: None,
                            }
                        }
                    });
                }
            }
        }
    }
    Ok(json(
        StatusCode::OK,
        &docker::ImagePruneResponse {
            images_deleted: Some(deleted),
            space_reclaimed: Some(space as i64),
        },
    ))
}

fn line(m: &JsonMessage) -> String {
    format!("{}\n", serde_json::to_string(m).unwrap_or_default())
}

/// Credentials from the X-Registry-Auth header (base64url JSON).
fn auth(req: &Request<Incoming>) -> Option<(String, String)> {
    let h = req.headers().get("X-Registry-Auth")?.to_str().ok()?;
    let a: crate::models::AuthConfig = serde_json::from_slice(&base64_decode(h)?).ok()?;
    (!a.username.is_empty()).then_some((a.username, a.password))
}

fn send(tx: &UnboundedSender<Bytes>, m: JsonMessage) {
    let mut line = serde_json::to_vec(&m).unwrap_or_default();
    line.push(b'\n');
    let _ = tx.send(Bytes::from(line));
}

fn progress_line(p: Progress) -> JsonMessage {
    match p {
        Progress::Status { status } => JsonMessage::status(status),
        Progress::Layer {
            digest,
            status,
            current,
            total,
        } => {
            let bar = if total > 0
                && (status == "Downloading" || status == "Pushing" || status == "Extracting")
            {
                let w = (current.min(total) * 50 / total) as usize;
                format!(
                    "[{}>{}] {current}/{total}",
                    "=".repeat(w),
                    " ".repeat(50 - w)
                )
            } else {
                String::new()
            };
            JsonMessage {
                status: Some(status.to_string()),
                id: Some(registry::short(&digest).to_string()),
                progress: Some(bar),
                progress_detail: Some(ProgressDetail {
                    current: Some(current),
                    total: Some(total),
                }),
                ..Default::default()
            }
        }
    }
}

fn error_line(msg: &str) -> JsonMessage {
    JsonMessage::error(msg)
}

/// `POST /auth`: checks the credentials against the registry (the client stores them
/// and sends them with each pull and push, as with dockerd); refused ones are a 401.
async fn login(d: &Daemon, b: docker::AuthConfig) -> Result<Resp, ApiError> {
    let registry = berth_image::registry::login_host(b.serveraddress.as_deref().unwrap_or(""));
    let user = b.username.unwrap_or_default();
    let password = b.password.unwrap_or_default();
    if user.is_empty() {
        return Err(ApiError::bad("login needs a username"));
    }
    registry::login(&registry, &user, &password, &opts(d, None))
        .await
        .map_err(|e| match e.cause {
            registry::Cause::Unauthorized(m) => crate::errors::Error::Unauthorized(format!(
                "login attempt to {registry} failed: unauthorized: {m}"
            )),
            other => crate::errors::Error::Sandbox(format!("login to {registry}: {other}")),
        })?;
    Ok(json(
        StatusCode::OK,
        &docker::SystemAuthResponse {
            status: "Login Succeeded".into(),
            identity_token: Some(String::new()),
        },
    ))
}

fn opts(d: &Daemon, creds: Option<(String, String)>) -> RegistryOptions {
    RegistryOptions {
        insecure: d.opts.insecure_registries.clone(),
        credentials: creds,
        ..Default::default()
    }
}

async fn create(d: Arc<Daemon>, req: Request<Incoming>, q: Query) -> Result<Resp, ApiError> {
    if let Some(src) = q.get("fromSrc") {
        if src != "-" {
            return Err(ApiError::not_implemented(
                "importing from a URL (use fromSrc=- and send the tarball)",
            ));
        }
        let target = repo_tag(&q)?;
        let target_name = target.as_ref().map(|r| r.to_string());
        let changes = q.all("changes");
        let message = q.get("message").map(str::to_owned);
        let tmp = body_to_file(&d, req).await?;
        let d2 = d.clone();
        let before = tags_before(&d)?;
        let rec = tokio::task::spawn_blocking(move || {
            let f =
                std::fs::File::open(tmp.path()).map_err(|e| ApiError::internal(e.to_string()))?;
            archive::import(
                &d2.images,
                std::io::BufReader::new(f),
                target.as_ref(),
                &changes,
                message.as_deref(),
            )
            .map_err(|e| ApiError::bad(e.to_string()))
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
        let written: Vec<String> = target_name.into_iter().collect();
        claim(
            &d,
            before,
            std::slice::from_ref(&rec.id),
            &written,
            Naming::Own,
        )?;
        d.event("image", "import", &rec.id.to_string(), &[]);
        return Ok(json(
            StatusCode::OK,
            &JsonMessage::status(rec.id.to_string()),
        ));
    }
    let image = q
        .get("fromImage")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad("fromImage or fromSrc is required"))?;
    let full = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{image}@{t}"),
        Some(t) => format!("{image}:{t}"),
        None => image.to_owned(),
    };
    let r: Reference = full
        .parse()
        .map_err(|e: berth_image::reference::ReferenceError| ApiError::bad(e.to_string()))?;
    let creds = auth(&req);
    let (tx, body) = channel_body();
    let opts = opts(&d, creds);
    let tags = tags_before(&d)?;
    tokio::spawn(crate::tenant::scope(crate::tenant::current(), async move {
        let before = d.images.resolve(&r.to_string()).ok().map(|x| x.id);
        let tx2 = tx.clone();
        let cb = move |p: Progress| send(&tx2, progress_line(p));
        let pulled = registry::pull(&d.images, &r, &opts, PullOptions { unpack: true }, &cb)
            .await
            .map_err(|e| e.to_string())
            .and_then(|rec| {
                claim(
                    &d,
                    tags,
                    std::slice::from_ref(&rec.id),
                    &[r.to_string()],
                    Naming::Pull,
                )
                .map(|_| rec)
                .map_err(|e| e.message)
            });
        match pulled {
            Ok(rec) => {
                let s = if before == Some(rec.id.clone()) {
                    format!("Status: Image is up to date for {}", r.familiar())
                } else {
                    format!("Status: Downloaded newer image for {}", r.familiar())
                };
                send(&tx, JsonMessage::status(s));
                d.event("image", "pull", &r.familiar(), &[]);
            }
            Err(e) => send(&tx, error_line(&e)),
        }
    }));
    Ok(streamed("application/json", body))
}

async fn push(
    d: Arc<Daemon>,
    name: &str,
    q: &Query,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let full = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{name}:{t}"),
        None => name.to_owned(),
    };
    let target: Reference = full
        .parse()
        .map_err(|e: berth_image::reference::ReferenceError| ApiError::bad(e.to_string()))?;
    resolve(&d, &full)?;
    let opts = opts(&d, auth(req));
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        let tx2 = tx.clone();
        let cb = move |p: Progress| send(&tx2, progress_line(p));
        match registry::push(&d.images, &full, &target, &opts, &cb).await {
            Ok(digest) => {
                let size = d
                    .images
                    .read_document(&digest)
                    .map(|b| b.len())
                    .unwrap_or(0);
                send(
                    &tx,
                    JsonMessage {
                        progress_detail: Some(ProgressDetail::default()),
                        aux: Some(PushResult {
                            tag: target.tag.clone().unwrap_or_default(),
                            digest: digest.to_string(),
                            size,
                        }),
                        ..Default::default()
                    },
                );
            }
            Err(e) => send(&tx, error_line(&e.to_string())),
        }
    });
    Ok(streamed("application/json", body))
}

/// `POST /commit`: a new image from a container's changes (process isolation: its overlay
/// upper directory on the host).
async fn commit(d: Arc<Daemon>, q: &Query) -> Result<Resp, ApiError> {
    let c = d.find(q.get("container").unwrap_or(""))?;
    let rec = c.record();
    let Some(upper) = d.sandbox(&rec).writable_layer(&d.dir(&rec.id)) else {
        return Err(ApiError::not_implemented(
            "commit of a microVM container (its writable layer lives in the guest)",
        ));
    };
    let tag = repo_tag(q)?;
    let commit_name = tag.as_ref().map(|r| r.to_string());
    let changes = q
        .all("changes")
        .into_iter()
        .flat_map(|c| c.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|c| !c.trim().is_empty())
        .collect::<Vec<_>>();
    let (comment, author) = (
        q.get("comment").map(str::to_owned),
        q.get("author").map(str::to_owned),
    );
    let parent = resolve(&d, &rec.image_id)?;
    let d2 = d.clone();
    let before = tags_before(&d)?;
    let img = tokio::task::spawn_blocking(move || {
        if !upper.is_dir() {
            return Err(ApiError::conflict(
                "the container has no writable layer yet (it never started)",
            ));
        }
        archive::commit(
            &d2.images,
            &parent,
            &upper,
            tag.as_ref(),
            &changes,
            comment.as_deref(),
            author.as_deref(),
        )
        .map_err(|e| ApiError::bad(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    claim(
        &d,
        before,
        std::slice::from_ref(&img.id),
        &commit_name.into_iter().collect::<Vec<_>>(),
        Naming::Own,
    )?;
    d.event(
        "container",
        "commit",
        &rec.id,
        &[("imageID", img.id.to_string())],
    );
    Ok(json(
        StatusCode::CREATED,
        &crate::models::IdResponse {
            id: img.id.to_string(),
        },
    ))
}

/// A temp file under the data root, removed when dropped.
pub struct Tmp(std::path::PathBuf);

impl Tmp {
    /// The path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn body_to_file(d: &Daemon, req: Request<Incoming>) -> Result<Tmp, ApiError> {
    let dir = d.opts.data_root.join("tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let tmp = Tmp(dir.join(format!("upload-{}", crate::daemon::new_id())));
    let mut f = tokio::fs::File::create(tmp.path())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad(format!("reading the request body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            f.write_all(data)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
    }
    f.flush()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(tmp)
}

/// `POST /images/load` (there is no per-layer progress to silence, so `quiet` changes
/// nothing).
async fn load(d: Arc<Daemon>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let tmp = body_to_file(&d, req).await?;
    let d2 = d.clone();
    let before = tags_before(&d)?;
    let loaded = tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(tmp.path()).map_err(|e| ApiError::internal(e.to_string()))?;
        archive::load(&d2.images, std::io::BufReader::new(f))
            .map_err(|e| ApiError::bad(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let ids: Vec<berth_image::Digest> = loaded.iter().map(|(r, _)| r.id.clone()).collect();
    let written: Vec<String> = loaded.iter().flat_map(|(_, t)| t.clone()).collect();
    claim(&d, before, &ids, &written, Naming::Own)?;
    let mut out = String::new();
    for (rec, tags) in loaded {
        if tags.is_empty() {
            out.push_str(&line(&JsonMessage::stream(format!(
                "Loaded image ID: {}\n",
                rec.id
            ))));
        }
        for t in tags {
            out.push_str(&line(&JsonMessage::stream(format!("Loaded image: {t}\n"))));
        }
    }
    Ok(streamed("application/json", crate::http::full(out)))
}

async fn save(d: Arc<Daemon>, names: Vec<String>) -> Result<Resp, ApiError> {
    if names.is_empty() {
        return Err(ApiError::bad("no image named to save"));
    }
    for n in &names {
        resolve(&d, n)?;
    }
    let dir = d.opts.data_root.join("tmp");
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(e.to_string()))?;
    let tmp = Tmp(dir.join(format!("save-{}", crate::daemon::new_id())));
    let (d2, p) = (d.clone(), tmp.path().to_owned());
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::create(&p).map_err(|e| ApiError::internal(e.to_string()))?;
        archive::save(&d2.images, &names, std::io::BufWriter::new(f))
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let Ok(mut f) = tokio::fs::File::open(tmp.path()).await else {
            return;
        };
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match f.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        break;
                    }
                }
            }
        }
        drop(tmp);
    });
    Ok(streamed("application/x-tar", body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filters_match_as_dockers() {
        assert!(reference_matches("busybox", "busybox:latest"));
        assert!(reference_matches("busybox:*", "busybox:1.36"));
        assert!(reference_matches("bu*", "busybox:1"));
        assert!(!reference_matches("bu*", "library/busybox:1"));
        assert!(reference_matches("*/busybox", "library/busybox:1"));
        assert!(!reference_matches("busybox:2", "busybox:1"));
        assert!(reference_matches("b?:1", "bb:1"));
        assert!(!reference_matches("b?", "b/:1"));
        assert!(reference_matches("*", "bb:1"));
        assert!(!reference_matches("", "bb:1"));
    }

    #[test]
    fn a_hostile_pattern_is_matched_in_no_time() {
        let pattern = "*a".repeat(40) + "b";
        let text = "a".repeat(200) + ":1";
        let t0 = std::time::Instant::now();
        assert!(!reference_matches(&pattern, &text));
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
    }
}
