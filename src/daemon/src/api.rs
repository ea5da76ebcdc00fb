//! The Docker Engine API (1.44, accepting 1.41 and up and unversioned paths): routing and
//! the container and system endpoints. Images are in `images.rs`.

use crate::daemon::{
    new_id, now_rfc3339, parse_signal, unix_of, Ctr, Daemon, ExecRec, Isolation, PendingAttach,
    Phase, Record, State,
};
use crate::http::{channel_body, empty, frame, full, json, streamed, ApiError, Query, Resp};
use berth_protocol::{Channel, Request as AReq, Response as ARes, StreamKind};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json as j, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The API version berthd speaks.
pub const API_VERSION: &str = "1.44";
/// The oldest it accepts.
pub const MIN_API_VERSION: &str = "1.41";

/// Serves one request.
pub async fn handle(d: Arc<Daemon>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let r = route(d, req).await;
    let resp = match r {
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

async fn route(d: Arc<Daemon>, req: Request<Incoming>) -> Result<Resp, ApiError> {
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
    let path = path.to_owned();
    let q = Query::parse(req.uri().query());
    let m = req.method().clone();
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if seg.first() == Some(&"images") || path == "/commit" {
        return crate::images::route(d, req, &m, &path, q).await;
    }
    match (&m, seg.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(ping(&m)),
        (&Method::GET, ["version"]) => Ok(json(StatusCode::OK, &version())),
        (&Method::GET, ["info"]) => Ok(json(StatusCode::OK, &info(&d))),
        (&Method::GET, ["events"]) => Ok(events(&d, &q)),
        (&Method::GET, ["containers", "json"]) => list(&d, &q),
        (&Method::POST, ["containers", "create"]) => create(&d, &q, body_json(req).await?),
        (&Method::POST, ["containers", "prune"]) => prune(&d).await,
        (&Method::GET, ["containers", id, "json"]) => {
            Ok(json(StatusCode::OK, &inspect(&d, &*d.find(id)?)))
        }
        (&Method::POST, ["containers", id, "start"]) => start(&d, d.find(id)?).await,
        (&Method::POST, ["containers", id, "stop"]) => stop(&d, d.find(id)?, &q).await,
        (&Method::POST, ["containers", id, "restart"]) => {
            let c = d.find(id)?;
            match stop(&d, c.clone(), &q).await {
                Ok(_) => {}
                Err(e) if e.status == StatusCode::NOT_MODIFIED => {}
                Err(e) => return Err(e),
            }
            start(&d, c).await
        }
        (&Method::POST, ["containers", id, "kill"]) => kill(&d, d.find(id)?, &q).await,
        (&Method::POST, ["containers", id, "wait"]) => wait(d.find(id)?, &q),
        (&Method::POST, ["containers", id, "attach"]) => attach(&d, d.find(id)?, &q, req),
        (&Method::POST, ["containers", id, "resize"]) => resize(&d, d.find(id)?, None, &q).await,
        (&Method::GET, ["containers", id, "logs"]) => logs(&d, d.find(id)?, &q),
        (&Method::GET, ["containers", id, "top"]) => top(&d, d.find(id)?).await,
        (&Method::GET, ["containers", id, "stats"]) => stats(&d, d.find(id)?, &q).await,
        (&Method::POST, ["containers", id, "rename"]) => rename(&d, d.find(id)?, &q),
        (&Method::DELETE, ["containers", id]) => remove(&d, d.find(id)?, &q).await,
        (&Method::POST, ["containers", id, "exec"]) => {
            exec_create(&d, d.find(id)?, body_json(req).await?)
        }
        (&Method::POST, ["exec", id, "start"]) => exec_start(&d, id, req).await,
        (&Method::POST, ["exec", id, "resize"]) => {
            let e = exec_get(&d, id)?;
            resize(&d, d.find(&e.container)?, Some(e.id), &q).await
        }
        (&Method::GET, ["exec", id, "json"]) => {
            Ok(json(StatusCode::OK, &exec_inspect(&exec_get(&d, id)?)))
        }
        (
            _,
            ["containers", _, what @ ("archive" | "export" | "changes" | "update" | "pause" | "unpause")],
        ) => Err(ApiError::not_implemented(&format!(
            "containers/{{id}}/{what}"
        ))),
        (
            _,
            [what @ ("networks" | "volumes" | "build" | "swarm" | "services" | "nodes" | "secrets"
            | "configs" | "plugins" | "session" | "distribution" | "tasks" | "auth"), ..],
        ) => Err(ApiError::not_implemented(what)),
        (_, ["system", "df"]) => Err(ApiError::not_implemented("system df")),
        _ => Err(ApiError::not_found(format!(
            "page not found: {} {}",
            m, full_path
        ))),
    }
}

/// Reads a JSON body (at most 4 MiB); malformed JSON is a 400.
pub async fn body_json(req: Request<Incoming>) -> Result<Value, ApiError> {
    let b = body_bytes(req, 4 << 20).await?;
    if b.iter().all(|c| c.is_ascii_whitespace()) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(&b).map_err(|e| ApiError::bad(format!("invalid JSON: {e}")))
}

/// Reads a whole body, refusing more than `limit` bytes.
pub async fn body_bytes(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::bad(format!("reading the request body: {e}")))
}

fn ping(m: &Method) -> Resp {
    let mut r = if m == Method::HEAD {
        empty(StatusCode::OK)
    } else {
        streamed("text/plain; charset=utf-8", full("OK"))
    };
    let h = r.headers_mut();
    for (k, v) in [
        ("API-Version", API_VERSION),
        ("Builder-Version", "1"),
        ("Docker-Experimental", "false"),
        ("Ostype", "linux"),
        ("Cache-Control", "no-cache, no-store, must-revalidate"),
        ("Pragma", "no-cache"),
    ] {
        h.insert(k, v.parse().expect("static header"));
    }
    r
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn version() -> Value {
    let v = env!("CARGO_PKG_VERSION");
    j!({
        "Platform": {"Name": "berth"},
        "Components": [{"Name": "Engine", "Version": v, "Details": {
            "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": "amd64",
            "KernelVersion": kernel_version(), "Experimental": "false"}}],
        "Version": v, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "berth", "GoVersion": "n/a (Rust)", "Os": "linux", "Arch": "amd64",
        "KernelVersion": kernel_version(), "BuildTime": "",
    })
}

fn info(d: &Daemon) -> Value {
    let map = d.containers.lock().unwrap_or_else(|e| e.into_inner());
    let recs: Vec<Record> = map.values().map(|c| c.record()).collect();
    let running = recs.iter().filter(|r| r.state.running).count();
    let kvm = berth_hostcheck::check();
    j!({
        "ID": "berth", "Containers": recs.len(), "ContainersRunning": running, "ContainersPaused": 0,
        "ContainersStopped": recs.len() - running,
        "Images": d.images.records().map(|r| r.len()).unwrap_or(0),
        "Driver": "berth-overlay", "DockerRootDir": d.opts.data_root, "OperatingSystem": "berth",
        "OSType": "linux", "Architecture": "x86_64", "KernelVersion": kernel_version(),
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "MemTotal": 0, "Name": "berth", "ServerVersion": env!("CARGO_PKG_VERSION"),
        "DefaultRuntime": "berth", "Runtimes": {"berth": {"path": d.opts.agent}},
        "Isolation": match d.opts.default_isolation { Isolation::Vm => "vm", Isolation::Process => "process" },
        "SecurityOptions": ["name=seccomp,profile=builtin"], "CgroupDriver": "cgroupfs",
        "Warnings": if kvm.can_run_microvms() { vec![] } else { vec![format!("microVM isolation is unavailable: {kvm}")] },
        "RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {}, "Mirrors": []},
    })
}

fn events(d: &Daemon, q: &Query) -> Resp {
    let (tx, body) = channel_body();
    let mut rx = d.events.subscribe();
    let until = q.int("until").ok().flatten();
    tokio::spawn(async move {
        loop {
            let wait = match until {
                Some(u) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0);
                    if now >= u {
                        return;
                    }
                    Duration::from_secs((u - now) as u64)
                }
                None => Duration::from_secs(3600),
            };
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Ok(ev)) => {
                    let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                    line.push(b'\n');
                    if tx.send(Bytes::from(line)).is_err() {
                        return;
                    }
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(_)) => return,
                Err(_) if until.is_some() => return,
                Err(_) => continue,
            }
        }
    });
    streamed("application/json", body)
}

const CONFIG_FIELDS: &[&str] = &[
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Healthcheck",
    "ArgsEscaped",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "NetworkDisabled",
    "MacAddress",
    "OnBuild",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "Shell",
    "HostConfig",
    "NetworkingConfig",
    "Platform",
];

fn str_list(v: &Value, what: &str) -> Result<Option<Vec<String>>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(vec![s.clone()])),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad(format!("{what} must be a list of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(ApiError::bad(format!("{what} must be a list of strings"))),
    }
}

fn valid_name(n: &str) -> bool {
    let n = n.trim_start_matches('/');
    n.len() >= 2
        && n.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn random_name(d: &Daemon) -> String {
    const A: &[&str] = &[
        "brave", "calm", "eager", "gentle", "jolly", "keen", "lucid", "merry", "nimble", "proud",
        "quiet", "swift", "tender", "vivid", "witty", "zealous",
    ];
    const B: &[&str] = &[
        "albattani",
        "babbage",
        "curie",
        "darwin",
        "euler",
        "fermat",
        "galileo",
        "hopper",
        "lovelace",
        "noether",
        "pascal",
        "ritchie",
        "shannon",
        "turing",
        "wozniak",
        "yalow",
    ];
    loop {
        let id = new_id();
        let b = id.as_bytes();
        let n = format!(
            "{}_{}",
            A[(b[0] as usize) % A.len()],
            B[(b[1] as usize) % B.len()]
        );
        if d.find(&n).is_err() {
            return n;
        }
    }
}

/// `POST /containers/create`.
fn create(d: &Arc<Daemon>, q: &Query, v: Value) -> Result<Resp, ApiError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad("the container config must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| !CONFIG_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad(format!(
            "unknown field {k:?} in the container config"
        )));
    }
    let name = match q.get("name").filter(|n| !n.is_empty()) {
        Some(n) => {
            if !valid_name(n) {
                return Err(ApiError::bad(format!(
                    "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                )));
            }
            let n = n.trim_start_matches('/').to_owned();
            if let Ok(c) = d.find(&n) {
                if c.record().name == n {
                    return Err(ApiError::conflict(format!(
                        "Conflict. The container name \"/{n}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                        c.id
                    )));
                }
            }
            n
        }
        None => random_name(d),
    };
    let image = v["Image"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad("no image specified (the Image field is required)"))?;
    let shown = image
        .parse::<berth_image::Reference>()
        .map(|r| r.familiar())
        .unwrap_or_else(|_| image.to_owned());
    let img = d.images.resolve(image).map_err(|e| match e {
        berth_image::ImageError::NotFound(_) => {
            ApiError::not_found(format!("No such image: {shown}"))
        }
        other => other.into(),
    })?;
    let ic = d.images.runtime_config(&img)?;
    let hc = match &v["HostConfig"] {
        Value::Null => j!({}),
        h @ Value::Object(_) => h.clone(),
        _ => return Err(ApiError::bad("HostConfig must be an object")),
    };
    let isolation = match hc["Isolation"].as_str().unwrap_or("") {
        "" | "default" => d.opts.default_isolation,
        "process" => Isolation::Process,
        "vm" | "hyperv" | "microvm" => Isolation::Vm,
        other => {
            return Err(ApiError::bad(format!(
                "invalid isolation {other:?}: berth offers \"vm\" (the default) and \"process\""
            )))
        }
    };
    if isolation == Isolation::Vm {
        crate::vm_check()?;
    }
    for (field, what) in [
        ("Binds", "bind mounts"),
        ("Mounts", "mounts and volumes"),
        ("VolumesFrom", "volumes-from"),
        ("Links", "links"),
        ("Devices", "devices"),
    ] {
        if hc[field].as_array().is_some_and(|a| !a.is_empty()) {
            return Err(ApiError::not_implemented(what));
        }
    }
    if hc["PortBindings"]
        .as_object()
        .is_some_and(|o| !o.is_empty())
    {
        return Err(ApiError::not_implemented("publishing ports"));
    }
    if hc["Privileged"].as_bool() == Some(true) {
        return Err(ApiError::not_implemented("privileged containers"));
    }
    match hc["NetworkMode"].as_str().unwrap_or("") {
        "" | "default" | "bridge" | "none" => {}
        other => {
            return Err(ApiError::not_implemented(&format!(
                "network mode {other:?}"
            )))
        }
    }
    let ep_given = !v["Entrypoint"].is_null();
    let entrypoint = str_list(&v["Entrypoint"], "Entrypoint")?.unwrap_or_else(|| {
        if ep_given {
            vec![]
        } else {
            ic.entrypoint.clone().unwrap_or_default()
        }
    });
    let cmd = match str_list(&v["Cmd"], "Cmd")? {
        Some(c) => c,
        None if ep_given => vec![],
        None => ic.cmd.clone().unwrap_or_default(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(ApiError::bad("No command specified"));
    }
    let mut env: Vec<String> = ic.env.clone().unwrap_or_default();
    for e in str_list(&v["Env"], "Env")?.unwrap_or_default() {
        let k = e.split('=').next().unwrap_or("").to_owned();
        env.retain(|x| x.split('=').next() != Some(k.as_str()));
        env.push(e);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    let int = |v: &Value, what: &str| -> Result<i64, ApiError> {
        match v {
            Value::Null => Ok(0),
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| ApiError::bad(format!("{what} must be an integer"))),
            _ => Err(ApiError::bad(format!("{what} must be an integer"))),
        }
    };
    let memory = int(&hc["Memory"], "Memory")?;
    let nano_cpus = int(&hc["NanoCpus"], "NanoCpus")?;
    let pids_limit = int(&hc["PidsLimit"], "PidsLimit")?.max(0);
    if memory < 0 || (memory > 0 && memory < 6 << 20) {
        return Err(ApiError::bad("Minimum memory limit allowed is 6MB"));
    }
    if nano_cpus < 0 {
        return Err(ApiError::bad(
            "Range of CPUs is from 0.01 to the number of CPUs",
        ));
    }
    let id = new_id();
    let labels = v["Labels"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let rec = Record {
        id: id.clone(),
        name,
        created: now_rfc3339(),
        image: image.to_owned(),
        image_id: img.id.to_string(),
        args,
        env,
        cwd: v["WorkingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or(ic.working_dir.clone())
            .unwrap_or_default(),
        user: v["User"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or(ic.user.clone())
            .unwrap_or_default(),
        hostname: v["Hostname"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| id[..12].to_owned()),
        tty: v["Tty"].as_bool().unwrap_or(false),
        open_stdin: v["OpenStdin"].as_bool().unwrap_or(false),
        isolation,
        auto_remove: hc["AutoRemove"].as_bool().unwrap_or(false),
        memory,
        nano_cpus,
        pids_limit,
        stop_signal: v["StopSignal"]
            .as_str()
            .map(str::to_owned)
            .or(ic.stop_signal.clone())
            .unwrap_or_else(|| "SIGTERM".into()),
        stop_timeout: v["StopTimeout"].as_i64().unwrap_or(10),
        labels,
        config: v.clone(),
        host_config: hc,
        state: State {
            status: "created".into(),
            ..Default::default()
        },
    };
    parse_signal(&rec.stop_signal)?;
    std::fs::create_dir_all(d.dir(&id)).map_err(|e| ApiError::internal(e.to_string()))?;
    d.save(&rec);
    d.event(
        "container",
        "create",
        &id,
        j!({"name": rec.name, "image": rec.image}),
    );
    d.insert(rec);
    Ok(json(StatusCode::CREATED, &j!({"Id": id, "Warnings": []})))
}

fn status_line(r: &Record) -> String {
    let ago = |t: &str| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let s = (now - unix_of(t)).max(0);
        match s {
            0..=1 => "Less than a second".to_owned(),
            2..=59 => format!("{s} seconds"),
            60..=119 => "About a minute".to_owned(),
            120..=3599 => format!("{} minutes", s / 60),
            _ => format!("{} hours", s / 3600),
        }
    };
    match r.state.status.as_str() {
        "running" => format!("Up {}", ago(&r.state.started_at)),
        "exited" => format!(
            "Exited ({}) {} ago",
            r.state.exit_code,
            ago(&r.state.finished_at)
        ),
        "created" => "Created".into(),
        s => s.to_owned(),
    }
}

fn list(d: &Daemon, q: &Query) -> Result<Resp, ApiError> {
    let all = q.flag("all", false);
    let filters: Value = match q.get("filters") {
        Some(f) if !f.is_empty() => {
            serde_json::from_str(f).map_err(|e| ApiError::bad(format!("invalid filters: {e}")))?
        }
        _ => j!({}),
    };
    let fvals = |k: &str| -> Vec<String> {
        match &filters[k] {
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            Value::Object(o) => o.keys().cloned().collect(),
            _ => vec![],
        }
    };
    let (fstatus, fname, fid, flabel) =
        (fvals("status"), fvals("name"), fvals("id"), fvals("label"));
    let mut recs: Vec<Record> = d
        .containers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(|c| c.record())
        .collect();
    recs.sort_by(|a, b| b.created.cmp(&a.created));
    let out: Vec<Value> = recs
        .into_iter()
        .filter(|r| all || r.state.running || !fstatus.is_empty())
        .filter(|r| fstatus.is_empty() || fstatus.contains(&r.state.status))
        .filter(|r| fname.is_empty() || fname.iter().any(|n| r.name.contains(n.trim_start_matches('/'))))
        .filter(|r| fid.is_empty() || fid.iter().any(|i| r.id.starts_with(i)))
        .filter(|r| flabel.is_empty() || flabel.iter().all(|l| match l.split_once('=') {
            Some((k, v)) => r.labels.get(k).map(String::as_str) == Some(v),
            None => r.labels.contains_key(l),
        }))
        .take(q.int("limit")?.filter(|l| *l > 0).map(|l| l as usize).unwrap_or(usize::MAX))
        .map(|r| j!({
            "Id": r.id, "Names": [format!("/{}", r.name)], "Image": r.image, "ImageID": r.image_id,
            "Command": r.args.join(" "), "Created": unix_of(&r.created), "Ports": [], "Labels": r.labels,
            "State": r.state.status, "Status": status_line(&r), "HostConfig": {"NetworkMode": "none"},
            "NetworkSettings": {"Networks": {}}, "Mounts": [],
        }))
        .collect();
    Ok(json(StatusCode::OK, &out))
}

fn inspect(d: &Daemon, c: &Ctr) -> Value {
    let r = c.record();
    let mut hc = r.host_config.clone();
    if let Some(o) = hc.as_object_mut() {
        o.insert(
            "Isolation".into(),
            j!(match r.isolation {
                Isolation::Vm => "vm",
                Isolation::Process => "process",
            }),
        );
        o.entry("NetworkMode").or_insert(j!("none"));
    }
    j!({
        "Id": r.id, "Created": r.created, "Path": r.args.first(), "Args": r.args.get(1..).unwrap_or(&[]),
        "State": {
            "Status": r.state.status, "Running": r.state.running, "Paused": false, "Restarting": false,
            "OOMKilled": false, "Dead": false, "Pid": r.state.pid, "ExitCode": r.state.exit_code,
            "Error": r.state.error,
            "StartedAt": if r.state.started_at.is_empty() { "0001-01-01T00:00:00Z".to_owned() } else { r.state.started_at.clone() },
            "FinishedAt": if r.state.finished_at.is_empty() { "0001-01-01T00:00:00Z".to_owned() } else { r.state.finished_at.clone() },
        },
        "Image": r.image_id, "ResolvConfPath": "", "HostnamePath": "", "HostsPath": "",
        "LogPath": d.log_path(&r.id), "Name": format!("/{}", r.name), "RestartCount": 0,
        "Driver": "berth-overlay", "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "HostConfig": hc,
        "Config": {
            "Hostname": r.hostname, "Domainname": "", "User": r.user,
            "AttachStdin": r.config["AttachStdin"].as_bool().unwrap_or(false),
            "AttachStdout": r.config["AttachStdout"].as_bool().unwrap_or(false),
            "AttachStderr": r.config["AttachStderr"].as_bool().unwrap_or(false),
            "Tty": r.tty, "OpenStdin": r.open_stdin, "StdinOnce": r.config["StdinOnce"].as_bool().unwrap_or(false),
            "Env": r.env, "Cmd": r.config["Cmd"], "Image": r.image, "Volumes": null, "WorkingDir": r.cwd,
            "Entrypoint": r.config["Entrypoint"], "Labels": r.labels, "StopSignal": r.stop_signal,
        },
        "NetworkSettings": {"Networks": {}, "Ports": {}}, "Mounts": [],
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
}

async fn start(d: &Arc<Daemon>, c: Arc<Ctr>) -> Result<Resp, ApiError> {
    let _op = c.op.lock().await;
    let (d2, c2) = (d.clone(), c.clone());
    if let Err(e) = blocking(move || d2.start_blocking(&c2)).await {
        // A --rm container that could not start is removed, as Docker does (the CLI waits
        // for that before it reports the error).
        if c.record().auto_remove && e.status != StatusCode::NOT_MODIFIED {
            let _ = d.remove_now(&c);
        }
        return Err(e);
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// Waits until the container's phase satisfies `done`, up to `t`.
async fn wait_phase(c: &Ctr, t: Duration, done: impl Fn(Phase) -> bool) -> bool {
    let mut rx = c.phase.subscribe();
    let r = tokio::time::timeout(t, async {
        loop {
            if done(*rx.borrow_and_update()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    r.is_ok()
}

fn exited(p: Phase) -> bool {
    matches!(p, Phase::Exited(_) | Phase::Removed(_))
}

async fn stop(d: &Arc<Daemon>, c: Arc<Ctr>, q: &Query) -> Result<Resp, ApiError> {
    let _op = c.op.lock().await;
    let rec = c.record();
    if !rec.state.running {
        return Err(ApiError {
            status: StatusCode::NOT_MODIFIED,
            message: String::new(),
        });
    }
    let t = q.int("t")?.unwrap_or(rec.stop_timeout).max(0);
    let sig = parse_signal(q.get("signal").unwrap_or(&rec.stop_signal))?;
    let (d2, r2) = (d.clone(), rec.clone());
    blocking(move || d2.signal(&r2, sig, false)).await?;
    if !wait_phase(&c, Duration::from_secs(t as u64), exited).await {
        let (d2, r2) = (d.clone(), rec.clone());
        let _ = blocking(move || d2.signal(&r2, libc::SIGKILL, true)).await;
        wait_phase(&c, Duration::from_secs(10), exited).await;
    }
    d.event("container", "stop", &rec.id, j!({"name": rec.name}));
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn kill(d: &Arc<Daemon>, c: Arc<Ctr>, q: &Query) -> Result<Resp, ApiError> {
    let rec = c.record();
    let sig = parse_signal(q.get("signal").unwrap_or("SIGKILL"))?;
    if !rec.state.running {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            rec.id
        )));
    }
    let d2 = d.clone();
    blocking(move || d2.signal(&rec, sig, sig == libc::SIGKILL)).await?;
    if sig == libc::SIGKILL {
        wait_phase(&c, Duration::from_secs(10), exited).await;
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

fn wait(c: Arc<Ctr>, q: &Query) -> Result<Resp, ApiError> {
    let cond = q.get("condition").unwrap_or("not-running").to_owned();
    if !matches!(cond.as_str(), "not-running" | "next-exit" | "removed" | "") {
        return Err(ApiError::bad(format!("invalid condition: {cond:?}")));
    }
    let (tx, body) = channel_body();
    let mut rx = c.phase.subscribe();
    tokio::spawn(async move {
        let first = *rx.borrow_and_update();
        let mut code = match first {
            Phase::Exited(s) | Phase::Removed(s) => Some(s),
            _ => None,
        };
        let done = |p: Phase, fresh: bool| match (cond.as_str(), p) {
            ("removed", Phase::Removed(_)) => true,
            ("removed", _) => false,
            ("next-exit", Phase::Exited(_) | Phase::Removed(_)) => fresh,
            (_, Phase::Exited(_) | Phase::Removed(_)) => true,
            _ => false,
        };
        if !done(first, false) {
            loop {
                if rx.changed().await.is_err() {
                    break;
                }
                let p = *rx.borrow_and_update();
                if let Phase::Exited(s) | Phase::Removed(s) = p {
                    code = Some(s);
                }
                if done(p, true) {
                    break;
                }
            }
        }
        let body = j!({"StatusCode": code.unwrap_or(0), "Error": null});
        let _ = tx.send(Bytes::from(format!("{body}\n")));
    });
    Ok(streamed("application/json", body))
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers().get("Upgrade").is_some()
}

fn upgraded_resp(tty: bool) -> Resp {
    let mut r = empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = r.headers_mut();
    h.insert("Connection", "Upgrade".parse().expect("static"));
    h.insert("Upgrade", "tcp".parse().expect("static"));
    let ct = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    h.insert("Content-Type", ct.parse().expect("static"));
    r
}

/// The agent streams an attacher or exec needs: outputs (with their stream number) and
/// an input.
struct AgentStreams {
    outs: Vec<(u8, std::os::unix::net::UnixStream)>,
    input: Option<std::os::unix::net::UnixStream>,
}

fn open_streams(
    ep: &berth_protocol::client::Endpoint,
    id: &str,
    exec_id: Option<String>,
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<AgentStreams, String> {
    let open = |k: StreamKind| {
        ep.open(Channel::Stdio {
            container: id.to_owned(),
            exec_id: exec_id.clone(),
            stream: k,
        })
        .map_err(|e| e.to_string())
    };
    if tty {
        let s = open(StreamKind::Pty)?;
        let input = if stdin {
            Some(s.try_clone().map_err(|e| e.to_string())?)
        } else {
            None
        };
        return Ok(AgentStreams {
            outs: vec![(1, s)],
            input,
        });
    }
    let mut outs = Vec::new();
    if stdout {
        outs.push((1, open(StreamKind::Stdout)?));
    }
    if stderr {
        outs.push((2, open(StreamKind::Stderr)?));
    }
    let input = if stdin {
        Some(open(StreamKind::Stdin)?)
    } else {
        None
    };
    Ok(AgentStreams { outs, input })
}

/// Copies between an upgraded connection and the agent's streams until the outputs end.
/// `done`, when given, is awaited before the connection closes (an exec's exit code is
/// recorded by then, as the docker CLI reads it once right after the stream ends).
async fn relay(
    up: hyper::upgrade::Upgraded,
    tty: bool,
    s: AgentStreams,
    done: Option<tokio::task::JoinHandle<()>>,
) {
    let io = TokioIo::new(up);
    let (mut rd, wr) = tokio::io::split(io);
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    let mut tasks = Vec::new();
    for (kind, out) in s.outs {
        let _ = out.set_nonblocking(true);
        let Ok(mut out) = tokio::net::UnixStream::from_std(out) else {
            continue;
        };
        let wr = wr.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match out.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let data = if tty {
                    Bytes::copy_from_slice(&buf[..n])
                } else {
                    frame(kind, &buf[..n])
                };
                if wr.lock().await.write_all(&data).await.is_err() {
                    break;
                }
            }
        }));
    }
    let input = s.input.and_then(|i| {
        let _ = i.set_nonblocking(true);
        tokio::net::UnixStream::from_std(i).ok()
    });
    let in_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        match input {
            Some(mut input) => {
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if input.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                // The client half-closed: the process sees EOF on stdin.
                if !tty {
                    let _ = input.shutdown().await;
                }
            }
            None => while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {},
        }
    });
    for t in tasks {
        let _ = t.await;
    }
    if let Some(d) = done {
        let _ = d.await;
    }
    let _ = wr.lock().await.shutdown().await;
    in_task.abort();
}

fn attach(
    d: &Arc<Daemon>,
    c: Arc<Ctr>,
    q: &Query,
    mut req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    if !is_upgrade(&req) {
        return Err(ApiError::bad(
            "attach needs an HTTP upgrade (send Connection: Upgrade and Upgrade: tcp)",
        ));
    }
    let rec = c.record();
    let (stdin, stdout, stderr) = (
        q.flag("stdin", false) && rec.open_stdin,
        q.flag("stdout", false),
        q.flag("stderr", false),
    );
    let phase = *c.phase.borrow();
    let (ready_rx, ack_tx) = match phase {
        Phase::Created => {
            let (rtx, rrx) = tokio::sync::oneshot::channel();
            let (atx, arx) = tokio::sync::oneshot::channel();
            c.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(PendingAttach {
                    ready: rtx,
                    ack: arx,
                });
            (Some(rrx), Some(atx))
        }
        Phase::Running => (None, None),
        _ => {
            return Err(ApiError::conflict(
                "You cannot attach to a stopped container, start it first",
            ))
        }
    };
    let on_up = hyper::upgrade::on(&mut req);
    let d = d.clone();
    let resp = upgraded_resp(rec.tty);
    tokio::spawn(async move {
        let ep = match ready_rx {
            Some(rx) => match rx.await {
                Ok(ep) => ep,
                Err(_) => return,
            },
            None => d.endpoint(&rec),
        };
        let id = rec.id.clone();
        let tty = rec.tty;
        let streams = tokio::task::spawn_blocking(move || {
            open_streams(&ep, &id, None, tty, stdin, stdout, stderr)
        })
        .await;
        if let Some(a) = ack_tx {
            let _ = a.send(());
        }
        let Ok(Ok(streams)) = streams else { return };
        let Ok(up) = on_up.await else { return };
        relay(up, tty, streams, None).await;
    });
    Ok(resp)
}

async fn resize(
    d: &Arc<Daemon>,
    c: Arc<Ctr>,
    exec_id: Option<String>,
    q: &Query,
) -> Result<Resp, ApiError> {
    let (h, w) = (q.int("h")?.unwrap_or(0), q.int("w")?.unwrap_or(0));
    if !(0..=u16::MAX as i64).contains(&h) || !(0..=u16::MAX as i64).contains(&w) {
        return Err(ApiError::bad("invalid terminal size"));
    }
    let rec = c.record();
    if !rec.state.running {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            rec.id
        )));
    }
    let d = d.clone();
    blocking(move || {
        d.call(
            &rec,
            &AReq::ResizeTty {
                id: rec.id.clone(),
                exec_id,
                rows: h as u16,
                cols: w as u16,
            },
        )
        .map(|_| ())
    })
    .await?;
    Ok(empty(StatusCode::OK))
}

fn logs(d: &Arc<Daemon>, c: Arc<Ctr>, q: &Query) -> Result<Resp, ApiError> {
    let rec = c.record();
    let (want_out, want_err) = (q.flag("stdout", false), q.flag("stderr", false));
    if !want_out && !want_err {
        return Err(ApiError::bad("You must choose at least one stream"));
    }
    let follow = q.flag("follow", false);
    let timestamps = q.flag("timestamps", false);
    let since: f64 = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let until: f64 = q.get("until").and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let tail: Option<usize> = match q.get("tail") {
        None | Some("all") | Some("") => None,
        Some(t) => Some(
            t.parse()
                .map_err(|_| ApiError::bad(format!("invalid tail: {t:?}")))?,
        ),
    };
    let path = d.log_path(&rec.id);
    let tty = rec.tty;
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        let emit = |line: &str| -> Option<Bytes> {
            let v: Value = serde_json::from_str(line).ok()?;
            let stream = v["stream"].as_str().unwrap_or("stdout");
            if (stream == "stdout" && !want_out) || (stream == "stderr" && !want_err) {
                return None;
            }
            let time = v["time"].as_str().unwrap_or("");
            let secs = unix_of(time) as f64
                + time
                    .get(20..29)
                    .and_then(|n| n.trim_end_matches('Z').parse::<f64>().ok())
                    .map(|n| n / 1e9)
                    .unwrap_or(0.0);
            if secs < since || (until > 0.0 && secs > until) {
                return None;
            }
            let mut text = v["log"].as_str().unwrap_or("").to_owned();
            if timestamps {
                text = format!("{time} {text}");
            }
            Some(if tty {
                Bytes::from(text)
            } else {
                frame(if stream == "stderr" { 2 } else { 1 }, text.as_bytes())
            })
        };
        let mut file = tokio::fs::File::open(&path).await.ok();
        let mut buf = String::new();
        if let Some(f) = file.as_mut() {
            let _ = f.read_to_string(&mut buf).await;
        }
        let complete = buf.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let mut carry = buf[complete..].to_owned();
        let lines: Vec<&str> = buf[..complete].lines().collect();
        let start = tail.map(|t| lines.len().saturating_sub(t)).unwrap_or(0);
        for l in &lines[start..] {
            if let Some(b) = emit(l) {
                if tx.send(b).is_err() {
                    return;
                }
            }
        }
        if !follow {
            return;
        }
        let mut rx = c.phase.subscribe();
        let mut grace = false;
        loop {
            let ended = !matches!(*rx.borrow_and_update(), Phase::Running | Phase::Created);
            if ended && !grace {
                // The agent's log writer may be a moment behind the exit: one last look.
                grace = true;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if file.is_none() {
                file = tokio::fs::File::open(&path).await.ok();
            }
            let mut more = String::new();
            if let Some(f) = file.as_mut() {
                let _ = f.read_to_string(&mut more).await;
            }
            carry.push_str(&more);
            while let Some(i) = carry.find('\n') {
                let l: String = carry.drain(..=i).collect();
                if let Some(b) = emit(l.trim_end_matches('\n')) {
                    if tx.send(b).is_err() {
                        return;
                    }
                }
            }
            if ended && more.is_empty() {
                return;
            }
            if tx.is_closed() {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    });
    Ok(streamed(
        if tty {
            "application/vnd.docker.raw-stream"
        } else {
            "application/vnd.docker.multiplexed-stream"
        },
        body,
    ))
}

async fn top(d: &Arc<Daemon>, c: Arc<Ctr>) -> Result<Resp, ApiError> {
    let rec = c.record();
    if !rec.state.running {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            rec.id
        )));
    }
    let (d2, r2) = (d.clone(), rec.clone());
    let pids =
        match blocking(move || d2.call(&r2, &AReq::ListProcesses { id: r2.id.clone() })).await? {
            ARes::Processes { pids } => pids,
            other => return Err(ApiError::internal(format!("agent answered {other:?}"))),
        };
    let procs: Vec<Vec<String>> = pids
        .iter()
        .map(|p| {
            let cmd = match rec.isolation {
                Isolation::Process => std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|b| {
                        b.split(|c| *c == 0)
                            .filter(|s| !s.is_empty())
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default(),
                Isolation::Vm => String::new(),
            };
            vec![p.to_string(), cmd]
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &j!({"Titles": ["PID", "CMD"], "Processes": procs}),
    ))
}

async fn stats(d: &Arc<Daemon>, c: Arc<Ctr>, q: &Query) -> Result<Resp, ApiError> {
    let rec = c.record();
    let stream = q.flag("stream", true) && !q.flag("one-shot", false);
    let one = |d: Arc<Daemon>, rec: Record| async move {
        if !rec.state.running {
            return Ok::<Value, ApiError>(
                j!({"read": now_rfc3339(), "id": rec.id, "name": format!("/{}", rec.name), "memory_stats": {}, "cpu_stats": {}, "precpu_stats": {}, "pids_stats": {}}),
            );
        }
        let r2 = rec.clone();
        let s = match blocking(move || d.call(&r2, &AReq::Stats { id: r2.id.clone() })).await? {
            ARes::Stats(s) => s,
            other => return Err(ApiError::internal(format!("agent answered {other:?}"))),
        };
        let sv = serde_json::to_value(&s).unwrap_or_default();
        Ok(j!({
            "read": now_rfc3339(), "id": rec.id, "name": format!("/{}", rec.name),
            "memory_stats": {"usage": sv["memory_bytes"], "limit": sv["memory_limit_bytes"]},
            "cpu_stats": {"cpu_usage": {"total_usage": s.cpu_usec * 1000}, "online_cpus": 1},
            "precpu_stats": {"cpu_usage": {"total_usage": 0}},
            "pids_stats": {"current": sv["pids"]},
            "berth": sv,
        }))
    };
    if !stream {
        let v = one(d.clone(), rec).await?;
        return Ok(json(StatusCode::OK, &v));
    }
    let (tx, body) = channel_body();
    let d = d.clone();
    tokio::spawn(async move {
        loop {
            let rec = c.record();
            let running = rec.state.running;
            let Ok(v) = one(d.clone(), rec).await else {
                return;
            };
            if tx.send(Bytes::from(format!("{v}\n"))).is_err() || !running {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(streamed("application/json", body))
}

fn rename(d: &Arc<Daemon>, c: Arc<Ctr>, q: &Query) -> Result<Resp, ApiError> {
    let n = q
        .get("name")
        .unwrap_or("")
        .trim_start_matches('/')
        .to_owned();
    if !valid_name(&n) {
        return Err(ApiError::bad(format!(
            "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    if let Ok(o) = d.find(&n) {
        if o.record().name == n {
            return Err(ApiError::conflict(format!(
                "Conflict. The container name \"/{n}\" is already in use by container \"{}\"",
                o.id
            )));
        }
    }
    let rec = {
        let mut r = c.rec.lock().unwrap_or_else(|e| e.into_inner());
        r.name = n;
        r.clone()
    };
    d.save(&rec);
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn remove(d: &Arc<Daemon>, c: Arc<Ctr>, q: &Query) -> Result<Resp, ApiError> {
    let _op = c.op.lock().await;
    let rec = c.record();
    if rec.state.running {
        if !q.flag("force", false) {
            return Err(ApiError::conflict(format!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                rec.id
            )));
        }
        let (d2, r2) = (d.clone(), rec.clone());
        let _ = blocking(move || d2.signal(&r2, libc::SIGKILL, true)).await;
        wait_phase(&c, Duration::from_secs(10), exited).await;
    }
    if matches!(*c.phase.borrow(), Phase::Removed(_)) {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    d.remove_now(&c)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn prune(d: &Arc<Daemon>) -> Result<Resp, ApiError> {
    let victims: Vec<Arc<Ctr>> = d
        .containers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|c| !c.record().state.running)
        .cloned()
        .collect();
    let mut deleted = Vec::new();
    for c in victims {
        if d.remove_now(&c).is_ok() {
            deleted.push(c.id.clone());
        }
    }
    Ok(json(
        StatusCode::OK,
        &j!({"ContainersDeleted": deleted, "SpaceReclaimed": 0}),
    ))
}

fn exec_get(d: &Daemon, id: &str) -> Result<ExecRec, ApiError> {
    d.execs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))
}

fn exec_create(d: &Arc<Daemon>, c: Arc<Ctr>, v: Value) -> Result<Resp, ApiError> {
    let rec = c.record();
    if !rec.state.running {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            rec.id
        )));
    }
    let cmd = str_list(&v["Cmd"], "Cmd")?.unwrap_or_default();
    if cmd.is_empty() {
        return Err(ApiError::bad("No exec command specified"));
    }
    let id = new_id();
    let e = ExecRec {
        id: id.clone(),
        container: rec.id.clone(),
        cmd,
        tty: v["Tty"].as_bool().unwrap_or(false),
        stdin: v["AttachStdin"].as_bool().unwrap_or(false),
        stdout: v["AttachStdout"].as_bool().unwrap_or(false),
        stderr: v["AttachStderr"].as_bool().unwrap_or(false),
        env: str_list(&v["Env"], "Env")?.unwrap_or_default(),
        cwd: v["WorkingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        user: v["User"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        running: false,
        exit_code: None,
        pid: 0,
    };
    d.execs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), e);
    Ok(json(StatusCode::CREATED, &j!({"Id": id})))
}

fn exec_inspect(e: &ExecRec) -> Value {
    j!({
        "ID": e.id, "Running": e.running, "ExitCode": e.exit_code, "ContainerID": e.container, "Pid": e.pid,
        "OpenStdin": e.stdin, "OpenStdout": e.stdout, "OpenStderr": e.stderr, "CanRemove": false,
        "ProcessConfig": {"tty": e.tty, "entrypoint": e.cmd.first(), "arguments": e.cmd.get(1..).unwrap_or(&[]), "privileged": false},
    })
}

async fn exec_start(
    d: &Arc<Daemon>,
    id: &str,
    mut req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let e = exec_get(d, id)?;
    let upgrade = is_upgrade(&req);
    let on_up = if upgrade {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let v = body_json(req).await?;
    let detach = v["Detach"].as_bool().unwrap_or(false);
    let c = d.find(&e.container)?;
    let rec = c.record();
    if !rec.state.running {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            rec.id
        )));
    }
    if e.running || e.exit_code.is_some() {
        return Err(ApiError::conflict(format!(
            "Error: Exec command {} is already running",
            e.id
        )));
    }
    if !detach && !upgrade {
        return Err(ApiError::bad("exec start needs an HTTP upgrade (send Connection: Upgrade and Upgrade: tcp), or Detach"));
    }
    let mut env = rec.env.clone();
    for x in &e.env {
        let k = x.split('=').next().unwrap_or("");
        env.retain(|y| y.split('=').next() != Some(k));
        env.push(x.clone());
    }
    let mut process = berth_container::spec::docker_default(e.cmd.clone())
        .process()
        .clone()
        .ok_or_else(|| ApiError::internal("no default process"))?;
    process.set_env(Some(env));
    process.set_terminal(Some(e.tty));
    process.set_cwd(std::path::PathBuf::from(e.cwd.clone().unwrap_or_else(
        || {
            if rec.cwd.is_empty() {
                "/".into()
            } else {
                rec.cwd.clone()
            }
        },
    )));
    let user = e.user.clone().unwrap_or_else(|| rec.user.clone());
    if !user.is_empty() {
        let mut u = process.user().clone();
        u.set_username(Some(user));
        process.set_user(u);
    }
    let spec = berth_protocol::ExecSpec {
        process,
        open_stdin: e.stdin,
    };
    let (d2, r2, e2) = (d.clone(), rec.clone(), e.clone());
    let pid = blocking(move || {
        match d2.call(
            &r2,
            &AReq::Exec {
                id: r2.id.clone(),
                exec_id: e2.id.clone(),
                spec: Box::new(spec),
            },
        )? {
            ARes::Created { pid } => Ok(pid),
            ARes::Ok => Ok(0),
            other => Err(ApiError::internal(format!("agent answered {other:?}"))),
        }
    })
    .await?;
    // The agent creates the exec's process at StartExec; its output waits in the pipes
    // until the streams are connected right after.
    let (d2, r2, eid) = (d.clone(), rec.clone(), e.id.clone());
    blocking(move || {
        d2.call(
            &r2,
            &AReq::StartExec {
                id: r2.id.clone(),
                exec_id: eid,
            },
        )
        .map(|_| ())
    })
    .await?;
    let ep = d.endpoint(&rec);
    let (e3, ep2, cid) = (e.clone(), ep.clone(), rec.id.clone());
    let streams = if detach {
        AgentStreams {
            outs: vec![],
            input: None,
        }
    } else {
        blocking(move || {
            open_streams(
                &ep2,
                &cid,
                Some(e3.id.clone()),
                e3.tty,
                e3.stdin,
                e3.stdout || e3.tty,
                e3.stderr,
            )
            .map_err(ApiError::internal)
        })
        .await?
    };
    if let Some(x) = d
        .execs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&e.id)
    {
        x.running = true;
        x.pid = i64::from(pid);
    }
    // Record the exit code when it exits.
    let (d2, r2, eid) = (d.clone(), rec.clone(), e.id.clone());
    let waiter = tokio::task::spawn_blocking(move || {
        let code = match d2.call(
            &r2,
            &AReq::Wait {
                id: r2.id.clone(),
                exec_id: Some(eid.clone()),
            },
        ) {
            Ok(ARes::Exited { status }) => i64::from(status),
            _ => 255,
        };
        if let Some(x) = d2
            .execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&eid)
        {
            x.running = false;
            x.exit_code = Some(code);
        }
    });
    if detach {
        return Ok(empty(StatusCode::OK));
    }
    let tty = e.tty;
    if let Some(on_up) = on_up {
        tokio::spawn(async move {
            if let Ok(up) = on_up.await {
                relay(up, tty, streams, Some(waiter)).await;
            }
        });
    }
    Ok(upgraded_resp(tty))
}
