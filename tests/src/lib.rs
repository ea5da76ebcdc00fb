//! Helpers for berth's end-to-end tests: the repository's scripts, the guest kernel, and
//! the lab (a KVM-capable VM under QEMU's software CPU, see `tests/lab/run`).

pub mod oci;
pub mod registry;

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub struct Finished {
    /// Exit status; 128+N when killed by signal N.
    pub status: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl From<Output> for Finished {
    fn from(o: Output) -> Self {
        use std::os::unix::process::ExitStatusExt;
        let status = o
            .status
            .code()
            .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0));
        Finished {
            status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs a build script of the repository and takes the path it prints last.
fn script_path(what: &str, mut cmd: Command) -> io::Result<(PathBuf, Finished)> {
    let out: Finished = cmd.current_dir(repo_root()).output()?.into();
    if out.status != 0 {
        return Err(io::Error::other(format!(
            "{what} failed ({}): {}",
            out.status, out.stderr
        )));
    }
    let path = out
        .stdout
        .lines()
        .last()
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::other(format!("{what} printed no path")))?;
    Ok((path, out))
}

/// Builds (or reuses) the guest kernel with `kernel/build.sh`; returns the vmlinux path and
/// the script's output.
pub fn guest_kernel() -> io::Result<(PathBuf, Finished)> {
    script_path(
        "kernel/build.sh",
        Command::new(repo_root().join("kernel/build.sh")),
    )
}

/// virtiofsd, the backend of microVMs' volumes (built once into the cache by
/// `need_virtiofsd` in scripts/lib/common.sh, which scripts/test runs first).
pub fn virtiofsd() -> io::Result<PathBuf> {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(". scripts/lib/common.sh && need_virtiofsd");
    script_path("need_virtiofsd", cmd).map(|(p, _)| p)
}

/// Builds a busybox initramfs at `out` whose /init is the shell script `init`; each of
/// `programs` (a host path) is copied in with the libraries it needs.
pub fn busybox_initramfs(out: &Path, init: &str, programs: &[&str]) -> io::Result<()> {
    let script = out.with_extension("init.sh");
    std::fs::write(&script, init)?;
    let mut cmd = Command::new(repo_root().join("scripts/mkinitramfs"));
    cmd.arg(out).arg(&script);
    for p in programs {
        cmd.arg(format!("bin:{p}"));
    }
    let r: Finished = cmd.output()?.into();
    std::fs::remove_file(&script)?;
    if r.status != 0 {
        return Err(io::Error::other(format!(
            "mkinitramfs failed: {}",
            r.stderr
        )));
    }
    Ok(())
}

/// For a test that runs inside the lab: outside it, re-runs this very test (`name`, the
/// test binary with `--exact`) through the lab, asserts that it passed there, and returns
/// false (the caller returns); inside (`BERTH_IN_LAB`), returns true (the caller goes on).
pub fn in_lab_or_rerun(name: &str, timeout: Duration) -> bool {
    if std::env::var_os("BERTH_IN_LAB").is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Lab::new()
        .timeout(timeout)
        .run(&[
            exe.to_str().unwrap(),
            "--exact",
            name,
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .unwrap();
    eprintln!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.status, 0, "{name} failed in the lab");
    assert!(
        out.stdout.contains("test result: ok. 1 passed"),
        "the inner test did not run"
    );
    false
}

/// One lab VM at a time: the lab is CPU-bound under software emulation.
static LAB_LOCK: Mutex<()> = Mutex::new(());

/// tests/lab/run's exit status when its watchdog found the lab VM frozen.
pub const LAB_FROZE: i32 = 123;

/// A command to run in the lab.
#[derive(Debug, Clone)]
pub struct Lab {
    timeout: Duration,
    rw: Vec<PathBuf>,
    tmpdir: Option<PathBuf>,
}

impl Default for Lab {
    fn default() -> Self {
        Lab {
            timeout: Duration::from_secs(300),
            rw: Vec::new(),
            tmpdir: None,
        }
    }
}

impl Lab {
    /// A lab run with a 300 s timeout.
    pub fn new() -> Lab {
        Lab::default()
    }

    /// Kill the lab VM after this long (whole seconds).
    pub fn timeout(mut self, t: Duration) -> Lab {
        self.timeout = t;
        self
    }

    /// Make a host directory writable inside the lab, at the same path.
    pub fn rw(mut self, dir: impl Into<PathBuf>) -> Lab {
        self.rw.push(dir.into());
        self
    }

    /// Where the lab script keeps its temporary directory (its TMPDIR).
    pub fn tmpdir(mut self, dir: impl Into<PathBuf>) -> Lab {
        self.tmpdir = Some(dir.into());
        self
    }

    /// Runs `args` as root inside the lab and waits for it.
    ///
    /// Nothing is retried: a command that fails, fails, and so does a lab VM that the
    /// watchdog finds frozen (exit 123, with its report on stderr; docs/testing.md says
    /// why the lab froze and what keeps it from freezing now).
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> io::Result<Finished> {
        let mut cmd = Command::new(repo_root().join("tests/lab/run"));
        cmd.arg("--timeout")
            .arg(self.timeout.as_secs().max(1).to_string());
        for d in &self.rw {
            cmd.arg("--rw").arg(d);
        }
        if let Some(t) = &self.tmpdir {
            cmd.env("TMPDIR", t);
        }
        cmd.arg("--");
        cmd.args(args.iter().map(|a| a.as_ref()));
        let _one_at_a_time = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let done: Finished = cmd.output()?.into();
        if done.status == LAB_FROZE {
            eprintln!(
                "lab: THE LAB VM FROZE (the watchdog's report follows)\n{}",
                done.stderr
            );
        }
        Ok(done)
    }

    /// Runs a shell snippet (`sh -c SCRIPT`) inside the lab.
    pub fn sh(&self, script: &str) -> io::Result<Finished> {
        self.run(&["sh", "-c", script])
    }
}

/// A fresh, empty directory under the target dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `target/e2e-tmp/<name>-<pid>-<n>`. Not under /tmp so that paths are the same
    /// inside the lab.
    pub fn new(name: &str) -> io::Result<TempDir> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = repo_root()
            .join("target/e2e-tmp")
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Path of a binary built by `cargo build --workspace` (next to the test executable's
/// `deps/` directory).
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` first (scripts/test does)",
        p.display()
    );
    p
}

/// A busybox-static root filesystem at `dir` (applet links, /etc/passwd and /etc/group with
/// root, nobody and a `www` user, empty /proc, /sys, /dev, /tmp, /mnt), plus a file
/// `/not-executable`.
pub fn busybox_rootfs(dir: &Path) -> io::Result<()> {
    for d in [
        "bin", "etc", "proc", "sys", "dev", "tmp", "mnt", "root", "home/www",
    ] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let link = dir.join("bin").join(applet);
            if link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink("busybox", link)?;
            }
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/home/www:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nwww:x:33:\naudio:x:29:www\nnogroup:x:65534:\n",
    )?;
    std::fs::write(dir.join("not-executable"), "just data\n")?;
    Ok(())
}

/// A test PKI made with the `openssl` command: a CA, a server certificate for 127.0.0.1
/// and localhost, and client certificates whose common name is the given name, each in a
/// directory laid out as the docker CLI's `DOCKER_CERT_PATH` wants it.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A new CA in `dir` (named `cn`), with a server certificate.
    pub fn new(dir: &Path, cn: &str) -> io::Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let p = Pki {
            dir: dir.to_path_buf(),
        };
        p.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
        ])?;
        p.sign(
            "server",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )?;
        Ok(p)
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's certificate and key.
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.join("server-cert.pem"),
            self.dir.join("server-key.pem"),
        )
    }

    /// A client certificate with common name `cn`, signed by this CA, in a directory with
    /// `cert.pem`, `key.pem` and `server_ca` as `ca.pem` (what verifies the server).
    pub fn client(&self, cn: &str, server_ca: &Path) -> io::Result<PathBuf> {
        let name = format!("client-{cn}");
        self.sign(&name, cn, "extendedKeyUsage=clientAuth\n")?;
        let d = self.dir.join(&name);
        std::fs::create_dir_all(&d)?;
        std::fs::rename(
            self.dir.join(format!("{name}-cert.pem")),
            d.join("cert.pem"),
        )?;
        std::fs::rename(self.dir.join(format!("{name}-key.pem")), d.join("key.pem"))?;
        std::fs::copy(server_ca, d.join("ca.pem"))?;
        Ok(d)
    }

    fn sign(&self, name: &str, cn: &str, ext: &str) -> io::Result<()> {
        std::fs::write(self.dir.join(format!("{name}.ext")), ext)?;
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ])?;
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}-cert.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ])
    }

    fn openssl(&self, args: &[&str]) -> io::Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }
}
