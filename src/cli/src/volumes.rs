//! `berth volume ...`.

use crate::client::{json, Conn, Fail};
use crate::containers::filters_query;
use crate::format::Format;
use berth_api::docker;
use clap::Subcommand;
use std::collections::HashMap;

/// `volume` subcommands.
#[derive(Subcommand)]
pub(crate) enum VolumeCmd {
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls {
        /// Filter output (dangling=, driver=, label=, name=).
        #[arg(short = 'f', long = "filter")]
        filter: Vec<String>,
        /// Only display volume names.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Format output (table, json, or a Go template).
        #[arg(long)]
        format: Option<String>,
    },
    /// Create a volume.
    Create {
        /// Volume driver name.
        #[arg(short = 'd', long, default_value = "local")]
        driver: String,
        /// Set metadata for a volume.
        #[arg(long)]
        label: Vec<String>,
        /// Set driver specific options.
        #[arg(short = 'o', long = "opt")]
        opt: Vec<String>,
        /// The volume's name (random if absent).
        name: Option<String>,
    },
    /// Display detailed information on one or more volumes.
    Inspect {
        /// Format output (json, or a Go template).
        #[arg(short = 'f', long)]
        format: Option<String>,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove one or more volumes.
    #[command(visible_alias = "remove")]
    Rm {
        /// Force the removal of one or more volumes.
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove unused volumes (anonymous ones, or all with -a).
    Prune {
        /// Remove all unused volumes, not just anonymous ones.
        #[arg(short = 'a', long)]
        all: bool,
        /// Do not prompt for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
        /// Provide filter values (label=).
        #[arg(long = "filter")]
        filter: Vec<String>,
    },
}

fn kv(list: &[String]) -> HashMap<String, String> {
    list.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

/// Runs a `volume` subcommand.
pub(crate) async fn volume(c: &Conn, cmd: VolumeCmd) -> Result<u8, Fail> {
    match cmd {
        VolumeCmd::Ls {
            filter,
            quiet,
            format,
        } => {
            let list: docker::VolumeListResponse = c
                .call(
                    "GET",
                    &format!(
                        "/volumes?{}",
                        filters_query(&filter)?.trim_start_matches('&')
                    ),
                    None,
                )
                .await?;
            let mut vols = list.volumes.unwrap_or_default();
            vols.sort_by(|a, b| a.name.cmp(&b.name));
            if quiet {
                for v in &vols {
                    println!("{}", v.name);
                }
                return Ok(0);
            }
            let f = Format::parse(format.as_deref())?;
            if f.is_default() {
                let mut rows = vec![vec!["DRIVER".to_owned(), "VOLUME NAME".into()]];
                for v in &vols {
                    rows.push(vec![v.driver.clone(), v.name.clone()]);
                }
                crate::output::table(rows);
                return Ok(0);
            }
            let items: Vec<serde_json::Value> = vols
                .iter()
                .map(|v| {
                    serde_json::json!({
                        "Name": v.name,
                        "Driver": v.driver,
                        "Scope": "local",
                        "Mountpoint": v.mountpoint,
                        "Labels": v.labels.iter().map(|(k, x)| format!("{k}={x}")).collect::<Vec<_>>().join(","),
                    })
                })
                .collect();
            f.print(
                &items,
                &[
                    ("Driver", "DRIVER"),
                    ("Name", "VOLUME NAME"),
                    ("Scope", "SCOPE"),
                    ("Mountpoint", "MOUNTPOINT"),
                    ("Labels", "LABELS"),
                ],
                true,
            )?;
            Ok(0)
        }
        VolumeCmd::Create {
            driver,
            label,
            opt,
            name,
        } => {
            let req = docker::VolumeCreateOptions {
                name,
                driver: Some(driver),
                driver_opts: Some(kv(&opt)),
                labels: Some(kv(&label)),
                cluster_volume_spec: None,
            };
            let v: docker::Volume = c.call("POST", "/volumes/create", json(&req)).await?;
            println!("{}", v.name);
            Ok(0)
        }
        VolumeCmd::Inspect { format, volumes } => {
            crate::output::inspect_each(c, "/volumes", &volumes, format).await
        }
        VolumeCmd::Rm { force, volumes } => Ok(crate::output::remove_each(
            c,
            "/volumes",
            &volumes,
            if force { "?force=1" } else { "" },
        )
        .await),
        VolumeCmd::Prune { all, force, filter } => {
            if !force {
                eprintln!("WARNING! This will remove anonymous local volumes not used by at least one container. Pass -f to go ahead.");
                return Ok(1);
            }
            let mut filter = filter;
            if all {
                filter.push("all=true".into());
            }
            let r: docker::VolumePruneResponse = c
                .call(
                    "POST",
                    &format!(
                        "/volumes/prune?{}",
                        filters_query(&filter)?.trim_start_matches('&')
                    ),
                    None,
                )
                .await?;
            let gone = r.volumes_deleted.unwrap_or_default();
            if !gone.is_empty() {
                println!("Deleted Volumes:");
                for v in gone {
                    println!("{v}");
                }
            }
            println!(
                "\nTotal reclaimed space: {}",
                crate::containers::human_size(r.space_reclaimed.unwrap_or(0))
            );
            Ok(0)
        }
    }
}
