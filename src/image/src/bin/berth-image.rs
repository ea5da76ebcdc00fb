//! `berth-image`: the image store from the command line (pull, push, save, load, import,
//! tag, rmi, gc, and the root disks microVMs boot from), like `ctr images` is to
//! containerd. `berthd` uses the same library.

use berth_image::archive;
use berth_image::registry::{self, Progress, PullOptions, RegistryOptions};
use berth_image::{ImageStore, Reference};
use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "berth-image", version, about = "berth's image store")]
struct Cli {
    /// The store's data root.
    #[arg(long, env = "BERTH_IMAGE_ROOT", default_value = "/var/lib/berth/image")]
    root: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Remote {
    /// A registry (host:port) reached over plain HTTP; loopback ones always are.
    #[arg(long = "insecure-registry")]
    insecure: Vec<String>,
    /// Credentials, USER:PASSWORD.
    #[arg(long, env = "BERTH_REGISTRY_CREDS", hide_env_values = true)]
    creds: Option<String>,
}

impl Remote {
    fn options(&self) -> Result<RegistryOptions, String> {
        let credentials = match &self.creds {
            Some(c) => Some(
                c.split_once(':')
                    .map(|(u, p)| (u.to_owned(), p.to_owned()))
                    .ok_or("--creds must be USER:PASSWORD")?,
            ),
            None => None,
        };
        Ok(RegistryOptions {
            insecure: self.insecure.clone(),
            credentials,
            ..Default::default()
        })
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Pull an image (and unpack it and build its root disk).
    Pull {
        #[command(flatten)]
        remote: Remote,
        /// Only fetch and verify the blobs.
        #[arg(long)]
        no_unpack: bool,
        /// Layers fetched at once.
        #[arg(long, default_value_t = 3)]
        max_concurrent_downloads: usize,
        /// Print only the image ID.
        #[arg(short, long)]
        quiet: bool,
        image: String,
    },
    /// Push an image, to TARGET or to its own name.
    Push {
        #[command(flatten)]
        remote: Remote,
        /// Upload blobs in chunks of this many bytes (default: one request per blob).
        #[arg(long)]
        chunk_size: Option<usize>,
        image: String,
        target: Option<String>,
    },
    /// List images.
    #[command(alias = "ls")]
    Images {
        /// Only IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show an image's record and config as JSON.
    Inspect { image: String },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Remove images (untag; delete when no tag is left).
    Rmi {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Write images to a tarball (`docker save` format) or an OCI layout directory.
    Save {
        #[arg(short, long, conflicts_with = "oci_dir")]
        output: Option<PathBuf>,
        #[arg(long)]
        oci_dir: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Load images from a `docker save` tarball or an OCI layout (tarball or directory).
    Load {
        #[arg(short, long, conflicts_with = "oci_dir")]
        input: Option<PathBuf>,
        #[arg(long)]
        oci_dir: Option<PathBuf>,
        /// Name for layout entries that carry only a tag.
        #[arg(long)]
        name: Option<String>,
    },
    /// Import a root filesystem tarball ("-" for stdin) as a one-layer image.
    Import {
        #[arg(short, long)]
        change: Vec<String>,
        #[arg(short, long)]
        message: Option<String>,
        file: String,
        reference: Option<String>,
    },
    /// Print the path of an image's unpacked root filesystem, building it if needed.
    Rootfs { image: String },
    /// Print the path of an image's read-only root disk, building it if needed.
    Disk { image: String },
    /// Create a sparse ext4 disk for a container's writable layer.
    ScratchDisk { path: PathBuf, size_mib: u64 },
    /// Remove everything no image references.
    #[command(alias = "prune")]
    Gc,
    /// Check every blob against its digest and every image against its blobs.
    Verify,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_ref(s: &str) -> Result<Reference, String> {
    s.parse::<Reference>().map_err(|e| e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Docker-style progress lines: one per state change (and, on a terminal, byte counts).
fn printer(quiet: bool) -> impl Fn(Progress) + Send + Sync {
    let tty = std::io::stdout().is_terminal();
    move |p| {
        if quiet {
            return;
        }
        let line = match p {
            Progress::Status { status } => status,
            Progress::Layer {
                digest,
                status,
                current,
                total,
            } => {
                if (status == "Downloading" || status == "Pushing") && current > 0 && !tty {
                    return;
                }
                if status == "Downloading" || status == "Pushing" {
                    format!("{}: {status} {current}/{total}", registry::short(&digest))
                } else {
                    format!("{}: {status}", registry::short(&digest))
                }
            }
        };
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let store = ImageStore::open(&cli.root).map_err(|e| e.to_string())?;
    match cli.cmd {
        Cmd::Pull {
            remote,
            no_unpack,
            max_concurrent_downloads,
            quiet,
            image,
        } => {
            let r = parse_ref(&image)?;
            let mut opts = remote.options()?;
            opts.max_concurrent_downloads = max_concurrent_downloads;
            let before = store.resolve(&image).ok();
            let rec = runtime()?
                .block_on(registry::pull(
                    &store,
                    &r,
                    &opts,
                    PullOptions { unpack: !no_unpack },
                    &printer(quiet),
                ))
                .map_err(|e| e.to_string())?;
            if quiet {
                println!("{}", rec.id);
            } else if before.map(|b| b.id) == Some(rec.id.clone()) {
                println!("Status: Image is up to date for {}", r.familiar());
            } else {
                println!("Status: Downloaded newer image for {}", r.familiar());
            }
        }
        Cmd::Push {
            remote,
            chunk_size,
            image,
            target,
        } => {
            let t = parse_ref(target.as_deref().unwrap_or(&image))?;
            let mut opts = remote.options()?;
            opts.upload_chunk = chunk_size;
            runtime()?
                .block_on(registry::push(&store, &image, &t, &opts, &printer(false)))
                .map_err(|e| e.to_string())?;
        }
        Cmd::Images { quiet } => {
            let tags = store.tags().map_err(|e| e.to_string())?;
            if !quiet {
                println!(
                    "{:<40} {:<20} {:<14} {:>10}",
                    "REPOSITORY", "TAG", "IMAGE ID", "SIZE"
                );
            }
            for rec in store.records().map_err(|e| e.to_string())? {
                if quiet {
                    println!("{}", &rec.id.hex()[..12]);
                    continue;
                }
                let mine: Vec<Reference> = tags
                    .iter()
                    .filter(|(_, d)| **d == rec.id)
                    .filter_map(|(t, _)| t.parse().ok())
                    .collect();
                let size = format!("{:.1}MB", rec.size as f64 / 1e6);
                if mine.is_empty() {
                    println!(
                        "{:<40} {:<20} {:<14} {size:>10}",
                        "<none>",
                        "<none>",
                        &rec.id.hex()[..12]
                    );
                }
                for t in mine {
                    let f = t.familiar();
                    let (repo, tag) = f.rsplit_once(':').unwrap_or((&f, ""));
                    println!(
                        "{repo:<40} {tag:<20} {:<14} {size:>10}",
                        &rec.id.hex()[..12]
                    );
                }
            }
        }
        Cmd::Inspect { image } => {
            let rec = store.resolve(&image).map_err(|e| e.to_string())?;
            let config: serde_json::Value =
                serde_json::from_slice(&store.read_document(&rec.id).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            let out = serde_json::json!({
                "Id": rec.id.to_string(),
                "RepoTags": store.tags_of(&rec.id).map_err(|e| e.to_string())?,
                "RepoDigests": rec.repo_digests,
                "Manifest": rec.manifest.to_string(),
                "ManifestMediaType": rec.manifest_media_type,
                "Size": rec.size,
                "Config": config,
                "RootFS": store.rootfs_path(&rec.id),
                "RootDisk": store.disk_path(&rec.id),
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Cmd::Tag { source, target } => {
            let rec = store.resolve(&source).map_err(|e| e.to_string())?;
            store
                .tag(&parse_ref(&target)?, &rec.id)
                .map_err(|e| e.to_string())?;
        }
        Cmd::Rmi { force, images } => {
            let mut failed = None;
            for i in images {
                match store.remove(&i, force) {
                    Ok(done) => {
                        for d in done {
                            match d {
                                berth_image::images::Removed::Untagged(t) => {
                                    println!("Untagged: {t}")
                                }
                                berth_image::images::Removed::Deleted(d) => {
                                    println!("Deleted: {d}")
                                }
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = Some("some images could not be removed".to_owned());
                    }
                }
            }
            if let Some(f) = failed {
                return Err(f);
            }
        }
        Cmd::Save {
            output,
            oci_dir,
            images,
        } => match (output, oci_dir) {
            (_, Some(dir)) => {
                archive::save_oci_dir(&store, &images, &dir).map_err(|e| e.to_string())?
            }
            (Some(out), None) => {
                // Written aside and renamed, so a failed save leaves no half file.
                let tmp = out.with_extension("berth-partial");
                let r = std::fs::File::create(&tmp)
                    .map_err(|e| format!("{}: {e}", tmp.display()))
                    .and_then(|f| {
                        archive::save(&store, &images, std::io::BufWriter::new(f))
                            .map_err(|e| e.to_string())
                    })
                    .and_then(|_| {
                        std::fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))
                    });
                if r.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                r?;
            }
            (None, None) => {
                if std::io::stdout().is_terminal() {
                    return Err(
                        "cowardly refusing to save to a terminal. Use the -o flag or redirect"
                            .into(),
                    );
                }
                archive::save(&store, &images, std::io::stdout().lock())
                    .map_err(|e| e.to_string())?;
            }
        },
        Cmd::Load {
            input,
            oci_dir,
            name,
        } => {
            let name = name.as_deref().map(parse_ref).transpose()?;
            let loaded = match (input, oci_dir) {
                (_, Some(dir)) => archive::load_oci_dir(&store, &dir, name.as_ref()),
                (Some(f), None) => {
                    let file =
                        std::fs::File::open(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                    archive::load(&store, std::io::BufReader::new(file))
                }
                (None, None) => archive::load(&store, std::io::stdin().lock()),
            }
            .map_err(|e| e.to_string())?;
            for (rec, tags) in loaded {
                if tags.is_empty() {
                    println!("Loaded image ID: {}", rec.id);
                }
                for t in tags {
                    println!("Loaded image: {t}");
                }
            }
        }
        Cmd::Import {
            change,
            message,
            file,
            reference,
        } => {
            let r = reference.as_deref().map(parse_ref).transpose()?;
            let rec = if file == "-" {
                archive::import(
                    &store,
                    std::io::stdin().lock(),
                    r.as_ref(),
                    &change,
                    message.as_deref(),
                )
            } else {
                let f = std::fs::File::open(&file).map_err(|e| format!("{file}: {e}"))?;
                archive::import(
                    &store,
                    std::io::BufReader::new(f),
                    r.as_ref(),
                    &change,
                    message.as_deref(),
                )
            }
            .map_err(|e| e.to_string())?;
            println!("{}", rec.id);
        }
        Cmd::Rootfs { image } => {
            let rec = store.resolve(&image).map_err(|e| e.to_string())?;
            println!(
                "{}",
                store.rootfs(&rec).map_err(|e| e.to_string())?.display()
            );
        }
        Cmd::Disk { image } => {
            let rec = store.resolve(&image).map_err(|e| e.to_string())?;
            println!("{}", store.disk(&rec).map_err(|e| e.to_string())?.display());
        }
        Cmd::ScratchDisk { path, size_mib } => {
            berth_image::disk::build_scratch(&path, size_mib).map_err(|e| e.to_string())?;
        }
        Cmd::Gc => {
            let r = store.gc().map_err(|e| e.to_string())?;
            println!(
                "Deleted {} blobs ({} bytes) and {} unpacked trees or disks",
                r.blobs, r.bytes, r.unpacked
            );
        }
        Cmd::Verify => {
            let problems = store.verify().map_err(|e| e.to_string())?;
            for p in &problems {
                println!("{p}");
            }
            if !problems.is_empty() {
                return Err(format!("{} problems found", problems.len()));
            }
            println!("store is consistent");
        }
    }
    Ok(())
}
