//! `update`: a container's memory, CPU and pids limits and its restart policy, changed in
//! its record and, while it runs, in its cgroup (by the agent where the container runs:
//! in the guest for a microVM, whose memory and vCPUs are fixed at boot, so a limit above
//! them is refused there). Every other `Resources` field is refused by name, as at create.

use super::{blocking, Ctr, Daemon};
use crate::errors::{Error, Result};
use crate::models::{docker, UpdateBody};
use berth_protocol::Request;
use std::sync::Arc;

fn set<T: Default + PartialEq>(v: &Option<T>) -> bool {
    v.as_ref().is_some_and(|x| *x != T::default())
}

fn non_empty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|x| !x.is_empty())
}

/// Refuses what `update` does not apply, naming the first field (501).
fn refuse_unapplied(r: &docker::Resources) -> Result<()> {
    let refused: &[(bool, &str)] = &[
        (set(&r.cpu_shares), "CpuShares"),
        (set(&r.cgroup_parent), "CgroupParent"),
        (set(&r.blkio_weight), "BlkioWeight"),
        (non_empty(&r.blkio_weight_device), "BlkioWeightDevice"),
        (non_empty(&r.blkio_device_read_bps), "BlkioDeviceReadBps"),
        (non_empty(&r.blkio_device_write_bps), "BlkioDeviceWriteBps"),
        (non_empty(&r.blkio_device_read_iops), "BlkioDeviceReadIOps"),
        (
            non_empty(&r.blkio_device_write_iops),
            "BlkioDeviceWriteIOps",
        ),
        (set(&r.cpu_period), "CpuPeriod"),
        (set(&r.cpu_quota), "CpuQuota"),
        (set(&r.cpu_realtime_period), "CpuRealtimePeriod"),
        (set(&r.cpu_realtime_runtime), "CpuRealtimeRuntime"),
        (set(&r.cpuset_cpus), "CpusetCpus"),
        (set(&r.cpuset_mems), "CpusetMems"),
        (non_empty(&r.devices), "Devices"),
        (non_empty(&r.device_cgroup_rules), "DeviceCgroupRules"),
        (non_empty(&r.device_requests), "DeviceRequests"),
        (set(&r.kernel_memory_tcp), "KernelMemoryTCP"),
        (set(&r.memory_reservation), "MemoryReservation"),
        (set(&r.memory_swap), "MemorySwap"),
        (
            r.memory_swappiness.is_some_and(|s| s != -1),
            "MemorySwappiness",
        ),
        (set(&r.oom_kill_disable), "OomKillDisable"),
        (
            set(&r.init),
            "Init (an init cannot be added to a created container)",
        ),
        (non_empty(&r.ulimits), "Ulimits"),
        (set(&r.cpu_count), "CpuCount"),
        (set(&r.cpu_percent), "CpuPercent"),
        (set(&r.io_maximum_iops), "IOMaximumIOps"),
        (set(&r.io_maximum_bandwidth), "IOMaximumBandwidth"),
    ];
    match refused.iter().find(|(hit, _)| *hit) {
        Some((_, what)) => Err(Error::NotImplemented(format!(
            "{what}: berth's update applies Memory, NanoCpus, PidsLimit and RestartPolicy"
        ))),
        None => Ok(()),
    }
}

/// The OCI resources for the limits given (at start, the container's; at update, the
/// changed ones: the others stay as they are). CPUs become a CFS quota over a 100 ms
/// period.
pub(super) fn oci_resources(
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    pids: Option<i64>,
) -> Result<oci_spec::runtime::LinuxResources> {
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };
    let bad = |e: oci_spec::OciSpecError| Error::InvalidParameter(e.to_string());
    let mut r = LinuxResourcesBuilder::default();
    if let Some(m) = memory {
        r = r.memory(
            LinuxMemoryBuilder::default()
                .limit(m)
                .build()
                .map_err(bad)?,
        );
    }
    if let Some(n) = nano_cpus {
        let period = 100_000u64;
        let quota = (n as i128 * period as i128 / 1_000_000_000) as i64;
        r = r.cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota(quota)
                .build()
                .map_err(bad)?,
        );
    }
    if let Some(p) = pids {
        r = r.pids(LinuxPidsBuilder::default().limit(p).build().map_err(bad)?);
    }
    r.build().map_err(bad)
}

impl Daemon {
    /// `POST /containers/{id}/update`: checks everything, applies it to the running
    /// container if it runs, then records it (so a failure changes nothing).
    pub async fn update_container(self: &Arc<Self>, c: Arc<Ctr>, b: UpdateBody) -> Result<()> {
        refuse_unapplied(&b.resources)?;
        let _op = c.op.lock().await;
        let rec = c.record();
        let r = &b.resources;
        let memory = r.memory.filter(|m| *m != 0);
        if let Some(m) = memory {
            if m < 6 << 20 {
                return Err(Error::InvalidParameter(
                    "Minimum memory limit allowed is 6MB".into(),
                ));
            }
        }
        let nano_cpus = r.nano_cpus.filter(|n| *n != 0);
        if nano_cpus.is_some_and(|n| n < 0) {
            return Err(Error::InvalidParameter(
                "Range of CPUs is from 0.01 to the number of CPUs".into(),
            ));
        }
        let pids = match r.pids_limit {
            None | Some(0) => None,
            Some(p) if p > 0 => Some(p),
            Some(_) => return Err(Error::NotImplemented(
                "PidsLimit: removing a container's pids limit (-1) is not built; set a new limit"
                    .into(),
            )),
        };
        let policy = match &b.restart_policy {
            Some(p) if p.name.is_some() => {
                let mut hc = rec.host_config.base.clone();
                hc.restart_policy = Some(p.clone());
                Some(super::restart::RestartPolicy::from_host_config(&hc)?)
            }
            _ => None,
        };
        let new_memory = memory.unwrap_or(rec.memory);
        let new_cpus = nano_cpus.unwrap_or(rec.nano_cpus);
        if memory.is_some() || nano_cpus.is_some() {
            // Within the tenant's quotas, counting the others it has.
            let _quota = self.quota_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.check_quota_for(&rec.id, new_memory, new_cpus)?;
        }
        if rec.state.running() && (memory.is_some() || nano_cpus.is_some() || pids.is_some()) {
            self.sandbox(&rec)
                .check_update(rec.sandbox_sized, (new_memory, new_cpus))?;
            let resources = Box::new(oci_resources(memory, nano_cpus, pids)?);
            let agent = self.agent(&rec);
            let id = rec.id.clone();
            blocking(move || agent.call(&Request::Update { id, resources }).map(|_| ())).await?;
        }
        self.update(&c, |x| {
            x.memory = new_memory;
            x.nano_cpus = new_cpus;
            x.host_config.base.memory = Some(new_memory);
            x.host_config.base.nano_cpus = Some(new_cpus);
            if let Some(p) = pids {
                x.pids_limit = p;
                x.host_config.base.pids_limit = Some(p);
            }
            if let Some(p) = &policy {
                x.restart_policy = p.clone();
                x.host_config.base.restart_policy = b.restart_policy.clone();
            }
            Ok(())
        })?;
        self.event(
            "container",
            "update",
            &rec.id,
            &[("name", rec.name.clone())],
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_update_does_not_apply_is_refused_by_name() {
        refuse_unapplied(&docker::Resources::default()).unwrap();
        // What the docker CLI sends for `docker update --memory 64m` (zero values).
        let r: docker::Resources = serde_json::from_str(
            r#"{"Memory":67108864,"CpuShares":0,"BlkioWeight":0,"CpuPeriod":0,"CpuQuota":0,"MemorySwap":0,"MemoryReservation":0,"KernelMemoryTCP":0,"PidsLimit":null,"CpusetCpus":"","BlkioWeightDevice":null}"#,
        )
        .unwrap();
        refuse_unapplied(&r).unwrap();
        let r = docker::Resources {
            cpu_shares: Some(512),
            ..Default::default()
        };
        let e = refuse_unapplied(&r).unwrap_err();
        assert!(e.to_string().contains("CpuShares"), "{e}");
        assert_eq!(crate::router::status_of(&e).as_u16(), 501);
    }

    #[test]
    fn only_the_limits_given_are_sent() {
        let r = oci_resources(Some(64 << 20), None, Some(20)).unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert!(r.cpu().is_none());
        assert_eq!(r.pids().as_ref().unwrap().limit(), 20);
        let r = oci_resources(None, Some(500_000_000), None).unwrap();
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50_000));
    }
}
