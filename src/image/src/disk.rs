//! Disks for microVMs: an image's read-only root (erofs, built with `mkfs.erofs` from the
//! unpacked tree) and a container's writable scratch disk (sparse ext4). Why erofs, and
//! why one disk per image rather than per layer: docs/images.md.

use std::io;
use std::path::Path;
use std::process::Command;

/// Errors building disks.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The tool could not be started.
    #[error("cannot run {tool} (package {package}): {err}")]
    Spawn {
        /// The tool.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
        /// Why.
        err: io::Error,
    },
    /// The tool failed.
    #[error("{tool} failed for {path}: {output}")]
    Failed {
        /// The tool.
        tool: &'static str,
        /// The disk.
        path: String,
        /// What it said.
        output: String,
    },
    /// A scratch disk size of zero, or too large.
    #[error("invalid scratch disk size {0} MiB: must be 1..=1048576")]
    BadSize(u64),
}

fn run(
    tool: &'static str,
    package: &'static str,
    cmd: &mut Command,
    path: &Path,
) -> Result<(), DiskError> {
    let out = cmd
        .output()
        .map_err(|err| DiskError::Spawn { tool, package, err })?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if output.is_empty() {
            output = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        return Err(DiskError::Failed {
            tool,
            path: path.display().to_string(),
            output,
        });
    }
    Ok(())
}

/// The granule an erofs disk's size is padded to: a virtio-pmem device's (the guest adds
/// its memory in 2 MiB subsections).
pub const DISK_ALIGN: u64 = 2 << 20;

/// Builds an uncompressed erofs image of `tree` at `out` (owners, modes, devices, links
/// and extended attributes kept as they are in the tree). Every file's data starts on a
/// block of its own (no tail packed into its inode), and the image is padded with zeros
/// to a multiple of [`DISK_ALIGN`]: so that a guest can map it with DAX from a virtio-pmem
/// device (docs/images.md).
pub fn build_erofs(tree: &Path, out: &Path) -> Result<(), DiskError> {
    run(
        "mkfs.erofs",
        "erofs-utils",
        Command::new("mkfs.erofs")
            .args(["--quiet", "-Enoinline_data"])
            .arg(out)
            .arg(tree),
        out,
    )?;
    let pad = |err: io::Error| DiskError::Failed {
        tool: "padding",
        path: out.display().to_string(),
        output: err.to_string(),
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(out)
        .map_err(pad)?;
    let len = f.metadata().map_err(pad)?.len();
    f.set_len(len.div_ceil(DISK_ALIGN) * DISK_ALIGN)
        .map_err(pad)
}

/// Creates a sparse ext4 disk of `size_mib` at `out`, for a container's writable layer
/// (the guest agent mounts it as the overlay's upper and work directories).
pub fn build_scratch(out: &Path, size_mib: u64) -> Result<(), DiskError> {
    if size_mib == 0 || size_mib > 1 << 20 {
        return Err(DiskError::BadSize(size_mib));
    }
    run(
        "mke2fs",
        "e2fsprogs",
        Command::new("mke2fs")
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
            ])
            .arg(out)
            .arg(format!("{size_mib}M")),
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_erofs_disk_is_built_from_a_tree() {
        let d = std::env::temp_dir().join(format!("berth-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("tree/etc")).unwrap();
        std::fs::write(d.join("tree/etc/hostname"), b"berth\n").unwrap();
        build_erofs(&d.join("tree"), &d.join("root.erofs")).unwrap();
        let img = std::fs::read(d.join("root.erofs")).unwrap();
        // The erofs superblock magic sits at byte 1024; the image is padded for pmem.
        assert_eq!(&img[1024..1028], &0xE0F5_E1E2u32.to_le_bytes());
        assert_eq!(img.len() as u64, DISK_ALIGN);
        let e = build_erofs(&d.join("missing"), &d.join("x.erofs")).unwrap_err();
        assert!(e.to_string().contains("mkfs.erofs failed"), "{e}");
        build_scratch(&d.join("scratch.ext4"), 64).unwrap();
        let m = std::fs::metadata(d.join("scratch.ext4")).unwrap();
        assert_eq!(m.len(), 64 << 20);
        assert!(build_scratch(&d.join("zero.ext4"), 0).is_err());
        std::fs::remove_dir_all(d).unwrap();
    }
}
