//! Typed Docker Engine API models (v1.44), shared by berthd and the berth CLI. The object
//! models come from `bollard-stubs` (generated from Docker's v1.44 swagger); berth adds
//! the request bodies the swagger leaves implicit, the replies it gets wrong, and
//! [`HostConfig`]'s `Isolation`, where berth accepts `vm`.
//!
//! Unknown fields are ignored when read, as dockerd ignores them.

pub use bollard_stubs::models as docker;
use serde::{Deserialize, Serialize};

/// `HostConfig`, with `Isolation` as a plain string (`vm`, `process`, `default`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostConfig {
    /// Docker's fields.
    #[serde(flatten)]
    pub base: docker::HostConfig,
    /// vm (berth's default), process, default, or "".
    #[serde(rename = "Isolation", default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
}

/// The body of `POST /containers/create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateBody {
    /// The container's configuration.
    #[serde(flatten)]
    pub config: docker::ContainerConfig,
    /// Host-dependent configuration.
    #[serde(
        rename = "HostConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub host_config: Option<HostConfig>,
    /// Networks to connect to.
    #[serde(
        rename = "NetworkingConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub networking_config: Option<docker::NetworkingConfig>,
}

/// The body of `POST /containers/{id}/update`: Docker's `Resources` and a restart
/// policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateBody {
    /// The resource limits.
    #[serde(flatten)]
    pub resources: docker::Resources,
    /// A new restart policy.
    #[serde(
        rename = "RestartPolicy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub restart_policy: Option<docker::RestartPolicy>,
}

/// The body of `POST /containers/{id}/exec`.
pub type ExecBody = docker::ExecConfig;
/// The body of `POST /exec/{id}/start`.
pub type ExecStartBody = docker::ExecStartConfig;

/// `GET /containers/{id}/json`: Docker's inspect object with berth's [`HostConfig`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerInspect {
    /// Docker's fields (its `HostConfig` left empty).
    #[serde(flatten)]
    pub base: docker::ContainerInspectResponse,
    /// The host configuration, with berth's isolation name.
    #[serde(rename = "HostConfig")]
    pub host_config: HostConfig,
}

/// `GET /containers/{id}/stats`: the parts of Docker's stats object berth measures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerStats {
    /// When it was read (RFC 3339).
    pub read: String,
    /// Container ID.
    pub id: String,
    /// "/name".
    pub name: String,
    /// Memory.
    pub memory_stats: MemoryStats,
    /// CPU now.
    pub cpu_stats: CpuStats,
    /// CPU at the previous read.
    pub precpu_stats: CpuStats,
    /// Processes.
    pub pids_stats: PidsStats,
}

/// Memory usage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryStats {
    /// Bytes in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<u64>,
    /// The limit, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// CPU usage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuStats {
    /// Totals.
    pub cpu_usage: CpuUsage,
    /// CPUs online.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online_cpus: Option<u32>,
    /// The host's CPU time, all CPUs, in nanoseconds (Docker's CPU % divides the
    /// container's CPU time by this one's, between two samples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_cpu_usage: Option<u64>,
}

/// CPU time used.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuUsage {
    /// Nanoseconds.
    pub total_usage: u64,
}

/// Process count.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PidsStats {
    /// Processes now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
}

/// One line of Docker's progress stream (pull, push, import, load): its JSONMessage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JsonMessage {
    /// What is happening.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The layer it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A progress bar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Bytes done and to do.
    #[serde(rename = "progressDetail", skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<ProgressDetail>,
    /// Output text (load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The failure, as a line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failure, as an object.
    #[serde(rename = "errorDetail", skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<ErrorDetail>,
    /// The result of a push.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux: Option<PushResult>,
}

impl JsonMessage {
    /// A status line.
    pub fn status(s: impl Into<String>) -> JsonMessage {
        JsonMessage {
            status: Some(s.into()),
            ..Default::default()
        }
    }

    /// An error line.
    pub fn error(msg: &str) -> JsonMessage {
        JsonMessage {
            error: Some(msg.to_owned()),
            error_detail: Some(ErrorDetail {
                message: msg.to_owned(),
            }),
            ..Default::default()
        }
    }

    /// An output line.
    pub fn stream(s: impl Into<String>) -> JsonMessage {
        JsonMessage {
            stream: Some(s.into()),
            ..Default::default()
        }
    }
}

/// Progress of one layer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProgressDetail {
    /// Bytes done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    /// Bytes in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// An error in a progress stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorDetail {
    /// One line.
    pub message: String,
}

/// What a push pushed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PushResult {
    /// The tag.
    pub tag: String,
    /// The manifest's digest.
    pub digest: String,
    /// The manifest's size.
    pub size: usize,
}

/// The `X-Registry-Auth` header's JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Password or token.
    #[serde(default)]
    pub password: String,
}

/// `{"Id": ...}` (exec create, commit). The generated `IdResponse` spells it "ID".
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IdResponse {
    /// The new ID.
    #[serde(rename = "Id")]
    pub id: String,
}

/// `{"Id": ..., "Warnings": [...]}` (container create).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateResponse {
    /// The new ID.
    #[serde(rename = "Id")]
    pub id: String,
    /// Warnings.
    #[serde(rename = "Warnings")]
    pub warnings: Vec<String>,
}

/// `GET /version` (Docker's SystemVersion; the generated model can't hold the component
/// details the docker CLI prints, so it is declared here).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Version {
    /// The platform's name.
    pub platform: Platform,
    /// Its components (the engine).
    pub components: Vec<Component>,
    /// The daemon's version.
    pub version: String,
    /// The API version it speaks.
    pub api_version: String,
    /// The oldest API version it accepts.
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    /// The commit it was built from.
    pub git_commit: String,
    /// Docker's Go version (berth: none).
    pub go_version: String,
    /// Operating system.
    pub os: String,
    /// Architecture.
    pub arch: String,
    /// The host's kernel.
    pub kernel_version: String,
    /// When it was built.
    pub build_time: String,
}

/// `Platform` of [`Version`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Platform {
    /// Its name.
    pub name: String,
}

/// A component of [`Version`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Component {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Details.
    pub details: ComponentDetails,
}

/// Details of a [`Component`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ComponentDetails {
    /// The API version.
    pub api_version: String,
    /// The oldest API version.
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    /// Operating system.
    pub os: String,
    /// Architecture.
    pub arch: String,
    /// The host's kernel.
    pub kernel_version: String,
    /// "false".
    pub experimental: String,
}

/// `GET /info`: Docker's SystemInfo with berth's isolation name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Info {
    /// Docker's fields.
    #[serde(flatten)]
    pub base: docker::SystemInfo,
    /// The default isolation (vm or process).
    #[serde(rename = "Isolation")]
    pub isolation: String,
    /// Swarm's generic resources: a list in Docker's API (bollard-stubs' generated type
    /// is a single object, which the docker CLI could not read), so `base`'s stays
    /// unset and this carries the key.
    #[serde(rename = "GenericResources", default)]
    pub generic_resources: Vec<docker::GenericResourcesInner>,
}

/// A duration as Docker words it in `ps`'s STATUS and CREATED columns (go-units'
/// `HumanDuration`): "Less than a second", "5 seconds", "About a minute", "3 hours",
/// "2 days", "3 weeks", "4 months", "2 years".
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (minutes, hours) = (secs / 60, (secs + 1800) / 3600);
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_read_as_dockers() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (45, "45 seconds"),
            (90, "About a minute"),
            (600, "10 minutes"),
            (3700, "About an hour"),
            (5 * 3600, "5 hours"),
            (3 * 86400, "3 days"),
            (20 * 86400, "2 weeks"),
            (100 * 86400, "3 months"),
            (800 * 86400, "2 years"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(s), want, "{s} s");
        }
    }
}
