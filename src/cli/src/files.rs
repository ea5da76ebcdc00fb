//! `berth cp`, `berth export` and `berth diff`: files to and from a container through
//! berthd's archive API, as the docker CLI does it (tars both ways; the daemon resolves
//! every container path inside the container's root).

use crate::client::{daemon_err, enc, error_of, json_reply, read_body, Conn, Fail};
use berth_api::docker;
use bytes::Bytes;
use std::io::Write;
use std::path::{Path, PathBuf};

fn fail(m: impl Into<String>) -> Fail {
    Fail(m.into(), 1)
}

/// `CONTAINER:PATH` split; None for a host path.
fn split(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    arg.split_once(':').filter(|(c, _)| !c.is_empty())
}

/// A bodiless request; an error status becomes the daemon's message (a 404 passes when
/// `missing_ok`).
async fn ask(
    c: &Conn,
    method: &str,
    path: &str,
    missing_ok: bool,
) -> Result<crate::client::Resp, Fail> {
    let r = c.send(method, path, None, None, false).await?;
    let s = r.status();
    if s.is_success() || (missing_ok && s.as_u16() == 404) {
        Ok(r)
    } else {
        Err(error_of(r).await)
    }
}

fn archive_path(ctr: &str, path: &str) -> String {
    format!("/containers/{}/archive?path={}", enc(ctr), enc(path))
}

/// A container path's stat (the `X-Docker-Container-Path-Stat` header), None if missing.
async fn stat(c: &Conn, ctr: &str, path: &str) -> Result<Option<serde_json::Value>, Fail> {
    let r = ask(c, "HEAD", &archive_path(ctr, path), true).await?;
    if r.status().as_u16() == 404 {
        return Ok(None);
    }
    let h = r
        .headers()
        .get("X-Docker-Container-Path-Stat")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(h.as_bytes())
        .map_err(|e| daemon_err(format!("bad path stat from the daemon: {e}")))?;
    Ok(serde_json::from_slice(&raw).ok())
}

fn is_dir(st: &serde_json::Value) -> bool {
    st["mode"].as_u64().is_some_and(|m| m & (1 << 31) != 0)
}

/// Runs `cp SRC DEST`; `archive`: keep owners (`-a`).
pub(crate) async fn cp(c: &Conn, src: String, dest: String, archive: bool) -> Result<u8, Fail> {
    // docker cp exits 1 on any failure, the daemon's included.
    cp_inner(c, src, dest, archive)
        .await
        .map_err(|Fail(m, _)| Fail(m, 1))
}

async fn cp_inner(c: &Conn, src: String, dest: String, archive: bool) -> Result<u8, Fail> {
    match (split(&src), split(&dest)) {
        (Some((ctr, path)), None) => copy_out(c, ctr, path, &dest).await,
        (None, Some((ctr, path))) => copy_in(c, &src, ctr, path, archive).await,
        (Some(_), Some(_)) => Err(fail("copying between containers is not supported")),
        (None, None) => Err(fail(
            "must specify at least one container source (CONTAINER:PATH)",
        )),
    }
}

async fn copy_out(c: &Conn, ctr: &str, path: &str, dest: &str) -> Result<u8, Fail> {
    let r = ask(c, "GET", &archive_path(ctr, path), false).await?;
    let mut tar = Vec::new();
    read_body(r, |b| tar.extend_from_slice(b)).await?;
    if dest == "-" {
        std::io::stdout()
            .write_all(&tar)
            .map_err(|e| fail(e.to_string()))?;
        return Ok(0);
    }
    let name = crate_name(path);
    let d = PathBuf::from(dest);
    let unpack = |into: &Path| -> Result<(), Fail> {
        let mut a = tar::Archive::new(&tar[..]);
        a.set_preserve_permissions(true);
        a.set_overwrite(true);
        a.unpack(into)
            .map_err(|e| fail(format!("extracting into {}: {e}", into.display())))
    };
    if d.is_dir() {
        // Into an existing directory: DEST/NAME (or the contents, for SRC/.).
        unpack(&d)?;
        return Ok(0);
    }
    // A new name: unpacked beside it, then renamed.
    let parent = d
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(fail(format!(
            "destination directory {} does not exist",
            parent.display()
        )));
    }
    let tmp = parent.join(format!(".berth-cp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| fail(e.to_string()))?;
    // SRC/. : the contents become DEST itself.
    let from = if name == "." {
        tmp.clone()
    } else {
        tmp.join(&name)
    };
    let r = unpack(&tmp).and_then(|_| {
        std::fs::rename(&from, &d).map_err(|e| fail(format!("creating {}: {e}", d.display())))
    });
    let _ = std::fs::remove_dir_all(&tmp);
    r.map(|_| 0)
}

/// The name a container path's archive is rooted at (as berthd names it).
fn crate_name(path: &str) -> String {
    if path.ends_with("/.") {
        return ".".into();
    }
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into())
}

async fn copy_in(c: &Conn, src: &str, ctr: &str, path: &str, archive: bool) -> Result<u8, Fail> {
    // A symlink at the destination is followed once (its target, in the container), as
    // the docker CLI does.
    let mut path = path.to_owned();
    let mut st = stat(c, ctr, &path).await?;
    if let Some(link) = st
        .as_ref()
        .filter(|s| s["mode"].as_u64().is_some_and(|m| m & (1 << 27) != 0))
        .and_then(|s| s["linkTarget"].as_str().map(str::to_owned))
        .filter(|l| !l.is_empty())
    {
        path = if link.starts_with('/') {
            link
        } else {
            let parent = Path::new(&path).parent().unwrap_or(Path::new("/"));
            parent.join(link).display().to_string()
        };
        st = stat(c, ctr, &path).await?;
    }
    let path = path.as_str();
    let (dir, name): (String, Option<String>) = match st {
        Some(st) if is_dir(&st) => (path.to_owned(), None),
        Some(_) if src != "-" && Path::new(src).is_dir() => {
            return Err(fail(format!(
                "cannot copy a directory over a file: {ctr}:{path}"
            )))
        }
        // A file, or a new name: into its directory, under that name.
        _ => {
            let p = Path::new(path);
            let parent = p
                .parent()
                .map(|x| x.display().to_string())
                .filter(|x| !x.is_empty())
                .unwrap_or_else(|| "/".into());
            let base = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| fail(format!("invalid destination {path}")))?;
            (parent, Some(base))
        }
    };
    let tar = if src == "-" {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
            .map_err(|e| fail(e.to_string()))?;
        v
    } else {
        let s = Path::new(src);
        let meta = std::fs::symlink_metadata(s).map_err(|e| fail(format!("{src}: {e}")))?;
        let contents = src.ends_with("/.");
        let root_name = name.clone().unwrap_or_else(|| {
            s.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| ".".into())
        });
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        let r = if meta.is_dir() {
            b.append_dir_all(if contents { "." } else { &root_name }, s)
        } else {
            b.append_path_with_name(s, &root_name)
        };
        r.and_then(|_| b.into_inner())
            .map_err(|e| fail(format!("archiving {src}: {e}")))?
    };
    let r = c
        .send(
            "PUT",
            &format!(
                "/containers/{}/archive?path={}&copyUIDGID={}",
                enc(ctr),
                enc(&dir),
                u8::from(archive)
            ),
            None,
            Some(Bytes::from(tar)),
            false,
        )
        .await?;
    if !r.status().is_success() {
        return Err(error_of(r).await);
    }
    Ok(0)
}

/// `export [-o FILE] CONTAINER`.
pub(crate) async fn export(c: &Conn, output: Option<String>, ctr: String) -> Result<u8, Fail> {
    if output.is_none() && stdout_is_tty() {
        return Err(fail(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect",
        ));
    }
    let r = ask(
        c,
        "GET",
        &format!("/containers/{}/export", enc(&ctr)),
        false,
    )
    .await?;
    let mut out: Box<dyn Write> = match &output {
        Some(f) => Box::new(std::fs::File::create(f).map_err(|e| fail(format!("{f}: {e}")))?),
        None => Box::new(std::io::stdout()),
    };
    let mut err = None;
    read_body(r, |b| {
        if err.is_none() {
            err = out.write_all(b).err();
        }
    })
    .await?;
    if let Some(e) = err.or_else(|| out.flush().err()) {
        return Err(fail(e.to_string()));
    }
    Ok(0)
}

fn stdout_is_tty() -> bool {
    // SAFETY: isatty on stdout's descriptor.
    unsafe { libc::isatty(1) == 1 }
}

/// `diff CONTAINER`.
pub(crate) async fn diff(c: &Conn, ctr: String) -> Result<u8, Fail> {
    let r = ask(
        c,
        "GET",
        &format!("/containers/{}/changes", enc(&ctr)),
        false,
    )
    .await?;
    let changes: Vec<docker::FilesystemChange> = json_reply(r).await?;
    for ch in changes {
        let k = match ch.kind {
            docker::ChangeType::_0 => "C",
            docker::ChangeType::_1 => "A",
            docker::ChangeType::_2 => "D",
        };
        println!("{k} {}", ch.path);
    }
    Ok(0)
}
