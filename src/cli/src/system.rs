//! System commands: info, version and system prune.

use crate::client::{Conn, Fail};

/// `info`.
pub(crate) async fn info(c: &Conn) -> Result<u8, Fail> {
    let v = c.call("GET", "/info", None).await?;
    println!("Server:");
    for k in [
        "Containers",
        "ContainersRunning",
        "ContainersStopped",
        "Images",
        "ServerVersion",
        "Isolation",
        "KernelVersion",
        "OperatingSystem",
        "NCPU",
        "DockerRootDir",
    ] {
        println!(
            " {k}: {}",
            v[k].as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v[k].to_string())
        );
    }
    for w in v["Warnings"].as_array().cloned().unwrap_or_default() {
        println!("WARNING: {}", w.as_str().unwrap_or_default());
    }
    Ok(0)
}

/// `version`: the client's, then the daemon's.
pub(crate) async fn version(c: &Conn) -> Result<u8, Fail> {
    println!(
        "Client:\n Version: {}\n API version: 1.44",
        env!("CARGO_PKG_VERSION")
    );
    let v = c.call("GET", "/version", None).await?;
    println!(
        "Server: berth\n Version: {}\n API version: {} (minimum version {})",
        v["Version"].as_str().unwrap_or(""),
        v["ApiVersion"].as_str().unwrap_or(""),
        v["MinAPIVersion"].as_str().unwrap_or("")
    );
    Ok(0)
}

/// `system prune`: stopped containers, then dangling images (only with `-f`).
pub(crate) async fn prune(c: &Conn, force: bool) -> Result<u8, Fail> {
    if !force {
        eprintln!("WARNING! This will remove all stopped containers and dangling images. Pass -f to go ahead.");
        return Ok(1);
    }
    let a = c.call("POST", "/containers/prune", None).await?;
    for id in a["ContainersDeleted"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        println!("Deleted Container: {}", id.as_str().unwrap_or_default());
    }
    let b = c.call("POST", "/images/prune", None).await?;
    for x in b["ImagesDeleted"].as_array().cloned().unwrap_or_default() {
        println!(
            "Deleted Image: {}",
            x["Deleted"].as_str().unwrap_or_default()
        );
    }
    println!("Total reclaimed space: {}B", b["SpaceReclaimed"]);
    Ok(0)
}
