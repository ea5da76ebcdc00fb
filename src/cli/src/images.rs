//! Image commands: images, pull, push, tag, rmi, save, load and import, with the
//! JSON-lines progress printer of pull, push and load.

use crate::client::{daemon_err, enc, error_of, json_reply, read_body, Conn, Fail, Ignored, Resp};
use crate::output::table;
use berth_api::{docker, JsonMessage};
use berth_image::Reference;
use bytes::Bytes;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use tokio::io::AsyncReadExt;

/// Prints a JSON-lines progress stream (pull, push, load); the first error fails.
async fn progress(r: Resp) -> Result<(), Fail> {
    if !r.status().is_success() {
        return Err(error_of(r).await);
    }
    let tty = std::io::stdout().is_terminal();
    let mut buf = Vec::new();
    let mut err = None;
    read_body(r, |d| {
        buf.extend_from_slice(d);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let Ok(v) = serde_json::from_slice::<JsonMessage>(&line) else {
                continue;
            };
            if let Some(e) = v.error {
                err = Some(e);
                continue;
            }
            if let Some(s) = v.stream {
                print!("{s}");
                continue;
            }
            let status = v.status.as_deref().unwrap_or("");
            let progress = v.progress.as_deref().unwrap_or("");
            let line = match v.id.as_deref() {
                Some(id) if !progress.is_empty() => {
                    if !tty {
                        continue;
                    }
                    format!("\r{id}: {status} {progress}")
                }
                Some(id) => format!("{}{id}: {status}\n", if tty { "\r\x1b[2K" } else { "" }),
                None if !status.is_empty() => format!("{status}\n"),
                None => continue,
            };
            print!("{line}");
            let _ = std::io::stdout().flush();
        }
    })
    .await?;
    if let Some(e) = err {
        return Err(daemon_err(format!("Error response from daemon: {e}")));
    }
    Ok(())
}

/// The reference with `:latest` added when it names no tag or digest.
pub(crate) fn full_name(image: &str) -> String {
    // Docker's familiar form, with the implied :latest (berth-image's one reference type).
    image
        .parse::<Reference>()
        .map(|r| r.familiar())
        .unwrap_or_else(|_| image.to_owned())
}

/// `pull` (also run's pull of a missing image).
pub(crate) async fn pull(c: &Conn, image: &str) -> Result<(), Fail> {
    // fromImage names the repository, tag the tag or digest, as the docker CLI sends them.
    let (name, tag) = match image.parse::<Reference>() {
        Ok(r) => {
            let tag = match (&r.digest, &r.tag) {
                (Some(d), _) => d.to_string(),
                (None, Some(t)) => t.clone(),
                (None, None) => "latest".to_owned(),
            };
            let repo = Reference {
                tag: None,
                digest: None,
                ..r
            };
            (repo.familiar(), tag)
        }
        // The daemon names the problem.
        Err(_) => (image.to_owned(), "latest".to_owned()),
    };
    let auth: Vec<(&str, String)> = crate::login::registry_auth(image)
        .map(|a| ("X-Registry-Auth", a))
        .into_iter()
        .collect();
    let r = c
        .send_with(
            "POST",
            &format!("/images/create?fromImage={}&tag={}", enc(&name), enc(&tag)),
            None,
            None,
            false,
            &auth,
        )
        .await?;
    progress(r).await
}

// The flags of `images`.
#[derive(clap::Args, Clone, Default)]
pub(crate) struct ImagesOpts {
    /// Show all images (berth keeps no intermediate images: the same as without).
    #[arg(short = 'a', long)]
    all: bool,
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Filter output based on conditions provided (reference, dangling, label, before, since).
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Format output using a Go template, "table", "table TEMPLATE" or "json".
    #[arg(long)]
    format: Option<String>,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Only images of this repository (and tag).
    reference: Option<String>,
}

/// The column headers of `images --format table`, field by field, as Docker's.
const IMAGE_HEADERS: &[(&str, &str)] = &[
    ("ID", "IMAGE ID"),
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("Digest", "DIGEST"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("SharedSize", "SHARED SIZE"),
    ("UniqueSize", "UNIQUE SIZE"),
    ("VirtualSize", "VIRTUAL SIZE"),
    ("Containers", "CONTAINERS"),
];

/// The rows of one image as `images --format` sees them (one a tag, as Docker's).
fn image_items(x: &docker::ImageSummary, trunc: bool) -> Vec<serde_json::Value> {
    let id = if trunc {
        x.id.trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect()
    } else {
        x.id.clone()
    };
    let digest_of = |repo: &str| {
        x.repo_digests
            .iter()
            .find_map(|d| {
                d.split_once('@')
                    .filter(|(r, _)| *r == repo)
                    .map(|(_, d)| d.to_owned())
            })
            .unwrap_or_else(|| "<none>".into())
    };
    let mut tags: Vec<(String, String)> = x
        .repo_tags
        .iter()
        .map(|t| {
            // The tag is after the last colon that is not part of a registry's port.
            match t.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) {
                Some((r, tag)) => (r.to_owned(), tag.to_owned()),
                None => (t.clone(), "<none>".into()),
            }
        })
        .collect();
    if tags.is_empty() {
        tags.push(("<none>".into(), "<none>".into()));
    }
    let size = crate::containers::human_size(x.size);
    tags.into_iter()
        .map(|(repo, tag)| {
            serde_json::json!({
                "ID": id,
                "Digest": digest_of(&repo),
                "Repository": repo,
                "Tag": tag,
                "CreatedSince": format!("{} ago", berth_api::human_duration(crate::containers::since(x.created))),
                "CreatedAt": crate::containers::go_time(x.created),
                "Size": size,
                "SharedSize": "N/A",
                "UniqueSize": "N/A",
                "VirtualSize": size,
                "Containers": "N/A",
            })
        })
        .collect()
}

/// `images`, with Docker's flags: `-a`, `-q`, `--filter`, `--format`, `--no-trunc`,
/// `--digests` and a `REPOSITORY[:TAG]` to list only those.
pub(crate) async fn images(c: &Conn, o: ImagesOpts) -> Result<u8, Fail> {
    let format = crate::format::Format::parse(o.format.as_deref())?;
    let mut filters = o.filter.clone();
    if let Some(r) = &o.reference {
        filters.push(format!("reference={r}"));
    }
    let q = format!(
        "/images/json?all={}{}",
        u8::from(o.all),
        crate::containers::filters_query(&filters)?
    );
    let list: Vec<docker::ImageSummary> = c.call("GET", &q, None).await?;
    if o.quiet {
        if o.format.is_some() {
            eprintln!(
                "WARNING: Ignoring custom format, because both --format and --quiet are set."
            );
        }
        let mut seen = std::collections::HashSet::new();
        for x in &list {
            let id = image_items(x, !o.no_trunc)[0]["ID"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(0);
    }
    let items: Vec<serde_json::Value> = list
        .iter()
        .flat_map(|x| image_items(x, !o.no_trunc))
        .collect();
    if !format.is_default() {
        format.print(&items, IMAGE_HEADERS, true)?;
        return Ok(0);
    }
    let mut head = vec!["REPOSITORY", "TAG"];
    if o.digests {
        head.push("DIGEST");
    }
    head.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let mut rows = vec![head.into_iter().map(String::from).collect::<Vec<_>>()];
    for i in &items {
        let f = |k: &str| i[k].as_str().unwrap_or_default().to_owned();
        let mut row = vec![f("Repository"), f("Tag")];
        if o.digests {
            row.push(f("Digest"));
        }
        row.extend([f("ID"), f("CreatedSince"), f("Size")]);
        rows.push(row);
    }
    table(rows);
    Ok(0)
}

/// A reference as the API's `repo` and `tag` parameters (the tag empty when none is
/// named). A name that does not parse is passed on as it is: the daemon names the problem.
fn repo_and_tag(name: &str) -> (String, String) {
    match name.parse::<Reference>() {
        Ok(r) => {
            let tag = r.tag.clone().unwrap_or_default();
            let repo = Reference {
                tag: None,
                digest: None,
                ..r
            };
            (repo.familiar(), tag)
        }
        Err(_) => (name.to_owned(), String::new()),
    }
}

/// `push`.
pub(crate) async fn push(c: &Conn, image: String) -> Result<u8, Fail> {
    let (name, tag) = repo_and_tag(&image);
    let tag = if tag.is_empty() { "latest".into() } else { tag };
    let auth: Vec<(&str, String)> = crate::login::registry_auth(&image)
        .map(|a| ("X-Registry-Auth", a))
        .into_iter()
        .collect();
    let r = c
        .send_with(
            "POST",
            &format!("/images/{name}/push?tag={}", enc(&tag)),
            None,
            None,
            false,
            &auth,
        )
        .await?;
    progress(r).await.map(|_| 0)
}

/// `tag`.
pub(crate) async fn tag(c: &Conn, source: String, target: String) -> Result<u8, Fail> {
    let (repo, tag) = repo_and_tag(&target);
    let tag = if tag.is_empty() { "latest".into() } else { tag };
    c.call::<Ignored>(
        "POST",
        &format!("/images/{source}/tag?repo={}&tag={}", enc(&repo), enc(&tag)),
        None,
    )
    .await?;
    Ok(0)
}

/// `rmi`.
pub(crate) async fn rmi(c: &Conn, force: bool, images: Vec<String>) -> Result<u8, Fail> {
    let mut failed = false;
    for i in images {
        match c
            .call::<Vec<docker::ImageDeleteResponseItem>>(
                "DELETE",
                &format!("/images/{i}?force={}", u8::from(force)),
                None,
            )
            .await
        {
            Ok(v) => {
                for x in v {
                    if let Some(u) = x.untagged {
                        println!("Untagged: {u}");
                    }
                    if let Some(d) = x.deleted {
                        println!("Deleted: {d}");
                    }
                }
            }
            Err(Fail(m, _)) => {
                eprintln!("{m}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `save`: the tar archive to the file or stdout (never a terminal).
pub(crate) async fn save(
    c: &Conn,
    output: Option<PathBuf>,
    images: Vec<String>,
) -> Result<u8, Fail> {
    if output.is_none() && std::io::stdout().is_terminal() {
        return Err(Fail(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
            1,
        ));
    }
    let q: Vec<String> = images.iter().map(|i| format!("names={}", enc(i))).collect();
    let r = c
        .send(
            "GET",
            &format!("/images/get?{}", q.join("&")),
            None,
            None,
            false,
        )
        .await?;
    if !r.status().is_success() {
        return Err(error_of(r).await);
    }
    let mut sink: Box<dyn Write> = match &output {
        Some(p) => Box::new(
            std::fs::File::create(p).map_err(|e| Fail(format!("{}: {e}", p.display()), 1))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let mut werr = None;
    read_body(r, |d| {
        if let Err(e) = sink.write_all(d) {
            werr = Some(e.to_string());
        }
    })
    .await?;
    if let Some(e) = werr {
        return Err(Fail(e, 1));
    }
    Ok(0)
}

/// `load`: the tar archive from the file or stdin.
pub(crate) async fn load(c: &Conn, input: Option<PathBuf>) -> Result<u8, Fail> {
    let data = match &input {
        Some(p) => std::fs::read(p).map_err(|e| Fail(format!("{}: {e}", p.display()), 1))?,
        None => {
            let mut v = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut v)
                .await
                .map_err(|e| Fail(e.to_string(), 1))?;
            v
        }
    };
    let r = c
        .send("POST", "/images/load", None, Some(Bytes::from(data)), false)
        .await?;
    progress(r).await.map(|_| 0)
}

/// `import`: a root filesystem tarball as an image; prints its ID.
pub(crate) async fn import(
    c: &Conn,
    change: Vec<String>,
    message: Option<String>,
    file: String,
    reference: Option<String>,
) -> Result<u8, Fail> {
    let data = if file == "-" {
        let mut v = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut v)
            .await
            .map_err(|e| Fail(e.to_string(), 1))?;
        v
    } else {
        std::fs::read(&file).map_err(|e| Fail(format!("{file}: {e}"), 1))?
    };
    let mut q = String::from("fromSrc=-");
    if let Some(r) = reference {
        let (repo, tag) = repo_and_tag(&r);
        q.push_str(&format!("&repo={}&tag={}", enc(&repo), enc(&tag)));
    }
    for ch in change {
        q.push_str(&format!("&changes={}", enc(&ch)));
    }
    if let Some(m) = message {
        q.push_str(&format!("&message={}", enc(&m)));
    }
    let r = c
        .send(
            "POST",
            &format!("/images/create?{q}"),
            None,
            Some(Bytes::from(data)),
            false,
        )
        .await?;
    let v: JsonMessage = json_reply(r).await?;
    println!("{}", v.status.unwrap_or_default());
    Ok(0)
}
