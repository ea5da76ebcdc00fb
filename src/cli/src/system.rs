//! System commands: info, version and system prune.

use crate::client::{Conn, Fail};
use berth_api::{docker, Info, Version};

/// `info`.
pub(crate) async fn info(c: &Conn) -> Result<u8, Fail> {
    let v: Info = c.call("GET", "/info", None).await?;
    let n = |x: Option<i64>| x.map_or_else(|| "null".to_owned(), |x| x.to_string());
    let t = |x: Option<String>| x.unwrap_or_else(|| "null".to_owned());
    let b = v.base;
    println!("Server:");
    for (k, val) in [
        ("Containers", n(b.containers)),
        ("ContainersRunning", n(b.containers_running)),
        ("ContainersStopped", n(b.containers_stopped)),
        ("Images", n(b.images)),
        ("ServerVersion", t(b.server_version)),
        ("Isolation", v.isolation),
        ("KernelVersion", t(b.kernel_version)),
        ("OperatingSystem", t(b.operating_system)),
        ("NCPU", n(b.ncpu)),
        ("DockerRootDir", t(b.docker_root_dir)),
    ] {
        println!(" {k}: {val}");
    }
    for w in b.warnings.unwrap_or_default() {
        println!("WARNING: {w}");
    }
    Ok(0)
}

/// `version`: the client's, then the daemon's.
pub(crate) async fn version(c: &Conn) -> Result<u8, Fail> {
    println!(
        "Client:\n Version: {}\n API version: 1.44",
        env!("CARGO_PKG_VERSION")
    );
    let v: Version = c.call("GET", "/version", None).await?;
    println!(
        "Server: berth\n Version: {}\n API version: {} (minimum version {})",
        v.version, v.api_version, v.min_api_version
    );
    Ok(0)
}

/// `system prune`: stopped containers, then dangling images (only with `-f`).
pub(crate) async fn prune(c: &Conn, force: bool) -> Result<u8, Fail> {
    if !force {
        eprintln!("WARNING! This will remove all stopped containers and dangling images. Pass -f to go ahead.");
        return Ok(1);
    }
    let a: docker::ContainerPruneResponse = c.call("POST", "/containers/prune", None).await?;
    for id in a.containers_deleted.unwrap_or_default() {
        println!("Deleted Container: {id}");
    }
    let b: docker::ImagePruneResponse = c.call("POST", "/images/prune", None).await?;
    for x in b.images_deleted.unwrap_or_default() {
        println!("Deleted Image: {}", x.deleted.unwrap_or_default());
    }
    println!("Total reclaimed space: {}B", b.space_reclaimed.unwrap_or(0));
    Ok(0)
}
