//! `berth network ...` and `berth port`.

use crate::client::{json, Conn, Fail, Ignored};
use crate::containers::filters_query;
use crate::format::Format;
use berth_api::docker;
use clap::{Args, Subcommand};
use std::collections::HashMap;

/// `network` subcommands.
#[derive(Subcommand)]
pub(crate) enum NetworkCmd {
    /// List networks.
    #[command(visible_alias = "list")]
    Ls {
        /// Filter output (driver=, id=, label=, name=, type=custom|builtin, dangling=).
        #[arg(short = 'f', long = "filter")]
        filter: Vec<String>,
        /// Only display network IDs.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Do not truncate the output.
        #[arg(long = "no-trunc")]
        no_trunc: bool,
        /// Format output (table, json, or a Go template).
        #[arg(long)]
        format: Option<String>,
    },
    /// Create a network.
    Create(CreateOpts),
    /// Display detailed information on one or more networks.
    Inspect {
        /// Format output (json, or a Go template).
        #[arg(short = 'f', long)]
        format: Option<String>,
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove all unused networks.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
        /// Provide filter values (label=, until=).
        #[arg(long = "filter")]
        filter: Vec<String>,
    },
    /// Connect a container to a network.
    Connect {
        /// IPv4 address.
        #[arg(long)]
        ip: Option<String>,
        /// Add network-scoped alias for the container.
        #[arg(long = "alias")]
        alias: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        /// Force the container to disconnect from a network.
        #[arg(short = 'f', long)]
        force: bool,
        network: String,
        container: String,
    },
}

/// `network create`'s flags.
#[derive(Args)]
pub(crate) struct CreateOpts {
    /// Driver to manage the Network.
    #[arg(short = 'd', long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR format that represents a network segment.
    #[arg(long)]
    subnet: Vec<String>,
    /// IPv4 Gateway for the master subnet.
    #[arg(long)]
    gateway: Vec<String>,
    /// Allocate container ip from a sub-range.
    #[arg(long = "ip-range")]
    ip_range: Vec<String>,
    /// Restrict external access to the network.
    #[arg(long)]
    internal: bool,
    /// Enable manual container attachment.
    #[arg(long)]
    attachable: bool,
    /// Enable IPv6 networking.
    #[arg(long)]
    ipv6: bool,
    /// Set metadata on a network.
    #[arg(long)]
    label: Vec<String>,
    /// Set driver specific options.
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    name: String,
}

fn kv(list: &[String]) -> HashMap<String, String> {
    list.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

/// Runs a `network` subcommand.
pub(crate) async fn network(c: &Conn, cmd: NetworkCmd) -> Result<u8, Fail> {
    match cmd {
        NetworkCmd::Ls {
            filter,
            quiet,
            no_trunc,
            format,
        } => {
            let list: Vec<docker::Network> = c
                .call(
                    "GET",
                    &format!(
                        "/networks?{}",
                        filters_query(&filter)?.trim_start_matches('&')
                    ),
                    None,
                )
                .await?;
            let id = |n: &docker::Network| {
                let id = n.id.clone().unwrap_or_default();
                if no_trunc {
                    id
                } else {
                    id.chars().take(12).collect()
                }
            };
            if quiet {
                for n in &list {
                    println!("{}", id(n));
                }
                return Ok(0);
            }
            let f = Format::parse(format.as_deref())?;
            if f.is_default() {
                let mut rows = vec![vec![
                    "NETWORK ID".to_owned(),
                    "NAME".into(),
                    "DRIVER".into(),
                    "SCOPE".into(),
                ]];
                for n in &list {
                    rows.push(vec![
                        id(n),
                        n.name.clone().unwrap_or_default(),
                        n.driver.clone().unwrap_or_default(),
                        n.scope.clone().unwrap_or_default(),
                    ]);
                }
                crate::output::table(rows);
                return Ok(0);
            }
            let items: Vec<serde_json::Value> = list
                .iter()
                .map(|n| {
                    serde_json::json!({
                        "ID": id(n),
                        "Name": n.name.clone().unwrap_or_default(),
                        "Driver": n.driver.clone().unwrap_or_default(),
                        "Scope": n.scope.clone().unwrap_or_default(),
                        "IPv6": n.enable_ipv6.unwrap_or(false).to_string(),
                        "Internal": n.internal.unwrap_or(false).to_string(),
                        "CreatedAt": n.created.clone().unwrap_or_default(),
                        "Labels": n.labels.clone().unwrap_or_default().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                    })
                })
                .collect();
            f.print(
                &items,
                &[
                    ("ID", "NETWORK ID"),
                    ("Name", "NAME"),
                    ("Driver", "DRIVER"),
                    ("Scope", "SCOPE"),
                    ("IPv6", "IPV6"),
                    ("Internal", "INTERNAL"),
                    ("CreatedAt", "CREATED AT"),
                    ("Labels", "LABELS"),
                ],
                true,
            )?;
            Ok(0)
        }
        NetworkCmd::Create(o) => {
            if o.subnet.len() > 1
                || o.gateway.len() > o.subnet.len().max(1)
                || o.ip_range.len() > o.subnet.len().max(1)
            {
                return Err(Fail(
                    "Error: one --subnet at most, with at most one --gateway and one --ip-range"
                        .into(),
                    1,
                ));
            }
            let config = (!o.subnet.is_empty() || !o.gateway.is_empty() || !o.ip_range.is_empty())
                .then(|| {
                    vec![docker::IpamConfig {
                        subnet: o.subnet.first().cloned(),
                        gateway: o.gateway.first().cloned(),
                        ip_range: o.ip_range.first().cloned(),
                        auxiliary_addresses: None,
                    }]
                });
            let req = docker::NetworkCreateRequest {
                name: o.name.clone(),
                check_duplicate: None,
                driver: Some(o.driver.clone()),
                internal: Some(o.internal),
                attachable: Some(o.attachable),
                ingress: None,
                ipam: Some(docker::Ipam {
                    driver: Some("default".into()),
                    config,
                    options: None,
                }),
                enable_ipv6: Some(o.ipv6),
                options: Some(kv(&o.opt)),
                labels: Some(kv(&o.label)),
            };
            let r: docker::NetworkCreateResponse =
                c.call("POST", "/networks/create", json(&req)).await?;
            println!("{}", r.id.unwrap_or_default());
            Ok(0)
        }
        NetworkCmd::Inspect { format, networks } => {
            crate::output::inspect_each(c, "/networks", &networks, format).await
        }
        NetworkCmd::Rm { networks } => {
            Ok(crate::output::remove_each(c, "/networks", &networks, "").await)
        }
        NetworkCmd::Prune { force, filter } => {
            if !force {
                eprintln!("WARNING! This will remove all custom networks not used by at least one container. Pass -f to go ahead.");
                return Ok(1);
            }
            let r: docker::NetworkPruneResponse = c
                .call(
                    "POST",
                    &format!(
                        "/networks/prune?{}",
                        filters_query(&filter)?.trim_start_matches('&')
                    ),
                    None,
                )
                .await?;
            let gone = r.networks_deleted.unwrap_or_default();
            if !gone.is_empty() {
                println!("Deleted Networks:");
                for n in gone {
                    println!("{n}");
                }
            }
            Ok(0)
        }
        NetworkCmd::Connect {
            ip,
            alias,
            network,
            container,
        } => {
            let req = docker::NetworkConnectRequest {
                container: Some(container),
                endpoint_config: Some(docker::EndpointSettings {
                    aliases: (!alias.is_empty()).then_some(alias),
                    ipam_config: ip.map(|ip| docker::EndpointIpamConfig {
                        ipv4_address: Some(ip),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            };
            c.call::<Ignored>(
                "POST",
                &format!("/networks/{}/connect", crate::client::enc(&network)),
                json(&req),
            )
            .await?;
            Ok(0)
        }
        NetworkCmd::Disconnect {
            force,
            network,
            container,
        } => {
            let req = docker::NetworkDisconnectRequest {
                container: Some(container),
                force: Some(force),
            };
            c.call::<Ignored>(
                "POST",
                &format!("/networks/{}/disconnect", crate::client::enc(&network)),
                json(&req),
            )
            .await?;
            Ok(0)
        }
    }
}

/// `port CONTAINER [PRIVATE_PORT[/PROTO]]`.
pub(crate) async fn port(c: &Conn, container: String, private: Option<String>) -> Result<u8, Fail> {
    let v: docker::ContainerInspectResponse = c
        .call(
            "GET",
            &format!("/containers/{}/json", crate::client::enc(&container)),
            None,
        )
        .await?;
    let ports = v.network_settings.and_then(|n| n.ports).unwrap_or_default();
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort_by_key(|k| {
        let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
        (p.parse::<u32>().unwrap_or(0), proto.to_owned())
    });
    let want = private.map(|p| {
        if p.contains('/') {
            p
        } else {
            format!("{p}/tcp")
        }
    });
    let mut found = false;
    for k in keys {
        if want.as_ref().is_some_and(|w| w != k) {
            continue;
        }
        for b in ports.get(k).cloned().flatten().unwrap_or_default() {
            found = true;
            let addr = format!(
                "{}:{}",
                b.host_ip.unwrap_or_else(|| "0.0.0.0".into()),
                b.host_port.unwrap_or_default()
            );
            if want.is_some() {
                println!("{addr}");
            } else {
                println!("{k} -> {addr}");
            }
        }
    }
    if !found {
        if let Some(w) = want {
            return Err(Fail(
                format!("Error: No public port '{w}' published for {container}"),
                1,
            ));
        }
    }
    Ok(0)
}
