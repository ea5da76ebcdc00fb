//! The `run`/`create` flags that take a small language of their own, parsed as the docker
//! CLI parses them: `-p`/`--publish`, `--expose`, `-v`/`--volume`, `--mount`, `--device`
//! and `--label`. What they ask for goes into the create body as Docker's fields; berthd
//! applies it or refuses it by name (a 400 or 501 that names the field, never a flag
//! silently dropped here).

use crate::client::Fail;
use berth_api::docker;
use std::collections::HashMap;

fn bad(flag: &str, v: &str, why: &str) -> Fail {
    Fail(
        format!("invalid argument \"{v}\" for \"{flag}\" flag: {why}"),
        125,
    )
}

/// A port or a range (`80`, `8000-8010`) as its first and last port.
fn port_range(s: &str, flag: &str, whole: &str) -> Result<(u16, u16), Fail> {
    let p = |x: &str| {
        x.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(flag, whole, &format!("invalid port {x:?}")))
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (p(a)?, p(b)?);
            if b < a {
                return Err(bad(flag, whole, "invalid range of ports"));
            }
            Ok((a, b))
        }
        None => p(s).map(|x| (x, x)),
    }
}

/// `-p [ip:][hostPort:]containerPort[/proto]` flags (ports or ranges) as `ExposedPorts`
/// keys and `PortBindings`.
pub(crate) fn publish(specs: &[String]) -> Result<(Vec<String>, docker::PortMap), Fail> {
    let flag = "-p, --publish";
    let mut exposed = Vec::new();
    let mut map = docker::PortMap::new();
    for spec in specs {
        let (rest, proto) = match spec.rsplit_once('/') {
            Some((r, p)) => (r, p),
            None => (spec.as_str(), "tcp"),
        };
        if !matches!(proto, "tcp" | "udp" | "sctp") {
            return Err(bad(flag, spec, &format!("invalid proto: {proto}")));
        }
        // The IP may be IPv6 in brackets, so split the ports off the right.
        let (ip, host, ctr) = match rest.rsplit_once(':') {
            None => ("", "", rest),
            Some((left, ctr)) => match left.rsplit_once(':') {
                Some((ip, host)) => (ip.trim_start_matches('[').trim_end_matches(']'), host, ctr),
                None => ("", left, ctr),
            },
        };
        let (c0, c1) = port_range(ctr, flag, spec)?;
        let hosts = if host.is_empty() {
            None
        } else {
            Some(port_range(host, flag, spec)?)
        };
        if let Some((h0, h1)) = hosts {
            // A host range for one container port is Docker's "any free port of these".
            if h1 - h0 != c1 - c0 && c0 != c1 {
                return Err(bad(
                    flag,
                    spec,
                    "the host and container port ranges differ in size",
                ));
            }
        }
        for (i, port) in (c0..=c1).enumerate() {
            let key = format!("{port}/{proto}");
            let host_port = match hosts {
                None => String::new(),
                Some((h0, h1)) if c0 == c1 && h0 != h1 => format!("{h0}-{h1}"),
                Some((h0, _)) => (h0 + i as u16).to_string(),
            };
            exposed.push(key.clone());
            map.entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(docker::PortBinding {
                    host_ip: Some(ip.to_owned()),
                    host_port: Some(host_port),
                });
        }
    }
    Ok((exposed, map))
}

/// `--expose PORT[/proto]` (ports or ranges) as `ExposedPorts` keys.
pub(crate) fn expose(specs: &[String]) -> Result<Vec<String>, Fail> {
    let mut out = Vec::new();
    for spec in specs {
        let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
        let (a, b) = port_range(ports, "--expose", spec)?;
        out.extend((a..=b).map(|p| format!("{p}/{proto}")));
    }
    Ok(out)
}

/// `-v` flags: `SRC:DST[:OPTS]` is a bind (or named volume) for `Binds`; a lone path is
/// an anonymous volume for `Volumes`.
pub(crate) fn volumes(specs: &[String]) -> Result<(Vec<String>, Vec<String>), Fail> {
    let (mut binds, mut anon) = (Vec::new(), Vec::new());
    for v in specs {
        let parts: Vec<&str> = v.split(':').collect();
        match parts.as_slice() {
            [p] if p.starts_with('/') => anon.push((*p).to_owned()),
            [_, d] | [_, d, _] if d.starts_with('/') => binds.push(v.clone()),
            _ => return Err(bad("-v, --volume", v, "invalid volume specification")),
        }
    }
    Ok((binds, anon))
}

fn truthy(v: Option<&str>, flag: &str, whole: &str) -> Result<bool, Fail> {
    match v {
        None | Some("1" | "true") => Ok(true),
        Some("0" | "false") => Ok(false),
        Some(other) => Err(bad(
            flag,
            whole,
            &format!("invalid value {other:?}: want true or false"),
        )),
    }
}

/// A `--mount type=...,source=...,target=...[,options]` flag as a `Mount`.
pub(crate) fn mount(spec: &str) -> Result<docker::Mount, Fail> {
    let flag = "--mount";
    let mut m = serde_json::Map::new();
    let mut bind = serde_json::Map::new();
    let mut volume = serde_json::Map::new();
    let mut tmpfs = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    let mut opts = serde_json::Map::new();
    let mut typ = "volume".to_owned();
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (field.trim(), None),
        };
        let need = || {
            v.ok_or_else(|| {
                bad(
                    flag,
                    spec,
                    &format!("invalid field '{field}' must be a key=value pair"),
                )
            })
        };
        let j = |s: &str| serde_json::Value::String(s.to_owned());
        match k {
            "type" => typ = need()?.to_owned(),
            "source" | "src" => {
                m.insert("Source".into(), j(need()?));
            }
            "target" | "destination" | "dst" => {
                m.insert("Target".into(), j(need()?));
            }
            "readonly" | "ro" => {
                m.insert("ReadOnly".into(), truthy(v, flag, spec)?.into());
            }
            "consistency" => {
                m.insert("Consistency".into(), j(need()?));
            }
            "bind-propagation" => {
                bind.insert("Propagation".into(), j(need()?));
            }
            "bind-nonrecursive" => {
                bind.insert("NonRecursive".into(), truthy(v, flag, spec)?.into());
            }
            "volume-nocopy" => {
                volume.insert("NoCopy".into(), truthy(v, flag, spec)?.into());
            }
            "volume-label" => {
                let (lk, lv) = need()?.split_once('=').unwrap_or((need()?, ""));
                labels.insert(lk.into(), j(lv));
            }
            "volume-driver" => {
                volume.insert(
                    "DriverConfig".into(),
                    serde_json::json!({ "Name": need()? }),
                );
            }
            "volume-opt" => {
                let (ok, ov) = need()?.split_once('=').unwrap_or((need()?, ""));
                opts.insert(ok.into(), j(ov));
            }
            "tmpfs-size" => {
                let n = crate::containers::parse_memory(need()?, flag)?;
                tmpfs.insert("SizeBytes".into(), n.into());
            }
            "tmpfs-mode" => {
                let mode = i64::from_str_radix(need()?, 8).map_err(|_| {
                    bad(
                        flag,
                        spec,
                        &format!("invalid tmpfs-mode {:?}", need().unwrap_or_default()),
                    )
                })?;
                tmpfs.insert("Mode".into(), mode.into());
            }
            _ => {
                return Err(bad(
                    flag,
                    spec,
                    &format!("unexpected key '{k}' in '{field}'"),
                ))
            }
        }
    }
    if !matches!(typ.as_str(), "bind" | "volume" | "tmpfs") {
        return Err(bad(flag, spec, &format!("invalid mount type {typ:?}")));
    }
    if !m.contains_key("Target") {
        return Err(bad(flag, spec, "target is required"));
    }
    if !labels.is_empty() {
        volume.insert("Labels".into(), labels.into());
    }
    if !opts.is_empty() {
        let dc = volume
            .entry("DriverConfig")
            .or_insert_with(|| serde_json::json!({}));
        dc["Options"] = opts.into();
    }
    let wrong = |what: &str| {
        bad(
            flag,
            spec,
            &format!("cannot mix '{what}-*' options with mount type '{typ}'"),
        )
    };
    if !bind.is_empty() {
        if typ != "bind" {
            return Err(wrong("bind"));
        }
        m.insert("BindOptions".into(), bind.into());
    }
    if !volume.is_empty() {
        if typ != "volume" {
            return Err(wrong("volume"));
        }
        m.insert("VolumeOptions".into(), volume.into());
    }
    if !tmpfs.is_empty() {
        if typ != "tmpfs" {
            return Err(wrong("tmpfs"));
        }
        m.insert("TmpfsOptions".into(), tmpfs.into());
    }
    m.insert("Type".into(), typ.into());
    serde_json::from_value(m.into()).map_err(|e| bad(flag, spec, &e.to_string()))
}

/// A `--device HOST[:CONTAINER[:PERMISSIONS]]` flag.
pub(crate) fn device(spec: &str) -> Result<docker::DeviceMapping, Fail> {
    let parts: Vec<&str> = spec.split(':').collect();
    let perms_ok = |p: &str| !p.is_empty() && p.chars().all(|x| "rwm".contains(x));
    let (host, ctr, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, c] if perms_ok(c) => (*h, *h, *c),
        [h, c] if c.starts_with('/') => (*h, *c, "rwm"),
        [h, c, p] if c.starts_with('/') && perms_ok(p) => (*h, *c, *p),
        _ => return Err(bad("--device", spec, "invalid device specification")),
    };
    if !host.starts_with('/') {
        return Err(bad("--device", spec, "the host path must be absolute"));
    }
    Ok(docker::DeviceMapping {
        path_on_host: Some(host.into()),
        path_in_container: Some(ctr.into()),
        cgroup_permissions: Some(perms.into()),
    })
}

/// `-l KEY[=VALUE]` flags as labels.
pub(crate) fn labels(specs: &[String]) -> HashMap<String, String> {
    specs
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn publish_reads_dockers_forms() {
        let (exposed, map) = publish(&s(&[
            "8080:80",
            "127.0.0.1:53:53/udp",
            "9000",
            "7000-7001:70-71",
        ]))
        .unwrap_or_else(|e| panic!("{}", e.0));
        assert!(exposed.contains(&"80/tcp".to_owned()));
        let b = |k: &str| map[k].clone().unwrap_or_default()[0].clone();
        assert_eq!(b("80/tcp").host_port.as_deref(), Some("8080"));
        assert_eq!(b("53/udp").host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b("9000/tcp").host_port.as_deref(), Some(""));
        assert_eq!(b("71/tcp").host_port.as_deref(), Some("7001"));
        for wrong in ["80/icmp", "x:80", "70000", "90-80", "1-3:80-81"] {
            assert_eq!(
                publish(&s(&[wrong])).err().map(|e| e.1),
                Some(125),
                "{wrong}"
            );
        }
    }

    #[test]
    fn mounts_and_volumes() {
        let m = mount("type=tmpfs,dst=/scratch,tmpfs-size=64m,tmpfs-mode=1770")
            .unwrap_or_else(|e| panic!("{}", e.0));
        assert_eq!(m.typ, Some(docker::MountTypeEnum::TMPFS));
        assert_eq!(m.target.as_deref(), Some("/scratch"));
        let t = m.tmpfs_options.unwrap_or_default();
        assert_eq!((t.size_bytes, t.mode), (Some(64 << 20), Some(0o1770)));
        let b =
            mount("type=bind,src=/srv,target=/data,readonly").unwrap_or_else(|e| panic!("{}", e.0));
        assert_eq!(
            (b.source.as_deref(), b.read_only),
            (Some("/srv"), Some(true))
        );
        for wrong in [
            "type=tmpfs",
            "type=nfs,dst=/x",
            "type=tmpfs,dst=/x,bind-propagation=shared",
            "dst=/x,color=blue",
        ] {
            assert_eq!(mount(wrong).err().map(|e| e.1), Some(125), "{wrong}");
        }
        let (binds, anon) = volumes(&s(&["/srv:/data:ro", "/cache", "name:/v"]))
            .unwrap_or_else(|e| panic!("{}", e.0));
        assert_eq!(binds, s(&["/srv:/data:ro", "name:/v"]));
        assert_eq!(anon, s(&["/cache"]));
        assert!(volumes(&s(&["relative"])).is_err());
    }

    #[test]
    fn devices() {
        let d = device("/dev/fuse").unwrap_or_else(|e| panic!("{}", e.0));
        assert_eq!(d.path_in_container.as_deref(), Some("/dev/fuse"));
        let d = device("/dev/sda:/dev/xvda:r").unwrap_or_else(|e| panic!("{}", e.0));
        assert_eq!(
            (
                d.path_in_container.as_deref(),
                d.cgroup_permissions.as_deref()
            ),
            (Some("/dev/xvda"), Some("r"))
        );
        for wrong in ["fuse", "/dev/x:", "/dev/x:/dev/y:rwz", "/dev/x:y"] {
            assert!(device(wrong).is_err(), "{wrong}");
        }
    }
}
