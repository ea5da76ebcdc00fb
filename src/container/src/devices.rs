//! The devices a container may open: Docker's default allow-list (runc's `AllowedDevices`),
//! enforced by the kernel's device controller. cgroup v1: `devices.deny` then
//! `devices.allow` in the container's `devices` cgroup. cgroup v2: a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the container's cgroup (as runc does;
//! hand-assembled here: it is a few dozen instructions, and a BPF toolchain or a crate such
//! as aya would be far larger than the program).
//!
//! Creating any device node stays allowed (`mknod`, with CAP_MKNOD); reading or writing one
//! is allowed only for the listed devices: a root process can't reach the host's disks,
//! `/dev/kvm`, `/dev/mem` or its consoles through a node it makes.

use std::path::Path;

/// Errors applying the allow-list.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Writing the v1 controller's files failed.
    #[error("the device allow-list: {path}: {err}")]
    V1 {
        /// The file.
        path: String,
        /// Why.
        err: std::io::Error,
    },
    /// Loading or attaching the v2 program failed.
    #[error(
        "the device allow-list: {step}: {err} (cgroup v2 needs a kernel with CONFIG_CGROUP_BPF)"
    )]
    Bpf {
        /// The step.
        step: &'static str,
        /// Why.
        err: std::io::Error,
    },
}

/// A device's type, as the controller names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A character device.
    Char,
    /// A block device.
    Block,
}

/// Access bits, as BPF_DEVCG_ACC_*.
pub const MKNOD: u32 = 1;
/// Reading.
pub const READ: u32 = 2;
/// Writing.
pub const WRITE: u32 = 4;

/// One allowed device (or range: `None` is any major or minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Its type.
    pub kind: Kind,
    /// Major number, or any.
    pub major: Option<u32>,
    /// Minor number, or any.
    pub minor: Option<u32>,
    /// What is allowed (MKNOD, READ, WRITE).
    pub access: u32,
}

const RWM: u32 = MKNOD | READ | WRITE;

const fn c(major: Option<u32>, minor: Option<u32>, access: u32) -> Rule {
    Rule {
        kind: Kind::Char,
        major,
        minor,
        access,
    }
}

/// Docker's default: make any node; use null, zero, full, random, urandom, tty, the ptys
/// and the tun device.
pub const DOCKER_DEFAULT: &[Rule] = &[
    c(None, None, MKNOD),
    Rule {
        kind: Kind::Block,
        major: None,
        minor: None,
        access: MKNOD,
    },
    c(Some(1), Some(3), RWM),    // /dev/null
    c(Some(1), Some(5), RWM),    // /dev/zero
    c(Some(1), Some(7), RWM),    // /dev/full
    c(Some(1), Some(8), RWM),    // /dev/random
    c(Some(1), Some(9), RWM),    // /dev/urandom
    c(Some(5), Some(0), RWM),    // /dev/tty
    c(Some(5), Some(2), RWM),    // /dev/ptmx
    c(Some(136), None, RWM),     // /dev/pts/*
    c(Some(10), Some(200), RWM), // /dev/net/tun
];

impl Rule {
    /// The v1 controller's line: `c 1:3 rwm`, `b *:* m`.
    pub fn v1_line(&self) -> String {
        let n = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_else(|| "*".into());
        let mut acc = String::new();
        for (bit, ch) in [(READ, 'r'), (WRITE, 'w'), (MKNOD, 'm')] {
            if self.access & bit != 0 {
                acc.push(ch);
            }
        }
        let k = match self.kind {
            Kind::Char => 'c',
            Kind::Block => 'b',
        };
        format!("{k} {}:{} {acc}", n(self.major), n(self.minor))
    }
}

/// Applies `rules` to a v1 `devices` cgroup directory: deny all, then allow each.
pub fn apply_v1(dir: &Path, rules: &[Rule]) -> Result<(), DeviceError> {
    let w = |file: &str, v: &str| {
        let p = dir.join(file);
        std::fs::write(&p, v).map_err(|err| DeviceError::V1 {
            path: p.display().to_string(),
            err,
        })
    };
    w("devices.deny", "a")?;
    for r in rules {
        w("devices.allow", &r.v1_line())?;
    }
    Ok(())
}

/// One BPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// r[dst] = *(u32 *)(r[src] + off)
const LDX_W: u8 = 0x61;
/// r[dst] = r[src] (64 bit)
const MOV_X: u8 = 0xbf;
/// r[dst] = imm
const MOV_K: u8 = 0xb7;
/// r[dst] &= imm
const AND_K: u8 = 0x57;
/// r[dst] >>= imm
const RSH_K: u8 = 0x77;
/// if r[dst] != imm goto +off
const JNE_K: u8 = 0x55;
/// return r0
const EXIT: u8 = 0x95;

/// BPF_DEVCG_DEV_BLOCK and BPF_DEVCG_DEV_CHAR.
fn devcg_type(k: Kind) -> i32 {
    match k {
        Kind::Block => 1,
        Kind::Char => 2,
    }
}

/// The program: 1 (allow) when some rule matches the access (`struct bpf_cgroup_dev_ctx`:
/// `access_type` = access << 16 | type, then major, minor), 0 (deny) otherwise.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),      // r2 = access_type
        insn(MOV_X, 3, 2, 0, 0),      // r3 = r2
        insn(AND_K, 3, 0, 0, 0xffff), // r3 = type
        insn(RSH_K, 2, 0, 0, 16),     // r2 = access
        insn(LDX_W, 4, 1, 4, 0),      // r4 = major
        insn(LDX_W, 5, 1, 8, 0),      // r5 = minor
    ];
    for r in rules {
        // The block's checks; each jumps past the block when it fails.
        let mut checks: Vec<(u8, u8, Option<i32>)> = vec![(JNE_K, 3, Some(devcg_type(r.kind)))];
        checks.push((MOV_X, 6, None)); // r6 = access
        checks.push((AND_K, 6, Some((!r.access & RWM) as i32))); // asked beyond the rule?
        checks.push((JNE_K, 6, Some(0)));
        if let Some(m) = r.major {
            checks.push((JNE_K, 4, Some(m as i32)));
        }
        if let Some(m) = r.minor {
            checks.push((JNE_K, 5, Some(m as i32)));
        }
        let len = checks.len() + 2;
        for (i, (code, dst, imm)) in checks.into_iter().enumerate() {
            let skip = (len - i - 1) as i16;
            p.push(match code {
                JNE_K => insn(JNE_K, dst, 0, skip, imm.unwrap_or(0)),
                MOV_X => insn(MOV_X, dst, 2, 0, 0),
                _ => insn(code, dst, 0, 0, imm.unwrap_or(0)),
            });
        }
        p.push(insn(MOV_K, 0, 0, 0, 1));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// The prefix of `union bpf_attr` that BPF_PROG_LOAD reads.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The prefix of `union bpf_attr` that BPF_PROG_ATTACH reads.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

/// BPF_PROG_LOAD of a cgroup-device program; its fd. With `log`, the verifier's log.
fn load(prog: &[Insn], log: Option<&mut Vec<u8>>) -> std::io::Result<i64> {
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"berth_devcg");
    let (log_level, log_size, log_buf) = match log {
        Some(l) => (1, l.len() as u32, l.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        prog_name: name,
        ..Default::default()
    };
    // SAFETY: BPF_PROG_LOAD reads `attr` (the attr prefix it knows, its size given) and
    // the instruction, license and log buffers it points at, which all outlive the call;
    // the kernel writes at most log_size bytes into the log.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoad,
            std::mem::size_of::<ProgLoad>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Loads the program for `rules` and attaches it to the v2 cgroup directory `dir`. The
/// attachment lives as long as the cgroup; the program's fd is closed here.
pub fn apply_v2(dir: &Path, rules: &[Rule]) -> Result<(), DeviceError> {
    use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
    let prog = program(rules);
    // No verifier log unless the load fails (a log too small for it fails the load).
    let fd = match load(&prog, None) {
        Ok(fd) => fd,
        Err(err) => {
            let mut log = vec![0u8; 1 << 20];
            let text = match load(&prog, Some(&mut log)) {
                Ok(fd) => {
                    // SAFETY: closes the fd the kernel just returned, owned by nothing else.
                    unsafe { libc::close(fd as i32) };
                    String::new()
                }
                Err(_) => {
                    let t = String::from_utf8_lossy(&log);
                    let t = t.trim_end_matches('\0').trim();
                    // The verifier's last words say why.
                    let from = (t.len().saturating_sub(600)..t.len())
                        .find(|&i| t.is_char_boundary(i))
                        .unwrap_or(t.len());
                    t[from..].to_owned()
                }
            };
            return Err(DeviceError::Bpf {
                step: "loading the BPF program",
                err: std::io::Error::new(err.kind(), format!("{err} {text}")),
            });
        }
    };
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cg = std::fs::File::open(dir).map_err(|err| DeviceError::Bpf {
        step: "opening the cgroup",
        err,
    })?;
    let attach = ProgAttach {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    // SAFETY: BPF_PROG_ATTACH reads `attach` (its size given); both fds are open.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attach as *const ProgAttach,
            std::mem::size_of::<ProgAttach>(),
        )
    };
    if r < 0 {
        return Err(DeviceError::Bpf {
            step: "attaching the BPF program to the cgroup",
            err: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines_are_the_controllers() {
        assert_eq!(DOCKER_DEFAULT[0].v1_line(), "c *:* m");
        assert_eq!(DOCKER_DEFAULT[1].v1_line(), "b *:* m");
        assert_eq!(DOCKER_DEFAULT[2].v1_line(), "c 1:3 rwm");
        assert_eq!(DOCKER_DEFAULT[9].v1_line(), "c 136:* rwm");
    }

    /// Runs the program on one access, as the kernel would (the few opcodes it uses).
    fn run(p: &[Insn], kind: Kind, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | devcg_type(kind) as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                MOV_X => r[dst] = r[src],
                MOV_K => r[dst] = i.imm as u64,
                AND_K => r[dst] &= i.imm as u64,
                RSH_K => r[dst] >>= i.imm,
                JNE_K => {
                    if r[dst] != i.imm as u64 {
                        pc += i.off as usize;
                    }
                }
                EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_default_program_allows_the_list_and_denies_the_rest() {
        let p = program(DOCKER_DEFAULT);
        // Any node may be made, block or char.
        assert_eq!(run(&p, Kind::Block, MKNOD, 7, 0), 1);
        assert_eq!(run(&p, Kind::Char, MKNOD, 10, 232), 1);
        // Only listed ones opened.
        assert_eq!(run(&p, Kind::Char, READ | WRITE, 1, 3), 1);
        assert_eq!(run(&p, Kind::Char, READ, 136, 7), 1);
        assert_eq!(run(&p, Kind::Block, READ, 7, 0), 0, "a loop device");
        assert_eq!(run(&p, Kind::Char, READ | WRITE, 10, 232), 0, "/dev/kvm");
        assert_eq!(run(&p, Kind::Char, READ, 1, 1), 0, "/dev/mem");
        assert_eq!(run(&p, Kind::Char, WRITE, 4, 0), 0, "tty0");
        assert_eq!(
            run(&p, Kind::Block, MKNOD | READ, 1, 3),
            0,
            "null's numbers, as a block device"
        );
        assert_eq!(program(&[]).len(), 8);
        assert_eq!(run(&program(&[]), Kind::Char, READ, 1, 3), 0);
    }
}
