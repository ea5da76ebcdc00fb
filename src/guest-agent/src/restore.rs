//! What the agent does in a microVM started from a snapshot (docs/snapshots.md): the guest
//! woke up where a template guest was paused, with that guest's clock, random state and
//! devices.

use std::io::Write;
use std::os::fd::AsRawFd;

/// Fewest random bytes accepted from the host: a full reseed of the kernel's generator.
pub const MIN_ENTROPY: usize = 32;

/// `RNDADDENTROPY` = `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG` = `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Sets the wall clock, reseeds the kernel's random generator from `entropy`, and probes
/// the virtio-mmio slots no driver has taken (devices added to the restored monitor).
pub fn restored(realtime_ns: u64, entropy: &[u8]) -> Result<(), String> {
    if entropy.len() < MIN_ENTROPY || entropy.len() > 4096 {
        return Err(format!(
            "restored: {} random bytes; between {MIN_ENTROPY} and 4096 needed",
            entropy.len()
        ));
    }
    let ts = libc::timespec {
        tv_sec: (realtime_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (realtime_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(format!(
            "restored: setting the clock: {}",
            std::io::Error::last_os_error()
        ));
    }
    reseed(entropy).map_err(|e| format!("restored: reseeding the random generator: {e}"))?;
    probe_new_devices().map_err(|e| format!("restored: probing the added devices: {e}"))
}

/// Credits `entropy` to the input pool and makes the generator reseed from it at once:
/// whatever the snapshot's guest drew before is no help in guessing what comes next.
fn reseed(entropy: &[u8]) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&((entropy.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(entropy.len() as i32).to_ne_bytes());
    info.extend_from_slice(entropy);
    // Keep the buffer 4-byte aligned in length for the kernel's u32 array.
    while info.len() % 4 != 0 {
        info.push(0);
    }
    // SAFETY: `info` is a rand_pool_info of buf_size bytes after its header, and lives
    // across the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to probe each virtio-mmio platform device without a driver: the slots
/// the snapshot's guest found empty, where the restored monitor put its added devices (in
/// slot order, so the first added NIC is eth0 and disks are named in order). A slot still
/// empty fails its probe and stays as it was.
fn probe_new_devices() -> std::io::Result<()> {
    let dir = std::path::Path::new("/sys/bus/platform/devices");
    let mut slots: Vec<(u32, String)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("virtio-mmio.")?.parse().ok()?;
            Some((n, name))
        })
        .filter(|(_, name)| !dir.join(name).join("driver").exists())
        .collect();
    slots.sort();
    let mut probe = std::fs::OpenOptions::new()
        .write(true)
        .open("/sys/bus/platform/drivers_probe")?;
    for (_, name) in slots {
        // Each write probes one device; a slot left empty answers an error here, which
        // concerns it alone.
        let _ = probe.write_all(name.as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_little_or_too_much_entropy_is_refused_before_anything_changes() {
        let e = restored(0, &[0u8; 16]).unwrap_err();
        assert!(e.contains("16 random bytes"), "{e}");
        let e = restored(0, &vec![0u8; 5000]).unwrap_err();
        assert!(e.contains("5000 random bytes"), "{e}");
    }

    #[test]
    fn the_ioctl_numbers_are_linuxs() {
        // _IOW('R', 3, int[2]): dir 1, size 8, type 'R' (0x52), nr 3.
        assert_eq!(RNDADDENTROPY, (1 << 30) | (8 << 16) | (0x52 << 8) | 3);
        assert_eq!(RNDRESEEDCRNG, (0x52 << 8) | 7);
    }
}
