//! The Docker API models berthd reads and writes ([`berth_api`], shared with the CLI),
//! and the rule for create bodies: unknown fields are ignored, as dockerd ignores them,
//! and a known field berth does not apply is refused by [`refuse_unapplied`], naming it:
//! never accepted and dropped.

use crate::errors::{Error, Result};
pub use berth_api::*;

fn set<T: Default + PartialEq>(v: &Option<T>) -> bool {
    v.as_ref().is_some_and(|x| *x != T::default())
}

fn non_empty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|x| !x.is_empty())
}

fn non_empty_map<K, V>(v: &Option<std::collections::HashMap<K, V>>) -> bool {
    v.as_ref().is_some_and(|x| !x.is_empty())
}

fn not_in(v: &Option<String>, ok: &[&str]) -> bool {
    v.as_ref().is_some_and(|s| !ok.contains(&s.as_str()))
}

/// Refuses every field of a create body that berth does not apply yet, naming the first
/// one (501). Defaults, as the docker CLI sends them, pass.
pub fn refuse_unapplied(b: &CreateBody) -> Result<()> {
    let c = &b.config;
    let default_hc = HostConfig::default();
    let h = &b.host_config.as_ref().unwrap_or(&default_hc).base;
    let swappiness_set = h.memory_swappiness.is_some_and(|s| s != -1);
    let log_driver = h
        .log_config
        .as_ref()
        .is_some_and(|l| not_in(&l.typ, &["", "json-file", "none"]));
    let log_none = h
        .log_config
        .as_ref()
        .is_some_and(|l| l.typ.as_deref() == Some("none"));
    let log_opt = h
        .log_config
        .as_ref()
        .and_then(|l| l.config.as_ref())
        .and_then(|c| {
            c.keys()
                .find(|k| log_none || !matches!(k.as_str(), "max-size" | "max-file"))
                .map(|k| {
                    let driver = if log_none { "none" } else { "json-file" };
                    format!("HostConfig.LogConfig.Config (the {driver} log option {k:?})")
                })
        });
    let cgroupns = h.cgroupns_mode.as_ref().is_some_and(|m| {
        !matches!(
            m,
            docker::HostConfigCgroupnsModeEnum::EMPTY | docker::HostConfigCgroupnsModeEnum::HOST
        )
    });
    let refused: &[(bool, &str)] = &[
        (
            set(&c.domainname),
            "Domainname (the NIS domain name is not set in the container's UTS namespace)",
        ),
        (set(&h.cpu_shares), "HostConfig.CpuShares"),
        (set(&h.cgroup_parent), "HostConfig.CgroupParent"),
        (set(&h.blkio_weight), "HostConfig.BlkioWeight"),
        (
            non_empty(&h.blkio_weight_device),
            "HostConfig.BlkioWeightDevice",
        ),
        (
            non_empty(&h.blkio_device_read_bps),
            "HostConfig.BlkioDeviceReadBps",
        ),
        (
            non_empty(&h.blkio_device_write_bps),
            "HostConfig.BlkioDeviceWriteBps",
        ),
        (
            non_empty(&h.blkio_device_read_iops),
            "HostConfig.BlkioDeviceReadIOps",
        ),
        (
            non_empty(&h.blkio_device_write_iops),
            "HostConfig.BlkioDeviceWriteIOps",
        ),
        (set(&h.cpu_period), "HostConfig.CpuPeriod"),
        (set(&h.cpu_quota), "HostConfig.CpuQuota"),
        (set(&h.cpu_realtime_period), "HostConfig.CpuRealtimePeriod"),
        (
            set(&h.cpu_realtime_runtime),
            "HostConfig.CpuRealtimeRuntime",
        ),
        (set(&h.cpuset_cpus), "HostConfig.CpusetCpus"),
        (set(&h.cpuset_mems), "HostConfig.CpusetMems"),
        (
            non_empty(&h.device_cgroup_rules),
            "HostConfig.DeviceCgroupRules",
        ),
        (non_empty(&h.device_requests), "HostConfig.DeviceRequests"),
        (set(&h.kernel_memory_tcp), "HostConfig.KernelMemoryTCP"),
        (set(&h.memory_reservation), "HostConfig.MemoryReservation"),
        (set(&h.memory_swap), "HostConfig.MemorySwap"),
        (swappiness_set, "HostConfig.MemorySwappiness"),
        (set(&h.oom_kill_disable), "HostConfig.OomKillDisable"),
        (set(&h.cpu_count), "HostConfig.CpuCount"),
        (set(&h.cpu_percent), "HostConfig.CpuPercent"),
        (set(&h.io_maximum_iops), "HostConfig.IOMaximumIOps"),
        (
            set(&h.io_maximum_bandwidth),
            "HostConfig.IOMaximumBandwidth",
        ),
        (
            log_driver,
            "HostConfig.LogConfig.Type (log drivers other than json-file and none)",
        ),
        (
            h.volume_driver
                .as_deref()
                .is_some_and(|v| !v.is_empty() && v != "local"),
            "HostConfig.VolumeDriver (berth has the local driver)",
        ),
        (non_empty_map(&h.annotations), "HostConfig.Annotations"),
        (
            cgroupns,
            "HostConfig.CgroupnsMode (a private cgroup namespace: containers share the cgroup namespace of their agent, as on a cgroup v1 host)",
        ),
        (
            not_in(&h.ipc_mode, &["", "private"]),
            "HostConfig.IpcMode (this IPC mode)",
        ),
        (set(&h.cgroup), "HostConfig.Cgroup"),
        (non_empty_map(&h.storage_opt), "HostConfig.StorageOpt"),
        (set(&h.uts_mode), "HostConfig.UTSMode"),
        (set(&h.userns_mode), "HostConfig.UsernsMode"),
        (non_empty_map(&h.sysctls), "HostConfig.Sysctls"),
        (
            not_in(&h.runtime, &["", "berth", "runc"]),
            "HostConfig.Runtime (other runtimes)",
        ),
        (h.masked_paths.is_some(), "HostConfig.MaskedPaths"),
        (h.readonly_paths.is_some(), "HostConfig.ReadonlyPaths"),
    ];
    if let Some((_, what)) = refused.iter().find(|(hit, _)| *hit) {
        return Err(Error::NotImplemented(what.to_string()));
    }
    match log_opt {
        Some(what) => Err(Error::NotImplemented(what)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What docker CLI 28 sends for `docker run --rm bb:1 true` (captured).
    const DOCKER_RUN: &str = r#"{"AttachStderr": true, "AttachStdin": false, "AttachStdout": true, "Cmd": ["true"], "Domainname": "", "Entrypoint": null, "Env": null, "HostConfig": {"AutoRemove": true, "Binds": null, "BlkioDeviceReadBps": [], "BlkioDeviceReadIOps": [], "BlkioDeviceWriteBps": [], "BlkioDeviceWriteIOps": [], "BlkioWeight": 0, "BlkioWeightDevice": [], "CapAdd": null, "CapDrop": null, "Cgroup": "", "CgroupParent": "", "CgroupnsMode": "", "ConsoleSize": [0, 0], "ContainerIDFile": "", "CpuCount": 0, "CpuPercent": 0, "CpuPeriod": 0, "CpuQuota": 0, "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpuShares": 0, "CpusetCpus": "", "CpusetMems": "", "DeviceCgroupRules": null, "DeviceRequests": null, "Devices": [], "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": null, "GroupAdd": null, "IOMaximumBandwidth": 0, "IOMaximumIOps": 0, "IpcMode": "", "Isolation": "", "Links": null, "LogConfig": {"Config": {}, "Type": ""}, "MaskedPaths": null, "Memory": 0, "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": -1, "NanoCpus": 0, "NetworkMode": "default", "OomKillDisable": false, "OomScoreAdj": 0, "PidMode": "", "PidsLimit": 0, "PortBindings": {}, "Privileged": false, "PublishAllPorts": false, "ReadonlyPaths": null, "ReadonlyRootfs": false, "RestartPolicy": {"MaximumRetryCount": 0, "Name": "no"}, "SecurityOpt": null, "ShmSize": 0, "UTSMode": "", "Ulimits": [], "UsernsMode": "", "VolumeDriver": "", "VolumesFrom": null}, "Hostname": "", "Image": "bb:1", "Labels": {}, "NetworkingConfig": {"EndpointsConfig": {"default": {"Aliases": null, "DNSNames": null, "DriverOpts": null, "EndpointID": "", "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "GwPriority": 0, "IPAMConfig": null, "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "Links": null, "MacAddress": "", "NetworkID": ""}}}, "OnBuild": null, "OpenStdin": false, "StdinOnce": false, "Tty": false, "User": "", "Volumes": {}, "WorkingDir": ""}"#;

    fn body(s: &str) -> CreateBody {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn the_docker_clis_defaults_pass_and_unknown_fields_are_ignored() {
        let b = body(DOCKER_RUN);
        assert_eq!(b.config.image.as_deref(), Some("bb:1"));
        assert_eq!(b.host_config.as_ref().unwrap().base.auto_remove, Some(true));
        refuse_unapplied(&b).unwrap();
        // A field from a newer API version, at the top level and in HostConfig.
        let b = body(
            r#"{"Image":"x","Runtime":"io.containerd.runc.v2","HostConfig":{"Whatever":1,"Isolation":"vm"}}"#,
        );
        assert_eq!(b.host_config.unwrap().isolation.as_deref(), Some("vm"));
    }

    #[test]
    fn known_fields_berth_does_not_apply_are_refused_by_name() {
        for (field, json) in [
            ("LogConfig", r#"{"LogConfig":{"Type":"syslog"}}"#),
            (
                "compress",
                r#"{"LogConfig":{"Type":"json-file","Config":{"compress":"true"}}}"#,
            ),
            ("VolumeDriver", r#"{"VolumeDriver":"convoy"}"#),
            ("CgroupnsMode", r#"{"CgroupnsMode":"private"}"#),
        ] {
            let b = body(&format!(r#"{{"Image":"x","HostConfig":{json}}}"#));
            match refuse_unapplied(&b) {
                Err(Error::NotImplemented(m)) => assert!(m.contains(field), "{field}: {m}"),
                other => panic!("{field}: {other:?}"),
            }
        }
        // The confinement settings pass here: the core applies them (daemon/confinement.rs).
        for json in [
            r#"{"ReadonlyRootfs":true}"#,
            r#"{"CapDrop":["ALL"]}"#,
            r#"{"SecurityOpt":["seccomp=unconfined"]}"#,
            r#"{"Tmpfs":{"/t":""}}"#,
            r#"{"Ulimits":[{"Name":"nofile","Soft":1,"Hard":2}]}"#,
            r#"{"RestartPolicy":{"Name":"always"}}"#,
            r#"{"Init":true}"#,
            r#"{"CgroupnsMode":"host"}"#,
        ] {
            refuse_unapplied(&body(&format!(r#"{{"Image":"x","HostConfig":{json}}}"#))).unwrap();
        }
        // Healthchecks are applied (daemon/health.rs).
        let b = body(r#"{"Image":"x","Healthcheck":{"Test":["CMD","true"]}}"#);
        refuse_unapplied(&b).unwrap();
        let b = body(
            r#"{"Image":"x","HostConfig":{"LogConfig":{"Type":"json-file","Config":{"max-size":"1m","max-file":"3"}}}}"#,
        );
        refuse_unapplied(&b).unwrap();
    }

    #[test]
    fn wrong_types_are_errors() {
        assert!(serde_json::from_str::<CreateBody>(
            r#"{"Image":"x","HostConfig":{"Memory":"lots"}}"#
        )
        .is_err());
    }
}
