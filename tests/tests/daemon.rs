//! berthd driven by the real docker CLI (`/usr/local/bin/docker`, DOCKER_HOST pointing at
//! berthd), natively with process isolation; and raw API requests for bad input.

use berth_e2e::registry::{Auth, Registry};
use berth_e2e::{built_binary, busybox_rootfs, guest_kernel, repo_root, Finished, Pki, TempDir};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Berthd {
    child: Option<Child>,
    dir: TempDir,
    exec_root: PathBuf,
    sock: PathBuf,
}

impl Berthd {
    fn start(extra: &[&str]) -> Berthd {
        let dir = TempDir::new("berthd").unwrap();
        // Short: socket paths under it must fit in 108 bytes.
        let exec_root = PathBuf::from(format!(
            "/tmp/berth-e2e-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .rsplit('-')
                .next()
                .unwrap()
        ));
        // The socket lives in the exec root too: the lab's 9p-backed tree can't hold sockets.
        let mut b = Berthd {
            child: None,
            sock: exec_root.join("berthd.sock"),
            dir,
            exec_root,
        };
        b.spawn(extra);
        b
    }

    fn spawn(&mut self, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("berthd.log"))
            .unwrap();
        let child = Command::new(built_binary("berthd"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .arg("--data-root")
            .arg(self.dir.path().join("data"))
            .arg("--exec-root")
            .arg(&self.exec_root)
            // Tests run side by side in the host's namespace: no default bridge (its
            // networking is tested in its own namespaces, tests/network.rs).
            .args(["--bridge", "none"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        while raw(&self.sock, "GET /_ping HTTP/1.0\r\n\r\n")
            .map(|(s, _)| s != 200)
            .unwrap_or(true)
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "berthd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// A docker command, bounded (a hang becomes a failure with 137, not a stuck test).
    fn docker_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["-s", "KILL", "150", docker_bin()]);
        c.env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .args(args);
        c
    }

    fn docker(&self, args: &[&str]) -> Finished {
        self.docker_cmd(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    }

    fn ok(&self, args: &[&str]) -> String {
        let f = self.docker(args);
        assert_eq!(
            f.status,
            0,
            "docker {args:?}: {}\n{}\nberthd log:\n{}",
            f.stdout,
            f.stderr,
            self.log()
        );
        f.stdout
    }

    /// Imports a busybox root as `bb:1`.
    fn busybox(&self) {
        let root = self.dir.path().join("bbroot");
        busybox_rootfs(&root).unwrap();
        let tar = self.dir.path().join("bb.tar");
        tar_dir(&root, &tar);
        let id = self.ok(&["import", tar.to_str().unwrap(), "bb:1"]);
        assert!(id.trim().starts_with("sha256:"), "{id}");
    }
}

impl Berthd {
    /// Writes "kept" to /data/f of volume `data` from one container, removes it, and reads
    /// it back from the next.
    fn volume_kept_after_its_writer(&self) {
        self.ok(&[
            "run",
            "--name",
            "writer",
            "-v",
            "data:/data",
            "bb:1",
            "sh",
            "-c",
            "echo kept > /data/f",
        ]);
        self.ok(&["rm", "writer"]);
        assert_eq!(
            self.ok(&["run", "--rm", "-v", "data:/data", "bb:1", "cat", "/data/f"]),
            "kept\n"
        );
    }

    /// vol:1: busybox with content at its `VOLUME /seed` (`/seed/hello`).
    fn volume_image(&self) {
        let root = self.dir.path().join("volroot");
        busybox_rootfs(&root).unwrap();
        std::fs::create_dir_all(root.join("seed")).unwrap();
        std::fs::write(root.join("seed/hello"), "from the image\n").unwrap();
        let tar = self.dir.path().join("vol.tar");
        tar_dir(&root, &tar);
        self.ok(&[
            "import",
            "-c",
            "VOLUME /seed",
            tar.to_str().unwrap(),
            "vol:1",
        ]);
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        // Containers outlive berthd by design: stop them here.
        let _ = self.docker(&["rm", "-f", "web", "survivor", "longrun"]);
        self.kill9();
        // Any agent left over.
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.exec_root.to_string_lossy().as_ref())
            .status();
        let _ = std::fs::remove_dir_all(&self.exec_root);
    }
}

/// Packs directory `dir` into the tar file `out` (the `tar` command, owners and modes kept).
fn tar_dir(dir: &Path, out: &Path) {
    let st = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar of {}", dir.display());
}

/// The docker CLI: the preinstalled one (28.x) if present, else Debian's.
fn docker_bin() -> &'static str {
    if Path::new("/usr/local/bin/docker").is_file() {
        "/usr/local/bin/docker"
    } else {
        "docker"
    }
}

/// One raw HTTP/1.0 request over the Unix socket: (status, body).
fn raw(sock: &Path, req: &str) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn docker_cli_version_import_images_run_and_exit_codes() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    let v = b.ok(&[
        "version",
        "--format",
        "{{.Server.APIVersion}} {{.Server.Os}}",
    ]);
    assert_eq!(v.trim(), "1.44 linux");
    b.busybox();
    let images = b.ok(&["images"]);
    assert!(images.contains("bb") && images.contains(" 1 "), "{images}");
    assert_eq!(
        b.ok(&["run", "--rm", "bb:1", "echo", "hello from berth"]),
        "hello from berth\n"
    );
    // The workload's exit status, Docker's 127 and 126.
    assert_eq!(
        b.docker(&["run", "--rm", "bb:1", "sh", "-c", "exit 3"])
            .status,
        3
    );
    let f = b.docker(&["run", "--rm", "bb:1", "/no/such/program"]);
    assert_eq!(f.status, 127, "{}", f.stderr);
    let f = b.docker(&["run", "--rm", "bb:1", "/not-executable"]);
    assert_eq!(f.status, 126, "{}", f.stderr);
    // Environment, working dir, user, hostname from the flags.
    let out = b.ok(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        "-u",
        "www",
        "--hostname",
        "box",
        "bb:1",
        "sh",
        "-c",
        "echo $GREETING $(pwd) $(id -un) $(hostname)",
    ]);
    assert_eq!(out, "hi /tmp www box\n");
    // A missing image: Docker's message and 125.
    let f = b.docker(&["run", "--rm", "127.0.0.1:1/nosuch/image:1"]);
    assert_eq!(f.status, 125, "{}", f.stderr);
    assert!(
        f.stderr
            .contains("Unable to find image '127.0.0.1:1/nosuch/image:1' locally"),
        "{}",
        f.stderr
    );
    // microVM isolation (the default) on a host whose KVM can't run it: a clear refusal.
    if !berth_hostcheck::check().can_run_microvms() {
        let f = b.docker(&["run", "--rm", "--isolation", "vm", "bb:1", "true"]);
        assert_eq!(f.status, 125);
        assert!(
            f.stderr.contains("microVM") && f.stderr.contains("lab"),
            "{}",
            f.stderr
        );
    }
    assert_eq!(b.ok(&["ps", "-aq"]), "", "--rm removed every container");
}

#[test]
fn detached_containers_logs_follow_exec_inspect_and_stop() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let id = b.ok(&["run", "-d", "--name", "web", "bb:1", "sh", "-c", "echo started; echo by web > /made-here; rm /not-executable; trap 'echo stopping; exit 0' TERM; while true; do sleep 0.1; done"]);
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 64);
    let ps = b.ok(&["ps"]);
    assert!(ps.contains("web") && ps.contains(&id[..12]), "{ps}");
    let follow = b
        .docker_cmd(&["logs", "-f", "web"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(b.ok(&["exec", "web", "echo", "inside"]), "inside\n");
    let f = b.docker(&["exec", "web", "sh", "-c", "exit 4"]);
    assert_eq!(f.status, 4);
    let running = b.ok(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{.Name}} {{.Config.Image}}",
        "web",
    ]);
    assert_eq!(running.trim(), "true /web bb:1");
    let top = b.ok(&["top", "web"]);
    assert!(top.contains("sh -c"), "{top}");
    b.ok(&["stop", "web"]);
    let out = follow.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains("started") && logs.contains("stopping"),
        "logs -f: {logs}"
    );
    let state = b.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        "web",
    ]);
    assert_eq!(state.trim(), "exited 0");
    assert_eq!(b.ok(&["logs", "--tail", "1", "web"]), "stopping\n");
    let ts = b.ok(&["logs", "-t", "web"]);
    assert!(ts.starts_with("20") && ts.contains("Z started"), "{ts}");
    assert!(b
        .ok(&["ps", "-a", "--filter", "status=exited"])
        .contains("web"));
    // Attach with logs=1&stream=0 to a stopped container: its log, framed, then the end.
    let mut sock = UnixStream::connect(&b.sock).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        sock,
        "POST /v1.44/containers/web/attach?logs=1&stream=0&stdout=1&stderr=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    sock.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let body = &got[text.find("\r\n\r\n").unwrap() + 4..];
    let mut want = vec![1u8, 0, 0, 0, 0, 0, 0, 8];
    want.extend_from_slice(b"started\n");
    want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 9]);
    want.extend_from_slice(b"stopping\n");
    assert_eq!(body, want, "{text}");
    // commit: the container's changes (a new file, a deleted one) as a new image.
    let img = b.ok(&[
        "commit",
        "-c",
        "CMD [\"/bin/cat\", \"/made-here\"]",
        "web",
        "bb:committed",
    ]);
    assert!(img.trim().starts_with("sha256:"), "{img}");
    // Its Parent is the image the container ran, as a committed image's is in Docker.
    let base = b.ok(&["image", "inspect", "-f", "{{.Id}}", "bb:1"]);
    assert_eq!(
        b.ok(&["image", "inspect", "-f", "{{.Parent}}", "bb:committed"]),
        base
    );
    assert_eq!(
        b.ok(&["image", "inspect", "-f", "{{.Parent}}", "bb:1"]),
        "\n"
    );
    assert_eq!(b.ok(&["run", "--rm", "bb:committed"]), "by web\n");
    assert_eq!(
        b.docker(&["run", "--rm", "bb:committed", "cat", "/not-executable"])
            .status,
        1,
        "deleted in the container, gone in the image"
    );
    b.ok(&["rm", "web"]);
    let f = b.docker(&["inspect", "web"]);
    assert_ne!(f.status, 0);
    assert!(
        f.stderr.contains("No such object: web") || f.stderr.contains("No such container"),
        "{}",
        f.stderr
    );
}

#[test]
fn run_interactive_through_a_pty() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    // A pty harness: docker gets a terminal on all three streams.
    let script = r##"
import os, pty, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
out = b""
sent = False
deadline = time.time() + 30
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
    if not sent and b"#" in out:
        os.write(fd, b"echo $((6*7)); exit 5\n")
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"##;
    let f: Finished = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(docker_bin())
        .args(["run", "-it", "--rm", "bb:1", "sh"])
        .env("DOCKER_HOST", format!("unix://{}", b.sock.display()))
        .env("DOCKER_CONFIG", b.dir.path().join("docker-config"))
        .output()
        .unwrap()
        .into();
    assert_eq!(f.status, 5, "{}\n{}", f.stdout, f.stderr);
    assert!(f.stdout.contains("42"), "{}", f.stdout);
}

#[test]
fn pull_push_save_and_load_with_the_docker_cli() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let reg = Registry::start(Auth::Anonymous).unwrap();
    let name = format!("{}/berth/bb:1", reg.host);
    b.ok(&["tag", "bb:1", &name]);
    let out = b.ok(&["push", &name]);
    assert!(out.contains("digest: sha256:"), "{out}");
    b.ok(&["rmi", &name]);
    b.ok(&["rmi", "bb:1"]);
    assert_eq!(b.ok(&["images", "-q"]), "");
    let out = b.ok(&["pull", &name]);
    assert!(
        out.contains(&format!("Downloaded newer image for {name}")),
        "{out}"
    );
    assert_eq!(b.ok(&["run", "--rm", &name, "echo", "pulled"]), "pulled\n");
    let tar = b.dir.path().join("saved.tar");
    b.ok(&["save", "-o", tar.to_str().unwrap(), &name]);
    b.ok(&["rmi", &name]);
    let out = b.ok(&["load", "-i", tar.to_str().unwrap()]);
    assert!(out.contains(&format!("Loaded image: {name}")), "{out}");
    assert_eq!(b.ok(&["run", "--rm", &name, "echo", "loaded"]), "loaded\n");
}

#[test]
fn containers_survive_a_sigkilled_berthd_and_report_their_exit_code() {
    let mut b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let id = b.ok(&[
        "run",
        "-d",
        "--name",
        "survivor",
        "bb:1",
        "sh",
        "-c",
        "echo before; sleep 4; echo after; exit 7",
    ]);
    let id = id.trim().to_owned();
    b.kill9();
    std::thread::sleep(Duration::from_millis(500));
    b.spawn(&["--exec-opt", "isolation=process"]);
    let st = b.ok(&["inspect", "--format", "{{.State.Running}}", &id]);
    assert_eq!(st.trim(), "true", "still running after berthd's restart");
    let code = b.ok(&["wait", &id]);
    assert_eq!(code.trim(), "7");
    let logs = b.ok(&["logs", &id]);
    assert_eq!(
        logs, "before\nafter\n",
        "the log kept growing while berthd was away"
    );
    b.ok(&["rm", &id]);
}

/// Bytes `seq 1 200000` prints.
const SEQ_BYTES: usize = 1_288_895;

#[test]
fn every_byte_a_workload_writes_reaches_attach_and_logs() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    // A workload that writes and exits at once: attach gets the last byte before the exit
    // status, every time.
    for i in 0..10 {
        let out = b.ok(&["run", "--rm", "bb:1", "seq", "1", "200000"]);
        assert_eq!(
            out.len(),
            SEQ_BYTES,
            "run {i}: the tail of the output was lost"
        );
        assert!(out.ends_with("199999\n200000\n"));
    }
    // The log has every line once the container is reported exited.
    let id = b.ok(&["run", "-d", "bb:1", "seq", "1", "200000"]);
    let id = id.trim();
    assert_eq!(b.ok(&["wait", id]).trim(), "0");
    assert_eq!(
        b.ok(&["logs", id]).len(),
        SEQ_BYTES,
        "docker logs lost the tail"
    );
    b.ok(&["rm", id]);
}

/// `docker logs` of a `seq` whose log rotated: the newest lines, consecutive, to the end.
fn assert_rotated_tail(out: &str, last: u64) {
    let nums: Vec<u64> = out.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(nums.last(), Some(&last), "the log ends with the last line");
    assert!((nums.len() as u64) < last, "older lines rotated away");
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "no line lost or repeated within what is kept"
    );
}

/// The log files of a container (current and rotated), each at most `max` bytes.
fn assert_log_files(log: &Path, files: usize, max: u64) {
    let mut n = 0;
    for f in std::iter::once(log.to_owned())
        .chain((1..10).map(|i| PathBuf::from(format!("{}.{i}", log.display()))))
        .filter(|p| p.exists())
    {
        let len = std::fs::metadata(&f).unwrap().len();
        assert!(len <= max, "{} is {len} bytes, over {max}", f.display());
        n += 1;
    }
    assert_eq!(n, files, "the current log and its rotated files");
}

#[test]
fn logs_rotate_with_dockers_log_opts() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let id = b.ok(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=10k",
        "--log-opt",
        "max-file=3",
        "bb:1",
        "seq",
        "1",
        "20000",
    ]);
    let id = id.trim();
    assert_eq!(b.ok(&["wait", id]).trim(), "0");
    let log = PathBuf::from(b.ok(&["inspect", "--format", "{{.LogPath}}", id]).trim());
    assert_log_files(&log, 3, 10 << 10);
    assert_rotated_tail(&b.ok(&["logs", id]), 20000);
    assert_eq!(b.ok(&["logs", "--tail", "2", id]), "19999\n20000\n");
    b.ok(&["rm", id]);
    // --log-driver none: the output still reaches an attached client, no log is kept,
    // and `logs` says it can't read one, as dockerd does.
    let f = b.docker(&[
        "run",
        "--name",
        "nolog",
        "--log-driver",
        "none",
        "bb:1",
        "echo",
        "hi",
    ]);
    assert_eq!((f.status, f.stdout.as_str()), (0, "hi\n"), "{}", f.stderr);
    assert_eq!(
        b.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.LogConfig.Type}} [{{.LogPath}}]",
            "nolog"
        ]),
        "none []\n"
    );
    let f = b.docker(&["logs", "nolog"]);
    assert_ne!(f.status, 0);
    assert!(
        f.stderr.contains("does not support reading"),
        "{}",
        f.stderr
    );
    b.ok(&["rm", "nolog"]);
    // Options berth does not apply, and bad values, are refused by name.
    for (args, says) in [
        (&["--log-opt", "compress=true"][..], "compress"),
        (&["--log-driver", "syslog"][..], "log drivers"),
        (&["--log-opt", "max-file=3"][..], "max-file"),
        (&["--log-opt", "max-size=lots"][..], "max-size"),
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["bb:1", "true"]);
        let f = b.docker(&a);
        assert_eq!(f.status, 125, "{args:?}: {}", f.stderr);
        assert!(f.stderr.contains(says), "{args:?}: {}", f.stderr);
    }
    // (The docker CLI refuses options with `none` itself; berthd does too.)
    let (st, body) = raw_json(
        &b.sock,
        "POST",
        "/v1.44/containers/create",
        r#"{"Image":"bb:1","HostConfig":{"LogConfig":{"Type":"none","Config":{"max-size":"1m"}}}}"#,
    );
    assert_eq!(st, 501, "{body}");
    assert!(body.contains("none log option"), "{body}");
    assert_eq!(b.ok(&["ps", "-aq"]), "", "nothing left of the refused ones");
}

/// Every confinement setting, checked from inside the container (in both isolation
/// modes: the agent applies them in the guest for a microVM).
fn assert_confinement_applies(b: &Berthd) {
    let run = |flags: &[&str], script: &str| -> Finished {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(flags);
        a.extend_from_slice(&["bb:1", "sh", "-c", script]);
        b.docker(&a)
    };
    let out = |flags: &[&str], script: &str| -> String {
        let f = run(flags, script);
        assert_eq!(f.status, 0, "{flags:?}: {}\n{}", f.stdout, f.stderr);
        f.stdout
    };
    const PRIVS: &str = "grep -E '^(CapInh|CapEff|NoNewPrivs|Seccomp):' /proc/self/status";
    // Docker's defaults: its 14 capabilities (none inheritable), its seccomp filter; berth
    // adds no_new_privs.
    assert_eq!(
        out(&[], PRIVS),
        "CapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\nNoNewPrivs:\t1\nSeccomp:\t2\n"
    );
    // A read-only root refuses writes, but a tmpfs and a missing working directory work.
    let f = run(&["--read-only"], "touch /x");
    assert_ne!(f.status, 0, "a write to a read-only root succeeded");
    assert!(f.stderr.contains("Read-only file system"), "{}", f.stderr);
    let all = [
        "--read-only",
        "--tmpfs",
        "/scratch:size=1m",
        "-w",
        "/new/dir",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "net_raw",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "no-new-privileges=false",
        "--ulimit",
        "nofile=1024:2048",
        "--oom-score-adj",
        "500",
        "--shm-size",
        "2m",
        "--group-add",
        "audio",
        "--group-add",
        "1234",
    ];
    let s = out(
        &all,
        &format!(
            "pwd; touch /scratch/x && echo wrote; {PRIVS}; grep 'open files' /proc/self/limits; \
             cat /proc/self/oom_score_adj; grep -E ' /(scratch|dev/shm) ' /proc/mounts; \
             grep Groups /proc/self/status"
        ),
    );
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(
        &lines[..6],
        [
            "/new/dir",
            "wrote",
            "CapInh:\t0000000000000000",
            "CapEff:\t0000000000002000",
            "NoNewPrivs:\t0",
            "Seccomp:\t0"
        ],
        "{s}"
    );
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(words(lines[6])[3..5], ["1024", "2048"], "{s}");
    assert_eq!(lines[7], "500");
    let mount = |at: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(at))
            .unwrap_or_else(|| panic!("no mount at {at}: {s}"))
            .to_string()
    };
    let scratch = mount("/scratch");
    for o in ["size=1024k", "nosuid", "nodev", "noexec"] {
        assert!(scratch.contains(o), "{o}: {scratch}");
    }
    assert!(mount("/dev/shm").contains("size=2048k"), "{s}");
    assert_eq!(words(lines.last().unwrap())[1..], ["29", "1234"], "{s}");
    // A process exec'd in the container has the container's capabilities and limits.
    let id = b
        .ok(&[
            "run",
            "-d",
            "--cap-drop",
            "ALL",
            "--ulimit",
            "nofile=512",
            "bb:1",
            "sleep",
            "60",
        ])
        .trim()
        .to_owned();
    assert_eq!(
        b.ok(&[
            "exec",
            &id,
            "sh",
            "-c",
            "grep CapEff /proc/self/status; ulimit -n"
        ]),
        "CapEff:\t0000000000000000\n512\n"
    );
    b.ok(&["rm", "-f", &id]);
    // --init: PID 1 is an init, the workload its child; an orphan is reaped; the exit code
    // and a missing command come through it unchanged.
    let s = out(
        &["--init"],
        "(sleep 0.2 &); sleep 1; cat /proc/1/comm; echo $$; grep -c ' Z ' /proc/[0-9]*/stat | grep -vc ':0$' || true",
    );
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 3, "{s}");
    assert_eq!(lines[0], "init", "PID 1 is not the init: {s}");
    assert_ne!(lines[1], "1", "the workload is PID 1: {s}");
    assert_eq!(lines[2], "0", "a zombie was left unreaped: {s}");
    assert_eq!(run(&["--init"], "exit 3").status, 3);
    // With a terminal, the workload takes the terminal's foreground from the init.
    let f = run(&["-t", "--init"], "echo tty-ok");
    assert_eq!(f.status, 0, "{}", f.stderr);
    assert!(f.stdout.contains("tty-ok"), "{}", f.stdout);
    let f = b.docker(&["run", "--rm", "--init", "bb:1", "no-such-command"]);
    assert_eq!(f.status, 127, "{}", f.stderr);
    // SIGTERM reaches a workload that has no handler for it (as PID 1 it would ignore it):
    // `stop` ends it at once, and the init reports 128 + 15.
    let id = b
        .ok(&["run", "-d", "--init", "bb:1", "sleep", "300"])
        .trim()
        .to_owned();
    let t0 = Instant::now();
    b.ok(&["stop", "-t", "60", &id]);
    assert!(
        t0.elapsed() < Duration::from_secs(45),
        "stop waited for its timeout: the init did not forward SIGTERM"
    );
    assert_eq!(
        b.ok(&[
            "inspect",
            "-f",
            "{{.State.ExitCode}} {{.HostConfig.Init}}",
            &id
        ]),
        "143 true\n"
    );
    b.ok(&["rm", &id]);
    // Bad values are refused, naming the problem; what berth has not built is too.
    for (flags, says) in [
        (&["--cap-add", "FLY"][..], "unknown capability"),
        (&["--ulimit", "nofile=10:5"][..], "soft limit"),
        (
            &["--security-opt", "apparmor=docker-default"][..],
            "AppArmor",
        ),
        (&["--oom-score-adj", "2000"][..], "oom score adj"),
    ] {
        let f = run(flags, "true");
        assert_eq!(f.status, 125, "{flags:?}: {}", f.stderr);
        assert!(f.stderr.contains(says), "{flags:?}: {}", f.stderr);
    }
    assert_eq!(
        b.ok(&["ps", "-aq"]),
        "",
        "a refused container was left behind"
    );
}

/// Healthchecks: a probe runs in the container through exec; `starting`, then
/// `unhealthy` after its retries, then `healthy`; its log, events, ps's note and filter; a
/// probe past its timeout; `--no-healthcheck`; bad values refused.
fn assert_healthchecks(b: &Berthd) {
    let health = |id: &str| -> String {
        b.ok(&[
            "inspect",
            "-f",
            "{{.State.Health.Status}} {{.State.Health.FailingStreak}}",
            id,
        ])
        .trim()
        .to_owned()
    };
    // Unbounded (not through `timeout`): killed below, and its pipe must close with it.
    let mut events = Command::new(docker_bin())
        .env("DOCKER_HOST", format!("unix://{}", b.sock.display()))
        .env("DOCKER_CONFIG", b.dir.path().join("docker-config"))
        .env_remove("DOCKER_CONTEXT")
        .args([
            "events",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = b
        .ok(&[
            "run",
            "-d",
            "--name",
            "hc1",
            "--health-cmd",
            "test -e /tmp/ok && echo fine",
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            "bb:1",
            "sleep",
            "300",
        ])
        .trim()
        .to_owned();
    // Before its first probe (a minute away here) a container is `starting`.
    let slow = b
        .ok(&[
            "run",
            "-d",
            "--health-cmd",
            "true",
            "--health-interval",
            "60s",
            "bb:1",
            "sleep",
            "300",
        ])
        .trim()
        .to_owned();
    assert_eq!(health(&slow), "starting 0");
    let ps = b.ok(&["ps", "--no-trunc"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with(&slow) && l.contains("(health: starting)")),
        "{ps}"
    );
    b.ok(&["rm", "-f", &slow]);
    // Unhealthy after 2 failures; the streak goes on growing with each failed probe.
    let unhealthy = |id: &str, streak: u32| {
        let h = health(id);
        h.strip_prefix("unhealthy ")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= streak)
    };
    assert!(
        eventually(60, || unhealthy(&id, 2)),
        "never unhealthy: {}",
        health(&id)
    );
    let log = b.ok(&["inspect", "-f", "{{json .State.Health.Log}}", &id]);
    assert!(log.contains("\"ExitCode\":1"), "{log}");
    b.ok(&["exec", &id, "touch", "/tmp/ok"]);
    assert!(
        eventually(60, || health(&id) == "healthy 0"),
        "never healthy: {}",
        health(&id)
    );
    let log = b.ok(&["inspect", "-f", "{{json .State.Health.Log}}", &id]);
    assert!(
        log.contains("fine\\n"),
        "the probe's output is not kept: {log}"
    );
    assert!(b.ok(&["ps"]).contains("(healthy)"));
    assert_eq!(
        b.ok(&["ps", "-q", "--no-trunc", "--filter", "health=healthy"])
            .trim(),
        id
    );
    assert_eq!(
        b.ok(&["ps", "-q", "--filter", "health=unhealthy"]).trim(),
        ""
    );
    let _ = events.kill();
    let mut seen = String::new();
    events
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    let _ = events.wait();
    let mine: Vec<&str> = seen
        .lines()
        .filter(|l| l.starts_with("health_status") && l.ends_with(" hc1"))
        .collect();
    assert_eq!(
        mine,
        ["health_status: unhealthy hc1", "health_status: healthy hc1"],
        "{seen}"
    );
    b.ok(&["rm", "-f", &id]);
    // A probe past its timeout fails with Docker's wording.
    let id = b
        .ok(&[
            "run",
            "-d",
            "--health-cmd",
            "sleep 30",
            "--health-timeout",
            "300ms",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            "bb:1",
            "sleep",
            "300",
        ])
        .trim()
        .to_owned();
    assert!(eventually(60, || unhealthy(&id, 1)), "{}", health(&id));
    let log = b.ok(&["inspect", "-f", "{{json .State.Health.Log}}", &id]);
    assert!(
        log.contains("Health check exceeded timeout (300ms)") && log.contains("\"ExitCode\":-1"),
        "{log}"
    );
    b.ok(&["rm", "-f", &id]);
    // --no-healthcheck: no Health at all; bad values are refused by name.
    let id = b
        .ok(&["create", "--no-healthcheck", "bb:1", "true"])
        .trim()
        .to_owned();
    assert_eq!(
        b.ok(&[
            "inspect",
            "-f",
            "{{.Config.Healthcheck.Test}} {{.State.Health}}",
            &id
        ]),
        "[NONE] <nil>\n"
    );
    b.ok(&["rm", &id]);
    let f = b.docker(&[
        "run",
        "--rm",
        "--health-cmd",
        "true",
        "--health-interval",
        "10us",
        "bb:1",
        "true",
    ]);
    assert_eq!(f.status, 125, "{}", f.stderr);
    assert!(f.stderr.contains("Interval"), "{}", f.stderr);
}

/// `pause`/`unpause` freeze and thaw the workload (no output while paused; exec refused;
/// kill still works); `update` changes limits that the workload feels and inspect shows,
/// and refuses what it does not apply. `vm`: the running microVM's size bounds `update`.
fn assert_pause_and_update(b: &Berthd, vm: bool) {
    let id = b
        .ok(&[
            "run",
            "-d",
            "bb:1",
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done",
        ])
        .trim()
        .to_owned();
    let lines = || b.ok(&["logs", &id]).lines().count();
    assert!(eventually(60, || lines() > 3), "no output");
    b.ok(&["pause", &id]);
    assert_eq!(
        b.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}} {{.State.Running}}",
            &id
        ]),
        "paused true true\n"
    );
    assert!(b.ok(&["ps"]).contains("(Paused)"), "{}", b.ok(&["ps"]));
    assert_eq!(
        b.ok(&["ps", "-q", "--no-trunc", "--filter", "status=paused"])
            .trim(),
        id
    );
    // Whatever was printed before the freeze reaches the log; then nothing more.
    std::thread::sleep(Duration::from_secs(2));
    let frozen_at = lines();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lines(), frozen_at, "the paused workload kept printing");
    let f = b.docker(&["exec", &id, "true"]);
    assert_ne!(f.status, 0);
    assert!(f.stderr.contains("is paused"), "{}", f.stderr);
    let f = b.docker(&["pause", &id]);
    assert!(f.stderr.contains("already paused"), "{}", f.stderr);
    b.ok(&["unpause", &id]);
    assert!(
        eventually(60, || lines() > frozen_at + 3),
        "no output after unpause"
    );
    assert_eq!(
        b.ok(&["inspect", "-f", "{{.State.Status}} {{.State.Paused}}", &id]),
        "running false\n"
    );
    let f = b.docker(&["unpause", &id]);
    assert!(f.stderr.contains("is not paused"), "{}", f.stderr);
    // A paused container can be killed.
    b.ok(&["pause", &id]);
    b.ok(&["kill", &id]);
    assert_eq!(
        b.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}} {{.State.Paused}}",
            &id
        ]),
        "exited 137 false\n"
    );
    b.ok(&["rm", &id]);

    // update: the new limits are felt inside and shown by inspect and stats.
    let id = b
        .ok(&["run", "-d", "--memory", "64m", "bb:1", "sleep", "300"])
        .trim()
        .to_owned();
    b.ok(&[
        "update",
        "--memory",
        "48m",
        "--pids-limit",
        "8",
        "--restart",
        "on-failure:2",
        &id,
    ]);
    assert_eq!(
        b.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}",
            &id
        ]),
        "50331648 8 on-failure:2\n"
    );
    let usage = b.ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", &id]);
    assert!(usage.trim().ends_with("/ 48MiB"), "{usage}");
    let f = b.docker(&[
        "exec",
        &id,
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 30 & done; echo forked",
    ]);
    assert!(
        (f.stdout.clone() + &f.stderr).contains("can't fork"),
        "the pids limit is not applied: {} {}",
        f.stdout,
        f.stderr
    );
    let f = b.docker(&["update", "--cpu-shares", "512", &id]);
    assert_ne!(f.status, 0);
    assert!(f.stderr.contains("CpuShares"), "{}", f.stderr);
    if vm {
        // The microVM was booted for 64 MiB: more applies from its next start only.
        let f = b.docker(&["update", "--memory", "1g", &id]);
        assert_ne!(f.status, 0);
        assert!(f.stderr.contains("microVM"), "{}", f.stderr);
        assert_eq!(
            b.ok(&["inspect", "-f", "{{.HostConfig.Memory}}", &id]),
            "50331648\n",
            "a refused update changed the record"
        );
    }
    b.ok(&["rm", "-f", &id]); // The OOM killer's work shows in State.OOMKilled (and not otherwise).
    let f = b.docker(&[
        "run",
        "--name",
        "oom",
        "--memory",
        "16m",
        "bb:1",
        "sh",
        "-c",
        "tail /dev/zero",
    ]);
    assert_eq!(f.status, 137, "{}", f.stderr);
    assert_eq!(
        b.ok(&[
            "inspect",
            "-f",
            "{{.State.OOMKilled}} {{.State.ExitCode}}",
            "oom"
        ]),
        "true 137\n"
    );
    b.ok(&["rm", "oom"]);
    let f = b.docker(&["run", "--name", "fine", "--memory", "16m", "bb:1", "true"]);
    assert_eq!(f.status, 0, "{}", f.stderr);
    assert_eq!(
        b.ok(&["inspect", "-f", "{{.State.OOMKilled}}", "fine"]),
        "false\n"
    );
    b.ok(&["rm", "fine"]);
}

#[test]
fn pause_unpause_and_update_in_process_containers() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    assert_pause_and_update(&b, false);
    // stats computes the CPU % as Docker does (two samples): a busy loop shows it busy.
    let id = b
        .ok(&["run", "-d", "bb:1", "sh", "-c", "while :; do :; done"])
        .trim()
        .to_owned();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = b.ok(&["stats", "--no-stream", "--format", "{{.CPUPerc}}", &id]);
    let pct: f64 = cpu.trim().trim_end_matches('%').parse().unwrap();
    assert!(pct > 30.0, "a busy loop at {cpu}");
    b.ok(&["rm", "-f", &id]);
}

#[test]
fn healthchecks_run_in_process_containers() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    assert_healthchecks(&b);
}

/// Sends one request with `body` and returns (status, body text).
fn raw_json(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    raw(
        sock,
        &format!(
            "{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap()
}

/// Starts an exec over a raw upgraded connection and reads until the end: (the 101's
/// headers, stdout, stderr), the frames demultiplexed.
fn raw_exec(sock: &Path, exec: &str) -> (String, String, String) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = r#"{"Detach":false,"Tty":false}"#;
    write!(
        s,
        "POST /v1.44/exec/{exec}/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers")
        + 4;
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut rest = &all[split..];
    while rest.len() >= 8 {
        let n = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let data = &rest[8..8 + n];
        match rest[0] {
            1 => out.extend_from_slice(data),
            _ => err.extend_from_slice(data),
        }
        rest = &rest[8 + n..];
    }
    assert!(rest.is_empty(), "a partial frame");
    (
        head,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

#[test]
fn exec_output_from_the_first_byte_and_dockers_126_127() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let id = b
        .ok(&["run", "-d", "bb:1", "sleep", "300"])
        .trim()
        .to_owned();
    // A client that reads the raw socket right after the 101 gets every byte, every time.
    let mut lost = 0;
    for i in 0..100 {
        let (st, body) = raw_json(
            &b.sock,
            "POST",
            &format!("/v1.44/containers/{id}/exec"),
            &format!(
                r#"{{"AttachStdout":true,"AttachStderr":true,"Cmd":["sh","-c","echo out{i}; echo err{i} >&2"]}}"#
            ),
        );
        assert_eq!(st, 201, "{body}");
        let exec = body.split('"').nth(3).unwrap().to_owned();
        let (head, out, err) = raw_exec(&b.sock, &exec);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        if out != format!("out{i}\n") || err != format!("err{i}\n") {
            lost += 1;
            eprintln!("try {i}: stdout {out:?} stderr {err:?}");
        }
    }
    assert_eq!(lost, 0, "exec output lost in {lost} of 100 tries");
    // Two starts of one exec at once: one starts it, the other gets dockerd's 409.
    for _ in 0..10 {
        let (st, body) = raw_json(
            &b.sock,
            "POST",
            &format!("/v1.44/containers/{id}/exec"),
            r#"{"Cmd":["sleep","1"]}"#,
        );
        assert_eq!(st, 201, "{body}");
        let exec = body.split('"').nth(3).unwrap().to_owned();
        let starts: Vec<_> = (0..2)
            .map(|_| {
                let (sock, exec) = (b.sock.clone(), exec.clone());
                std::thread::spawn(move || {
                    raw_json(
                        &sock,
                        "POST",
                        &format!("/v1.44/exec/{exec}/start"),
                        r#"{"Detach":true}"#,
                    )
                })
            })
            .collect();
        let mut got: Vec<u16> = starts.into_iter().map(|t| t.join().unwrap().0).collect();
        got.sort();
        assert_eq!(got, [200, 409]);
    }
    // A command that can't start: the 101, the error in the stream, and 127 or 126 as the
    // exit code (the docker CLI exits with it).
    let f = b.docker(&["exec", &id, "no-such-command"]);
    assert_eq!(f.status, 127, "{} {}", f.stdout, f.stderr);
    assert!(
        (f.stdout.clone() + &f.stderr).contains("executable file not found"),
        "{} {}",
        f.stdout,
        f.stderr
    );
    let f = b.docker(&["exec", &id, "/etc"]);
    assert_eq!(f.status, 126, "{} {}", f.stdout, f.stderr);
    let (st, body) = raw_json(
        &b.sock,
        "POST",
        &format!("/v1.44/containers/{id}/exec"),
        r#"{"AttachStdout":true,"Cmd":["no-such-command"]}"#,
    );
    assert_eq!(st, 201, "{body}");
    let exec = body.split('"').nth(3).unwrap().to_owned();
    let (head, out, _) = raw_exec(&b.sock, &exec);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(out.contains("no-such-command"), "{out}");
    let (_, inspect) = raw(
        &b.sock,
        &format!("GET /v1.44/exec/{exec}/json HTTP/1.0\r\n\r\n"),
    )
    .unwrap();
    assert!(inspect.contains("\"ExitCode\":127"), "{inspect}");
    // The detach keys (ctrl-p ctrl-q by default) typed on a terminal end the session, not
    // the process, and are not passed on.
    let (st, body) = raw_json(
        &b.sock,
        "POST",
        &format!("/v1.44/containers/{id}/exec"),
        r#"{"AttachStdin":true,"AttachStdout":true,"Tty":true,"Cmd":["cat"]}"#,
    );
    assert_eq!(st, 201, "{body}");
    let exec = body.split('"').nth(3).unwrap().to_owned();
    let mut s = UnixStream::connect(&b.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = r#"{"Detach":false,"Tty":true}"#;
    write!(
        s,
        "POST /v1.44/exec/{exec}/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{req}",
        req.len()
    )
    .unwrap();
    s.write_all(b"typed\n\x10\x11more\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .expect("the session did not end on the detach keys");
    let text = String::from_utf8_lossy(&all);
    assert!(
        !text.contains("more"),
        "input after the keys was passed on: {text}"
    );
    let (_, inspect) = raw(
        &b.sock,
        &format!("GET /v1.44/exec/{exec}/json HTTP/1.0\r\n\r\n"),
    )
    .unwrap();
    assert!(
        inspect.contains("\"Running\":true"),
        "the detach ended the process: {inspect}"
    );
    b.ok(&["rm", "-f", &id]);
}

/// Debian's dockerd on a socket of its own (no networking of its own, nothing touched
/// outside its directories); stopped and removed on drop.
struct Dockerd {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = PathBuf::from(format!("/tmp/berth-dockerd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (Debian's docker.io; scripts/test installs it)");
        let d = Dockerd { child, dir, sock };
        let t0 = Instant::now();
        while raw(&d.sock, "GET /_ping HTTP/1.0\r\n\r\n")
            .map(|(s, _)| s != 200)
            .unwrap_or(true)
        {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "dockerd did not start: {}",
                std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: kill takes a pid and a signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every key path of a JSON document (`/State/Health/Status`; an array's items under
/// `[]`, from its first item). The children of objects that are maps of data (labels,
/// runtimes by name, networks by name...) are left out: their keys are values.
fn key_paths(v: &serde_json::Value, at: &str, out: &mut std::collections::BTreeSet<String>) {
    const MAPS: [&str; 11] = [
        "/Config/Labels",
        "/Config/Volumes",
        "/Config/ExposedPorts",
        "/HostConfig/LogConfig/Config",
        "/HostConfig/Tmpfs",
        "/NetworkSettings/Networks",
        "/NetworkSettings/Ports",
        "/GraphDriver/Data",
        "/Runtimes",
        "/RegistryConfig/IndexConfigs",
        "/Components[]/Details",
    ];
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{at}/{k}");
                out.insert(p.clone());
                if !MAPS.contains(&p.as_str()) {
                    key_paths(x, &p, out);
                }
            }
        }
        serde_json::Value::Array(a) => {
            if let Some(x) = a.first() {
                key_paths(x, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn inspect_info_and_version_carry_every_key_dockerd_does() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let dk = Dockerd::start();
    let tar = b.dir.path().join("bb.tar");
    let f: Finished = Command::new(docker_bin())
        .env("DOCKER_HOST", format!("unix://{}", dk.sock.display()))
        .env("DOCKER_CONFIG", b.dir.path().join("docker-config"))
        .env_remove("DOCKER_CONTEXT")
        .args(["import", tar.to_str().unwrap(), "bb:1"])
        .output()
        .unwrap()
        .into();
    assert_eq!(f.status, 0, "{}", f.stderr);
    // A rich create body: limits, confinement, a restart policy, a healthcheck, logging.
    let body = r#"{"Image":"bb:1","Cmd":["sleep","60"],"Env":["A=1"],"Labels":{"l":"v"},
        "WorkingDir":"/","Hostname":"h","User":"0","StopSignal":"SIGTERM","StopTimeout":5,
        "Healthcheck":{"Test":["CMD","true"],"Interval":1000000000},
        "HostConfig":{"Memory":67108864,"NanoCpus":500000000,"PidsLimit":50,
        "ReadonlyRootfs":true,"CapAdd":["NET_ADMIN"],"CapDrop":["NET_RAW"],"Init":true,
        "RestartPolicy":{"Name":"on-failure","MaximumRetryCount":2},
        "Ulimits":[{"Name":"nofile","Soft":1024,"Hard":2048}],"Tmpfs":{"/t":""},
        "OomScoreAdj":100,"ShmSize":1048576,"GroupAdd":["10"],
        "SecurityOpt":["no-new-privileges"],
        "LogConfig":{"Type":"json-file","Config":{"max-size":"1m","max-file":"2"}}}}"#
        .replace('\n', "");
    let doc = |sock: &Path, method: &str, path: &str, body: &str| -> serde_json::Value {
        let (st, text) = raw_json(sock, method, path, body);
        assert!((200..300).contains(&st), "{path}: {st} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    };
    let mut keys = Vec::new();
    for sock in [&dk.sock, &b.sock] {
        let id = doc(sock, "POST", "/v1.41/containers/create", &body)["Id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut k = Vec::new();
        for path in [
            format!("/v1.41/containers/{id}/json"),
            "/v1.41/info".into(),
            "/v1.41/version".into(),
        ] {
            let mut set = std::collections::BTreeSet::new();
            key_paths(&doc(sock, "GET", &path, ""), "", &mut set);
            k.push(set);
        }
        let (st, text) = raw(
            sock,
            &format!("DELETE /v1.41/containers/{id}?force=1 HTTP/1.0\r\n\r\n"),
        )
        .unwrap();
        assert_eq!(st, 204, "{text}");
        keys.push(k);
    }
    // Keys API 1.42 removed (berth speaks 1.44; dockerd 20.10 speaks 1.41).
    let removed = ["/HostConfig/KernelMemory", "/KernelMemory"];
    let mut missing = Vec::new();
    for (i, what) in ["inspect", "info", "version"].iter().enumerate() {
        for k in keys[0][i].difference(&keys[1][i]) {
            if !removed.contains(&k.as_str()) {
                missing.push(format!("{what}: {k}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys dockerd returns and berthd does not:\n{}",
        missing.join("\n")
    );
}

fn unix_now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

#[test]
fn events_replay_history_and_apply_filters() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let t0 = unix_now();
    b.ok(&["run", "--name", "ev1", "--label", "tier=a", "bb:1", "true"]);
    b.ok(&["rm", "ev1"]);
    b.ok(&["run", "--rm", "--name", "ev2", "bb:1", "true"]);
    b.ok(&["run", "-d", "--name", "ev3", "bb:1", "sleep", "60"]);
    assert_eq!(b.docker(&["exec", "ev3", "sh", "-c", "exit 3"]).status, 3);
    b.ok(&["rm", "-f", "ev3"]);
    let t1 = unix_now();
    let events = |extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "events",
            "--since",
            &t0,
            "--until",
            &t1,
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ];
        a.extend_from_slice(extra);
        b.ok(&a).lines().map(str::to_owned).collect()
    };
    let all = events(&[]);
    let ev1: Vec<&str> = all
        .iter()
        .filter(|l| l.ends_with(" ev1"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        ev1,
        [
            "create ev1",
            "attach ev1",
            "start ev1",
            "die ev1",
            "destroy ev1"
        ],
        "{all:?}"
    );
    // Execs: created, started and dead, with the exec's ID and exit code, as dockerd
    // reports them (`event=exec_die` matches the action's name).
    let ev3: Vec<&str> = all
        .iter()
        .filter(|l| l.starts_with("exec_") && l.ends_with(" ev3"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        ev3,
        [
            "exec_create: sh -c exit 3 ev3",
            "exec_start: sh -c exit 3 ev3",
            "exec_die ev3"
        ],
        "{all:?}"
    );
    let code = b.ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        &t1,
        "--filter",
        "event=exec_die",
        "--format",
        "{{.Actor.Attributes.exitCode}} {{.Actor.Attributes.execID}}",
    ]);
    let (code, exec_id) = code.trim().split_once(' ').unwrap_or_default();
    assert_eq!((code, exec_id.len()), ("3", 64));
    assert!(all.contains(&"die ev2".to_owned()), "{all:?}");
    assert_eq!(
        events(&["--filter", "event=die"]),
        ["die ev1", "die ev2", "die ev3"]
    );
    assert_eq!(
        events(&["--filter", "label=tier=a", "--filter", "event=start"]),
        ["start ev1"]
    );
    assert_eq!(
        events(&["--filter", "container=ev2", "--filter", "event=destroy"]),
        ["destroy ev2"]
    );
    assert!(events(&["--filter", "label=tier=b"]).is_empty());
    // An --until in the past ends the stream at once; a filter berth has no objects for
    // is refused by name, not ignored.
    let f = b.docker(&[
        "events",
        "--since",
        &t0,
        "--until",
        &t1,
        "--filter",
        "network=x",
    ]);
    assert_ne!(f.status, 0);
    assert!(f.stderr.contains("network"), "{}", f.stderr);
}

#[test]
fn ps_filters_select_as_dockers_do() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    // A second image (another config, so another ID).
    let tar = b.dir.path().join("bb.tar");
    // (A second later: image times are in seconds.)
    std::thread::sleep(Duration::from_millis(1100));
    b.ok(&[
        "import",
        "--change",
        "ENV X=1",
        "--change",
        "LABEL tier=a",
        tar.to_str().unwrap(),
        "other:2",
    ]);
    let images = |args: &[&str]| -> String {
        let mut a = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        a.extend_from_slice(args);
        b.ok(&a).trim().to_owned()
    };
    assert_eq!(images(&["bb"]), "bb:1");
    assert_eq!(images(&["--filter", "reference=o*"]), "other:2");
    assert_eq!(images(&["--filter", "reference=*:1"]), "bb:1");
    assert_eq!(images(&["--filter", "label=tier=a"]), "other:2");
    assert_eq!(images(&["--filter", "since=bb:1"]), "other:2");
    assert_eq!(images(&["--filter", "before=other:2"]), "bb:1");
    assert_eq!(images(&["--filter", "dangling=true"]), "");
    assert_eq!(
        b.docker(&["run", "--name", "f1", "bb:1", "sh", "-c", "exit 3"])
            .status,
        3
    );
    b.ok(&["create", "--name", "f2", "other:2", "true"]);
    b.ok(&["run", "-d", "--name", "f3", "bb:1", "sleep", "300"]);
    let ps = |filters: &[&str]| -> String {
        let mut a = vec!["ps", "-a", "--format", "{{.Names}}"];
        for f in filters {
            a.extend_from_slice(&["--filter", f]);
        }
        let mut names: Vec<String> = b.ok(&a).lines().map(str::to_owned).collect();
        names.sort();
        names.join(" ")
    };
    assert_eq!(ps(&["exited=3"]), "f1");
    assert_eq!(ps(&["exited=0"]), "");
    assert_eq!(ps(&["ancestor=bb:1"]), "f1 f3");
    assert_eq!(ps(&["ancestor=other:2"]), "f2");
    assert_eq!(ps(&["since=f1"]), "f2 f3");
    assert_eq!(ps(&["before=f3"]), "f1 f2");
    assert_eq!(ps(&["since=f1", "before=f3"]), "f2");
    assert_eq!(ps(&["isolation=process"]), "f1 f2 f3");
    assert_eq!(ps(&["status=running"]), "f3");
    assert_eq!(ps(&["is-task=true"]), "");
    let f = b.docker(&["ps", "--filter", "network=x"]);
    assert_ne!(f.status, 0);
    assert!(f.stderr.contains("network"), "{}", f.stderr);
    let f = b.docker(&["ps", "--filter", "since=nope"]);
    assert_ne!(f.status, 0);
    b.ok(&["rm", "-f", "f1", "f2", "f3"]);
}

#[test]
fn system_df_and_the_prunes_report_what_they_did() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    b.ok(&[
        "run",
        "--name",
        "d1",
        "bb:1",
        "sh",
        "-c",
        "head -c 300000 /dev/zero > /big",
    ]);
    let df = b.ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}} {{.TotalCount}} {{.Active}}",
    ]);
    assert_eq!(
        df, "Images 1 1\nContainers 1 0\nLocal Volumes 0 0\nBuild Cache 0 0\n",
        "{df}"
    );
    let size = b.ok(&["ps", "-a", "--size", "--format", "{{.Size}}"]);
    assert!(size.starts_with("300kB (virtual "), "{size}");
    let out = b.ok(&["container", "prune", "-f"]);
    assert!(out.contains("Total reclaimed space: 300kB"), "{out}");
    assert_eq!(b.ok(&["ps", "-aq"]), "");
    // Tagged images stay with a plain prune; -a removes every unused one.
    b.ok(&["tag", "bb:1", "x:1"]);
    b.ok(&["image", "prune", "-f"]);
    let mut tags: Vec<String> = b
        .ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .lines()
        .map(str::to_owned)
        .collect();
    tags.sort();
    assert_eq!(tags, ["bb:1", "x:1"]);
    let keep = b
        .ok(&["run", "-d", "bb:1", "sleep", "300"])
        .trim()
        .to_owned();
    b.ok(&["image", "prune", "-af"]);
    assert_eq!(
        b.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .lines()
            .count(),
        2,
        "an image in use was pruned"
    );
    b.ok(&["rm", "-f", &keep]);
    let out = b.ok(&["image", "prune", "-af"]);
    assert!(
        out.contains("untagged: ") && out.contains("deleted: sha256:"),
        "{out}"
    );
    assert_eq!(b.ok(&["images", "-q"]), "");
    // system prune goes through every kind, those berth has none of included.
    b.busybox();
    b.ok(&["create", "--name", "d2", "bb:1", "true"]);
    let out = b.ok(&["system", "prune", "-af", "--volumes"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(b.ok(&["ps", "-aq"]), "");
    assert_eq!(b.ok(&["images", "-q"]), "");
}

#[test]
fn docker_login_checks_credentials_with_the_registry() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    for auth in [
        Auth::Basic("bob".into(), "hunter2".into()),
        Auth::Token("alice".into(), "s3cret".into()),
    ] {
        let reg = Registry::start(auth.clone()).unwrap();
        let (user, pass) = match &auth {
            Auth::Token(u, p) | Auth::Basic(u, p) => (u.clone(), p.clone()),
            Auth::Anonymous => unreachable!(),
        };
        let f = b.docker(&["login", "-u", &user, "-p", "wrong", &reg.host]);
        assert_ne!(f.status, 0, "{auth:?}: wrong password accepted");
        assert!(f.stderr.contains("unauthorized"), "{auth:?}: {}", f.stderr);
        let out = b.ok(&["login", "-u", &user, "-p", &pass, &reg.host]);
        assert!(out.contains("Login Succeeded"), "{auth:?}: {out}");
        // The client keeps the credentials and sends them with a push.
        let name = format!("{}/mine/bb:1", reg.host);
        b.ok(&["tag", "bb:1", &name]);
        b.ok(&["push", &name]);
        b.ok(&["logout", &reg.host]);
        let f = b.docker(&["push", &name]);
        assert_ne!(
            f.status, 0,
            "{auth:?}: a push without credentials went through"
        );
        b.ok(&["rmi", &name]);
    }
}

#[test]
fn confinement_settings_apply_inside_process_containers() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    assert_confinement_applies(&b);
    // --pid host (process isolation): the host's processes are visible, berthd among
    // them, and the workload is not PID 1.
    let berthd_pid = b.child.as_ref().unwrap().id().to_string();
    let out = b.ok(&[
        "run",
        "--rm",
        "--pid",
        "host",
        "bb:1",
        "sh",
        "-c",
        &format!("echo $$; test -d /proc/{berthd_pid} && echo sees-berthd"),
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "1", "{out}");
    assert_eq!(lines.get(1), Some(&"sees-berthd"), "{out}");
    let id = b
        .ok(&["create", "--pid", "host", "bb:1", "true"])
        .trim()
        .to_owned();
    assert_eq!(
        b.ok(&["inspect", "-f", "{{.HostConfig.PidMode}}", &id]),
        "host\n"
    );
    b.ok(&["rm", &id]);
    let f = b.docker(&["run", "--rm", "--pid", "container:x", "bb:1", "true"]);
    assert_eq!(f.status, 125);
    assert!(f.stderr.contains("PidMode"), "{}", f.stderr); // --privileged: every capability, no seccomp, no no_new_privs, /sys writable, and
                                                           // the host's devices (here: the first one a plain container lacks).
    let dev = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .filter(|e| {
            use std::os::unix::fs::FileTypeExt;
            e.file_type().is_ok_and(|t| t.is_char_device())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            ![
                "null", "zero", "full", "random", "urandom", "tty", "console", "ptmx",
            ]
            .contains(&n.as_str())
        })
        .min()
        .expect("a host device");
    // Every capability the host's root has to give (this host's may lack some).
    let bnd = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_owned()))
        .unwrap();
    assert_privileged(&b, &dev, &bnd);
}

/// `--privileged` as seen from inside; `dev` is a device of the agent's /dev, `caps` the
/// agent's bounding set.
fn assert_privileged(b: &Berthd, dev: &str, caps: &str) {
    let script = format!(
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
         grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; \
         test -e /dev/{dev} && echo has-{dev}"
    );
    assert_eq!(
        b.ok(&["run", "--rm", "--privileged", "bb:1", "sh", "-c", &script]),
        format!("CapEff:\t{caps}\nNoNewPrivs:\t0\nSeccomp:\t0\nrw\nhas-{dev}\n")
    );
    // Without it, none of that.
    let plain = b.ok(&[
        "run",
        "--rm",
        "bb:1",
        "sh",
        "-c",
        &format!("{script}; true"),
    ]);
    assert!(
        plain.contains("NoNewPrivs:\t1") && !plain.contains("has-"),
        "{plain}"
    );
}

/// What a container can leave on the host: processes naming the exec root (agents,
/// monitors), cgroups named after it, mounts under berthd's directories, run directories.
/// A microVM container's monitor runs jailed: both of its processes (the waiter berthd
/// started and the monitor, PID 1 of its own PID namespace) with a uid of berthd's range
/// that no other monitor has, the seccomp filter, no capabilities, the jail directory as
/// root; in the container's cgroup, sized from its limits. A monitor killed from outside
/// leaves neither its cgroup nor its directory.
/// A microVM boots with a quiet console and hands memory its guest freed back to the host;
/// `--vmm-debug` brings back the full console and traces the boot's steps.
fn assert_quiet_boot_and_free_page_reporting(b: &Berthd, vm_args: &[&str]) {
    let files = |b: &Berthd, id: &str| {
        let dir = b.dir.path().join("data/containers").join(id);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        (read("console.log"), read("agent.log"))
    };
    let id = b
        .ok(&["run", "-d", "bb:1", "sleep", "600"])
        .trim()
        .to_owned();
    let (console, _) = files(b, &id);
    assert!(
        !console.contains("Linux version"),
        "the guest console is quiet by default:\n{console}"
    );
    // The agent runs in place from its image: DAX worked (erofs says so, as an error that
    // a quiet console shows, only when it does not).
    for failed in ["Turning off DAX", "for DAX"] {
        assert!(
            !console.contains(failed),
            "the agent image was not mounted with DAX:\n{console}"
        );
    }
    // The guest reports the memory it frees after boot and the monitor drops it: counted
    // by the monitor's `stats`.
    let control = b.exec_root.join("c").join(&id[..12]).join("control.sock");
    let reported = || -> u64 {
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&control) else {
            return 0;
        };
        s.write_all(b"{\"action\": \"stats\"}\n").unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        serde_json::from_str::<serde_json::Value>(&reply).unwrap_or_default()["reported_free_kib"]
            .as_u64()
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while reported() < 4096 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        reported() >= 4096,
        "the monitor was given back less than 4 MiB of the guest's free memory: {} KiB",
        reported()
    );
    b.ok(&["rm", "-f", &id]);
    // --vmm-debug: a second berthd (its own jail uids).
    let mut args = vm_args.to_vec();
    args.extend(["--vmm-debug", "--vmm-uids", "910000000:1000"]);
    let d = Berthd::start(&args);
    d.busybox();
    let id = d
        .ok(&["run", "-d", "bb:1", "sleep", "600"])
        .trim()
        .to_owned();
    let (console, agent) = files(&d, &id);
    for want in [
        "Linux version",
        "VFS: Mounted root (erofs filesystem) readonly",
        "Run /init as init process",
        "berth-agent: trace",
    ] {
        assert!(
            console.contains(want),
            "no {want:?} in the debug console:\n{console}"
        );
    }
    // The full console has every message erofs gives when it drops DAX: none here.
    assert!(
        console.contains("DAX enabled")
            && !console.contains("Turning off DAX")
            && !console.contains("for DAX"),
        "the agent image was not mounted with DAX:\n{console}"
    );
    for want in ["berth-vmm: trace", "berthd: trace", "agent answered"] {
        assert!(agent.contains(want), "no {want:?} in agent.log:\n{agent}");
    }
    d.ok(&["rm", "-f", &id]);
}

/// microVMs start from a snapshot of a guest berthd booted once (docs/snapshots.md):
/// kept root's alone, each guest's clock set and random generator reseeded.
fn assert_started_from_a_snapshot(b: &Berthd) {
    use std::os::unix::fs::MetadataExt;
    let store = b.dir.path().join("data/vm-templates");
    let templates: Vec<PathBuf> = std::fs::read_dir(&store)
        .unwrap_or_else(|e| panic!("{}: {e}", store.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        templates.len(),
        1,
        "one template, made by the first run: {templates:?}"
    );
    for f in ["state.json", "memory"] {
        let m = std::fs::metadata(templates[0].join(f)).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o600), "{f}: root's alone");
    }
    let run = |args: &[&str]| b.ok(args).trim().to_owned();
    let ids = [
        run(&["run", "-d", "bb:1", "sleep", "600"]),
        run(&["run", "-d", "bb:1", "sleep", "600"]),
    ];
    let mut randoms = Vec::new();
    for id in &ids {
        let vm_json = b.exec_root.join(format!("c/{}/vm.json", &id[..12]));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&vm_json).unwrap()).unwrap();
        assert_eq!(
            config["restore_from"].as_str(),
            templates[0].to_str(),
            "the monitor starts from the template"
        );
        let guest_now: i64 = run(&["exec", id, "date", "+%s"]).parse().unwrap();
        let host_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (guest_now - host_now).abs() <= 30,
            "the guest's wall clock is the host's ({guest_now} vs {host_now})"
        );
        randoms.push(run(&[
            "exec",
            id,
            "sh",
            "-c",
            "head -c 16 /dev/urandom | od -An -tx1",
        ]));
    }
    assert_ne!(
        randoms[0], randoms[1],
        "two guests of one snapshot draw different random bytes (reseeded)"
    );
    run(&["rm", "-f", &ids[0], &ids[1]]);
}

fn assert_monitor_jailed(b: &Berthd) {
    let run = |args: &[&str]| b.ok(args).trim().to_owned();
    let a = run(&["run", "-d", "--memory", "96m", "bb:1", "sleep", "600"]);
    let other = run(&["run", "-d", "bb:1", "sleep", "600"]);
    let procs_of = |id: &str| -> Vec<i32> {
        let pattern = format!("{}/c/{}/vm.json", b.exec_root.display(), &id[..12]);
        let out = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let status = |pid: i32, key: &str| -> String {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{key}:"))
                    .map(|v| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let uid_of = |pid: i32| -> u32 {
        status(pid, "Uid")
            .split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or(0)
    };
    let pids = procs_of(&a);
    assert_eq!(pids.len(), 2, "the waiter and the monitor: {pids:?}");
    use std::os::unix::fs::MetadataExt;
    let jail = std::fs::metadata(b.exec_root.join("c").join(&a[..12]).join("jail")).unwrap();
    for &p in &pids {
        let uid = uid_of(p);
        assert!((900_000_000..900_065_536).contains(&uid), "{p}: uid {uid}");
        assert_eq!(status(p, "Uid"), format!("{uid}\t{uid}\t{uid}\t{uid}"));
        assert_eq!(status(p, "Seccomp"), "2", "{p}");
        assert_eq!(status(p, "NoNewPrivs"), "1", "{p}");
        for cap in ["CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(status(p, cap), "0000000000000000", "{p}: {cap}");
        }
        let root = std::fs::metadata(format!("/proc/{p}/root")).unwrap();
        assert_eq!(
            (root.dev(), root.ino()),
            (jail.dev(), jail.ino()),
            "{p}: its root is the jail"
        );
        let cg = std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
        assert!(cg.trim_end().ends_with(&format!("/berth/{a}")), "{p}: {cg}");
    }
    assert!(
        pids.iter().any(|p| status(*p, "NSpid").ends_with("\t1")),
        "the monitor is PID 1 of its own namespace"
    );
    let others: Vec<u32> = procs_of(&other).into_iter().map(uid_of).collect();
    assert!(
        !others.is_empty() && !others.contains(&uid_of(pids[0])),
        "each monitor has its own uid: {others:?}"
    );
    let cg_line = std::fs::read_to_string(format!("/proc/{}/cgroup", pids[0])).unwrap();
    let cg_dir = PathBuf::from("/sys/fs/cgroup").join(cg_line.trim().trim_start_matches("0::/"));
    let read = |f: &str| std::fs::read_to_string(cg_dir.join(f)).unwrap_or_default();
    // 96 MiB for the workload, 64 for the guest kernel and agent, 64 for the monitor.
    assert_eq!(
        read("memory.max").trim(),
        ((96 + 64 + 64) << 20).to_string()
    );
    assert_eq!(read("pids.max").trim(), "9");
    assert_eq!(read("cpu.max").trim(), "200000 100000");
    // A monitor killed from outside (a crash) takes its jail with it.
    for &p in &pids {
        // SAFETY: kill with plain integers, of the container's own monitor.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    assert!(
        eventually(60, || run(&[
            "inspect",
            "--format",
            "{{.State.Running}}",
            &a
        ]) == "false"),
        "the container exits with its monitor"
    );
    assert!(
        eventually(30, || !cg_dir.exists()),
        "{} left",
        cg_dir.display()
    );
    assert!(!b.exec_root.join("c").join(&a[..12]).exists());
    b.ok(&["rm", "-f", &a, &other]);
    let left = leftovers(b, &[a, other]);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
}

fn leftovers(b: &Berthd, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let procs = Command::new("pgrep")
        .arg("-af")
        .arg(b.exec_root.to_string_lossy().as_ref())
        .output()
        .unwrap();
    out.extend(
        String::from_utf8_lossy(&procs.stdout)
            .lines()
            // berthd itself names the exec root too.
            .filter(|l| !l.contains("berthd"))
            .map(|l| format!("process: {l}")),
    );
    let cgroups = Command::new("find")
        .args(["/sys/fs/cgroup", "-maxdepth", "8", "-type", "d"])
        .output()
        .unwrap();
    for l in String::from_utf8_lossy(&cgroups.stdout).lines() {
        if ids.iter().any(|id| l.ends_with(id.as_str())) {
            out.push(format!("cgroup: {l}"));
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let dir = b.dir.path().to_string_lossy().to_string();
    let exec_root = b.exec_root.to_string_lossy().to_string();
    for l in mounts.lines() {
        if l.contains(&dir) || l.contains(&exec_root) {
            out.push(format!("mount: {l}"));
        }
    }
    for id in ids {
        if b.exec_root.join("c").join(&id[..12]).exists() {
            out.push(format!("run directory of {id}"));
        }
    }
    out
}

#[test]
fn restart_never_fails_and_rm_f_at_any_moment_leaves_nothing() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let id = b
        .ok(&[
            "run",
            "-d",
            "bb:1",
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.1; done",
        ])
        .trim()
        .to_owned();
    for i in 0..30 {
        let f = b.docker(&["restart", "-t", "3", &id]);
        assert_eq!(f.status, 0, "restart {i}: {}\n{}", f.stderr, b.log());
        assert_eq!(
            b.ok(&["inspect", "--format", "{{.State.Running}}", &id])
                .trim(),
            "true",
            "restart {i}"
        );
    }
    let mut ids = vec![id.clone()];
    b.ok(&["rm", "-f", &id]);
    // rm -f at every moment of a container's life: while it starts, runs, stops.
    for i in 0..50u64 {
        let id = b
            .ok(&[
                "run",
                "-d",
                "bb:1",
                "sh",
                "-c",
                "sleep 0.$RANDOM; echo done",
            ])
            .trim()
            .to_owned();
        std::thread::sleep(Duration::from_millis((i * 37) % 300));
        let f = b.docker(&["rm", "-f", &id]);
        assert_eq!(f.status, 0, "rm -f {i}: {}", f.stderr);
        ids.push(id);
    }
    assert_eq!(b.ok(&["ps", "-aq"]), "");
    let left = leftovers(&b, &ids);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
}

/// Polls `f` every 50 ms for up to `secs`, until it is true.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn restart_policies_restart_as_dockers_do() {
    let mut b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let state = |b: &Berthd, id: &str| -> String {
        b.ok(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}",
            id,
        ])
        .trim()
        .to_owned()
    };
    // on-failure:2 — two restarts, then it stays exited with its status.
    let failing = b
        .ok(&[
            "run",
            "-d",
            "--restart",
            "on-failure:2",
            "bb:1",
            "sh",
            "-c",
            "echo run; exit 3",
        ])
        .trim()
        .to_owned();
    assert!(
        eventually(20, || state(&b, &failing) == "exited 2 3"),
        "{}",
        state(&b, &failing)
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state(&b, &failing), "exited 2 3", "no third restart");
    assert_eq!(b.ok(&["logs", &failing]), "run\nrun\nrun\n");
    // on-failure does not restart a success.
    let ok = b
        .ok(&["run", "-d", "--restart", "on-failure", "bb:1", "true"])
        .trim()
        .to_owned();
    assert!(eventually(10, || state(&b, &ok) == "exited 0 0"));
    // always restarts even a success; a stop ends it.
    let always = b
        .ok(&[
            "run",
            "-d",
            "--restart",
            "always",
            "bb:1",
            "sh",
            "-c",
            "sleep 0.2",
        ])
        .trim()
        .to_owned();
    assert!(
        eventually(20, || {
            let s = state(&b, &always);
            s.split(' ').nth(1).and_then(|n| n.parse::<u32>().ok()) >= Some(2)
        }),
        "{}",
        state(&b, &always)
    );
    b.ok(&["stop", "-t", "1", &always]);
    let stopped = state(&b, &always);
    assert!(stopped.starts_with("exited "), "{stopped}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        state(&b, &always),
        stopped,
        "a stopped container stays stopped"
    );
    // unless-stopped, stopped by hand, stays stopped across a berthd restart; always
    // comes back.
    let unless = b
        .ok(&[
            "run",
            "-d",
            "--restart",
            "unless-stopped",
            "bb:1",
            "sleep",
            "100",
        ])
        .trim()
        .to_owned();
    b.ok(&["stop", "-t", "1", &unless]);
    b.kill9();
    b.spawn(&["--exec-opt", "isolation=process"]);
    assert!(
        eventually(20, || state(&b, &always).starts_with("running ")),
        "an always container comes back with berthd: {}",
        state(&b, &always)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        state(&b, &unless).starts_with("exited "),
        "{}",
        state(&b, &unless)
    );
    // --rm and a policy conflict (dockerd's 400; the docker CLI refuses it itself).
    let (status, body) = raw(
        &b.sock,
        &{
            let body = r#"{"Image":"bb:1","Cmd":["true"],"HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#;
            format!(
                "POST /v1.44/containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        },
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("AutoRemove"), "{body}");
    for id in [&failing, &ok, &always, &unless] {
        b.ok(&["rm", "-f", id]);
    }
}

#[test]
fn malformed_requests_get_4xx_never_a_crash() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let post = |path: &str, body: &str| {
        raw(&b.sock, &format!("POST {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())).unwrap()
    };
    let get = |path: &str| raw(&b.sock, &format!("GET {path} HTTP/1.0\r\n\r\n")).unwrap();
    let cases: Vec<(&str, (u16, String), u16)> = vec![
        (
            "malformed JSON",
            post("/v1.44/containers/create", "{\"Image\": "),
            400,
        ),
        (
            "not an object",
            post("/v1.44/containers/create", "[1,2]"),
            400,
        ),
        (
            "a known field berth does not apply",
            post(
                "/v1.44/containers/create",
                r#"{"Image":"bb:1","Cmd":["true"],"HostConfig":{"DeviceCgroupRules":["c 1:3 rwm"]}}"#,
            ),
            501,
        ),
        (
            "wrong type",
            post(
                "/v1.44/containers/create",
                r#"{"Image":"bb:1","Cmd":"true","HostConfig":{"Memory":"lots"}}"#,
            ),
            400,
        ),
        (
            "no image",
            post("/v1.44/containers/create", r#"{"Cmd":["true"]}"#),
            400,
        ),
        (
            "unknown image",
            post(
                "/v1.44/containers/create",
                r#"{"Image":"nope:1","Cmd":["true"]}"#,
            ),
            404,
        ),
        (
            "bad name",
            post(
                "/v1.44/containers/create?name=../../x",
                r#"{"Image":"bb:1","Cmd":["true"]}"#,
            ),
            400,
        ),
        (
            "bad isolation",
            post(
                "/v1.44/containers/create",
                r#"{"Image":"bb:1","Cmd":["true"],"HostConfig":{"Isolation":"chroot"}}"#,
            ),
            400,
        ),
        (
            "unknown container",
            get("/v1.44/containers/0123456789ab/json"),
            404,
        ),
        (
            "path traversal id",
            get("/v1.44/containers/..%2f..%2fetc/json"),
            404,
        ),
        (
            "unknown image inspect",
            get("/v1.44/images/nope:1/json"),
            404,
        ),
        (
            "bad reference",
            post("/v1.44/images/create?fromImage=UPPER%20case", ""),
            400,
        ),
        ("old API", get("/v1.12/version"), 400),
        ("unknown route", get("/v1.44/nothing/here"), 404),
        (
            "bad signal",
            post("/v1.44/containers/0123456789ab/kill?signal=SIGNOPE", ""),
            404,
        ),
        ("unknown exec", get("/v1.44/exec/abc/json"), 404),
        // Swarm answers as dockerd's does outside a swarm; making one is not built.
        ("swarm inspect", get("/v1.44/swarm"), 503),
        ("swarm leave", post("/v1.44/swarm/leave", ""), 503),
        ("services", get("/v1.44/services"), 503),
        ("swarm init", post("/v1.44/swarm/init", "{}"), 501),
        (
            "a volume driver",
            post(
                "/v1.44/containers/create",
                r#"{"Image":"bb:1","Cmd":["true"],"HostConfig":{"VolumeDriver":"convoy"}}"#,
            ),
            501,
        ),
    ];
    for (what, (status, body), want) in cases {
        assert_eq!(status, want, "{what}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
    // /info carries the keys dockerd's does, with berth's values.
    let (status, body) = get("/v1.44/info");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["Swarm"]["LocalNodeState"], "inactive", "{body}");
    assert!(info["MemTotal"].as_i64().unwrap_or(0) > 0, "{body}");
    for k in [
        "SystemTime",
        "Debug",
        "ExperimentalBuild",
        "CgroupVersion",
        "LoggingDriver",
        "Plugins",
        "LiveRestoreEnabled",
        "IndexServerAddress",
    ] {
        assert!(info.get(k).is_some(), "/info lacks {k}: {body}");
    }
    // Unknown fields are ignored, as dockerd ignores them (SDKs send newer API fields).
    let (status, body) = post(
        "/v1.44/containers/create",
        r#"{"Image":"bb:1","Cmd":["true"],"Runtime":"io.containerd.runc.v2","HostConfig":{"Bogus":1}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.ok(&["rm", &id]);
    // Still serving.
    assert_eq!(get("/_ping").0, 200);
    assert_eq!(
        b.ok(&["ps", "-aq"]),
        "",
        "no half-made container left behind"
    );
}

#[test]
fn docker_run_rm_of_a_microvm_container_in_the_lab() {
    if !berth_e2e::in_lab_or_rerun(
        "docker_run_rm_of_a_microvm_container_in_the_lab",
        Duration::from_secs(1500),
    ) {
        return;
    }
    let (kernel, _) = guest_kernel().unwrap();
    // The agent as berthd boots it by default: an erofs image on virtio-pmem (DAX).
    let initrd = repo_root().join("target/berth/agent.erofs");
    assert!(
        initrd.is_file(),
        "run scripts/build-agent first (scripts/test does)"
    );
    // No --exec-opt: microVM isolation is the default.
    let vm_args = [
        "--kernel",
        kernel.to_str().unwrap(),
        "--agent-initrd",
        initrd.to_str().unwrap(),
    ];
    // Where the time goes, for a failure in a slower CI lab.
    let t0 = std::time::Instant::now();
    let step = |what: &str| eprintln!("[{:6.1}s] {what}", t0.elapsed().as_secs_f64());
    let mut b = Berthd::start(&vm_args);
    b.busybox();
    step("berthd up, image loaded");
    let f = b.docker(&[
        "run",
        "--rm",
        "bb:1",
        "sh",
        "-c",
        "echo hello from a microVM; uname -r; exit 3",
    ]);
    assert_eq!(f.status, 3, "{}\n{}\n{}", f.stdout, f.stderr, b.log());
    let mut lines = f.stdout.lines();
    assert_eq!(lines.next(), Some("hello from a microVM"));
    let guest_kernel = lines.next().unwrap_or_default().to_owned();
    let lab_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(
        guest_kernel,
        lab_kernel.trim(),
        "the workload ran on berth's guest kernel, not the lab's"
    );
    assert_eq!(b.ok(&["ps", "-aq"]), "");
    step("run --rm");
    assert_started_from_a_snapshot(&b);
    step("started from a snapshot");
    assert_monitor_jailed(&b);
    step("the monitor's jail");
    assert_quiet_boot_and_free_page_reporting(&b, &vm_args);
    step("quiet boot, free page reporting, --vmm-debug");
    // Every byte of a microVM workload's output reaches attach and the host log.
    for i in 0..2 {
        let out = b.ok(&["run", "--rm", "bb:1", "seq", "1", "200000"]);
        assert_eq!(
            out.len(),
            SEQ_BYTES,
            "run {i}: the tail of the output was lost"
        );
        step("run --rm seq");
    }
    // The host copy of the log is Docker's JSON (ten times the output): a shorter run
    // keeps the emulated lab's copy quick, and is still far past the ~60 KB that was lost.
    let id = b
        .ok(&["run", "-d", "bb:1", "seq", "1", "50000"])
        .trim()
        .to_owned();
    assert_eq!(b.ok(&["wait", &id]).trim(), "0");
    step("run -d seq, exited");
    let logs = b.ok(&["logs", &id]);
    assert_eq!(logs.len(), 288_894, "docker logs lost the tail");
    assert!(logs.ends_with("49999\n50000\n"));
    b.ok(&["rm", &id]);
    step("logs");
    // The host copy of a microVM's log rotates as asked.
    let id = b
        .ok(&[
            "run",
            "-d",
            "--log-opt",
            "max-size=10k",
            "--log-opt",
            "max-file=2",
            "bb:1",
            "seq",
            "1",
            "20000",
        ])
        .trim()
        .to_owned();
    assert_eq!(b.ok(&["wait", &id]).trim(), "0");
    let log = PathBuf::from(b.ok(&["inspect", "--format", "{{.LogPath}}", &id]).trim());
    assert_log_files(&log, 2, 10 << 10);
    assert_rotated_tail(&b.ok(&["logs", &id]), 20000);
    b.ok(&["rm", &id]);
    step("log rotation");
    assert_confinement_applies(&b);
    step("confinement settings");
    assert_healthchecks(&b);
    step("healthchecks");
    assert_pause_and_update(&b, true);
    step("pause, unpause, update");
    // --privileged in a microVM: full privilege inside the guest (the VM stays the
    // boundary), the guest's devices included (its root disk: a small image's is on
    // virtio-pmem, after the agent's).
    assert_privileged(&b, "pmem1", "000001ffffffffff");
    step("privileged");
    // The host's PIDs are out of a microVM's reach: --pid host is refused, naming it.
    let f = b.docker(&["run", "--rm", "--pid", "host", "bb:1", "true"]);
    assert_eq!(f.status, 125, "{}", f.stderr);
    assert!(
        f.stderr.contains("PidMode") && f.stderr.contains("microVM"),
        "{}",
        f.stderr
    );
    // rm -f while the microVM boots, runs and exits leaves no monitor behind.
    let mut ids = Vec::new();
    for wait_ms in [0u64, 1500, 4500] {
        let id = b
            .ok(&["run", "-d", "bb:1", "sh", "-c", "sleep 3; echo done"])
            .trim()
            .to_owned();
        std::thread::sleep(Duration::from_millis(wait_ms));
        b.ok(&["rm", "-f", &id]);
        ids.push(id);
    }
    let vmms = Command::new("pgrep")
        .args(["-af", "berth-vmm"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&vmms.stdout),
        "",
        "rm -f left a monitor running"
    );
    let left = leftovers(&b, &ids);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    step("rm -f at any moment");
    // A restart policy restarts a microVM container too (a new microVM each time).
    let id = b
        .ok(&[
            "run",
            "-d",
            "--restart",
            "on-failure:1",
            "bb:1",
            "sh",
            "-c",
            "echo run; exit 3",
        ])
        .trim()
        .to_owned();
    let state = || {
        b.ok(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}",
            &id,
        ])
        .trim()
        .to_owned()
    };
    assert!(eventually(120, || state() == "exited 1 3"), "{}", state());
    assert_eq!(
        b.ok(&["logs", &id]),
        "run\nrun\n",
        "the restarted microVM's output is in the log; its error: {}\nberthd log:\n{}",
        b.ok(&["inspect", "--format", "{{.State.Error}}", &id]),
        b.log()
    );
    b.ok(&["rm", &id]);
    step("restart policy");
    // A microVM outlives a SIGKILLed berthd; the restarted one re-adopts it.
    let id = b
        .ok(&[
            "run",
            "-d",
            "bb:1",
            "sh",
            "-c",
            "echo before; until [ -e /tmp/go ]; do sleep 0.2; done; echo after; exit 7",
        ])
        .trim()
        .to_owned();
    b.kill9();
    step("berthd killed");
    b.spawn(&vm_args);
    step("berthd restarted");
    // The workload waits for the test, so however slow the lab is, it is still running.
    assert_eq!(
        b.ok(&["inspect", "--format", "{{.State.Running}}", &id])
            .trim(),
        "true"
    );
    b.ok(&["exec", &id, "touch", "/tmp/go"]);
    assert_eq!(b.ok(&["wait", &id]).trim(), "7");
    assert_eq!(
        b.ok(&["logs", &id]),
        "before\nafter\n",
        "the restarted berthd caught up on the microVM's log"
    );
    b.ok(&["rm", &id]);
    step("re-adopted after kill -9");
}

#[test]
fn the_berth_cli_runs_containers_with_dockers_flags_and_exit_codes() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let berth = |args: &[&str]| -> Finished {
        Command::new(built_binary("berth"))
            .arg("-H")
            .arg(format!("unix://{}", b.sock.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    };
    let f = berth(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "bb:1",
        "sh",
        "-c",
        "echo $A $(pwd); echo oops >&2; exit 9",
    ]);
    assert_eq!(
        (f.status, f.stdout.as_str(), f.stderr.as_str()),
        (9, "1 /tmp\n", "oops\n")
    );
    let envf = b.dir.path().join("env.list");
    std::fs::write(&envf, "# comment\nFROM_FILE=yes\n").unwrap();
    let f = berth(&[
        "run",
        "--rm",
        "--env-file",
        envf.to_str().unwrap(),
        "--entrypoint",
        "/bin/sh",
        "bb:1",
        "-c",
        "echo $FROM_FILE",
    ]);
    assert_eq!(f.stdout, "yes\n", "{}", f.stderr);
    assert_eq!(berth(&["run", "--rm", "bb:1", "/no/such"]).status, 127);
    assert_eq!(
        berth(&["run", "--rm", "bb:1", "/not-executable"]).status,
        126
    );
    let f = berth(&["run", "--rm", "127.0.0.1:1/nosuch:1"]);
    assert_eq!(f.status, 125);
    assert!(
        f.stderr
            .contains("Unable to find image '127.0.0.1:1/nosuch:1' locally"),
        "{}",
        f.stderr
    );
    // Limits reach the container's cgroup: a memory hog is killed (137).
    let f = berth(&[
        "run",
        "--rm",
        "-m",
        "16m",
        "--pids-limit",
        "50",
        "bb:1",
        "sh",
        "-c",
        "x=a; while true; do x=$x$x; done",
    ]);
    assert_eq!(f.status, 137, "{}", f.stderr);
    let id = berth(&["run", "-d", "--name", "longrun", "bb:1", "sleep", "100"])
        .stdout
        .trim()
        .to_owned();
    assert_eq!(id.len(), 64);
    assert!(berth(&["ps"]).stdout.contains("longrun"));
    let f = berth(&["exec", "longrun", "sh", "-c", "echo in; exit 6"]);
    assert_eq!((f.status, f.stdout.as_str()), (6, "in\n"));
    assert!(berth(&["top", "longrun"]).stdout.contains("sleep 100"));
    assert_eq!(berth(&["kill", "longrun"]).status, 0);
    assert_eq!(berth(&["wait", "longrun"]).stdout.trim(), "137");
    assert_eq!(berth(&["rm", "longrun"]).status, 0);
    let f = berth(&["inspect", "nothing-here"]);
    assert_eq!(f.status, 1);
    assert!(
        f.stderr.contains("No such object: nothing-here"),
        "{}",
        f.stderr
    );
    assert!(berth(&["version"]).stdout.contains("API version: 1.44"));
    assert!(berth(&["images"]).stdout.contains("bb "));
    // Its own usage errors exit 125, as the docker CLI's do; --help is not an error.
    assert_eq!(berth(&["run"]).status, 125);
    assert_eq!(berth(&["--no-such-flag", "ps"]).status, 125);
    assert_eq!(berth(&["--help"]).status, 0);
    // A closed stdout ends it quietly.
    let f: Finished = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} -H unix://{} images | true",
            built_binary("berth").display(),
            b.sock.display()
        ))
        .output()
        .unwrap()
        .into();
    assert!(!f.stderr.contains("panicked"), "{}", f.stderr);
}

#[test]
fn the_berth_cli_formats_filters_publishes_and_logs_in() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let config = b.dir.path().join("berth-config");
    let berth = |args: &[&str]| -> Finished {
        Command::new(built_binary("berth"))
            .arg("-H")
            .arg(format!("unix://{}", b.sock.display()))
            .args(args)
            .env("DOCKER_CONFIG", &config)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    };
    let ok = |args: &[&str]| -> String {
        let f = berth(args);
        assert_eq!(f.status, 0, "berth {args:?}: {}", f.stderr);
        f.stdout
    };
    ok(&["run", "--name", "one", "-l", "tier=web", "bb:1", "true"]);
    ok(&[
        "run",
        "-d",
        "--name",
        "two",
        "-l",
        "tier=db",
        "--stop-signal",
        "SIGUSR1",
        "bb:1",
        "sleep",
        "100",
    ]);
    // --filter and Go templates, as docker ps takes them.
    assert_eq!(
        ok(&[
            "ps",
            "-a",
            "--filter",
            "label=tier=web",
            "--format",
            "{{.Names}} {{.State}} {{.Labels}}"
        ]),
        "one exited tier=web\n"
    );
    assert_eq!(ok(&["ps", "--format", "{{.Names}}"]), "two\n");
    let t = ok(&["ps", "--format", "table {{.ID}}\t{{.Names}}"]);
    let mut lines = t.lines();
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with("CONTAINER ID   NAMES"),
        "{t}"
    );
    assert!(lines.next().unwrap_or_default().ends_with("   two"), "{t}");
    let j = ok(&["ps", "-a", "--format", "json"]);
    let names: Vec<String> = j
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["Names"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names.len(), 2, "{j}");
    assert_eq!(
        ok(&["ps", "-a", "-q", "--filter", "name=one"]).trim().len(),
        12
    );
    assert_eq!(ok(&["ps", "-l", "--format", "{{.Names}}"]), "two\n");
    assert_eq!(berth(&["ps", "--filter", "bogus"]).status, 125);
    // Template errors exit 1, as the docker CLI's; a field the formatter lacks is one.
    assert_eq!(berth(&["ps", "--format", "{{.Names"]).status, 1);
    let f = berth(&["ps", "-a", "--format", "{{.Nope}}"]);
    assert_eq!(f.status, 1);
    assert!(f.stderr.contains("Nope"), "{}", f.stderr);
    // inspect -f reads the inspect document; images take formats and references.
    assert_eq!(
        ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.Config.Image}} {{json .Config.Labels}}",
            "one"
        ]),
        "exited bb:1 {\"tier\":\"web\"}\n"
    );
    assert_eq!(
        ok(&["inspect", "--type", "image", "-f", "{{.Id}}", "bb:1"]).len(),
        72
    );
    let f = berth(&["inspect", "--type", "container", "bb:1"]);
    assert_eq!(f.status, 1);
    assert!(f.stderr.contains("No such container: bb:1"), "{}", f.stderr);
    assert_eq!(
        ok(&["images", "--format", "{{.Repository}}:{{.Tag}}", "bb"]),
        "bb:1\n"
    );
    assert_eq!(
        ok(&["images", "bb:2"]).lines().count(),
        1,
        "only the header"
    );
    // stop --timeout: the stop signal (--stop-signal, which PID 1 here has no handler
    // for) is sent, and after the timeout the container is killed.
    assert_eq!(
        ok(&["inspect", "-f", "{{.Config.StopSignal}}", "two"]),
        "SIGUSR1\n"
    );
    let t0 = Instant::now();
    ok(&["stop", "--timeout", "1", "two"]);
    assert!(t0.elapsed() < Duration::from_secs(8));
    assert_eq!(
        ok(&["inspect", "-f", "{{.State.ExitCode}}", "two"]),
        "137\n"
    );
    ok(&["start", "two"]);
    ok(&["restart", "-t", "0", "-s", "KILL", "two"]);
    assert_eq!(
        ok(&["inspect", "-f", "{{.State.Status}}", "two"]),
        "running\n"
    );
    ok(&["rm", "-f", "two"]);
    // stop -s: this signal, not the stop signal, and the workload's handler runs.
    ok(&[
        "run",
        "-d",
        "--name",
        "three",
        "bb:1",
        "sh",
        "-c",
        "trap 'exit 7' USR2; sleep 100 & wait",
    ]);
    let t0 = Instant::now();
    ok(&["stop", "-s", "USR2", "--timeout", "30", "three"]);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the handler ended it"
    );
    assert_eq!(
        ok(&["inspect", "-f", "{{.State.ExitCode}}", "three"]),
        "7\n"
    );
    ok(&["rm", "three"]);
    // --mount type=tmpfs is applied; what berth has not built is refused by name.
    let out = ok(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,dst=/scratch,tmpfs-size=1m",
        "bb:1",
        "sh",
        "-c",
        "grep ' /scratch ' /proc/mounts",
    ]);
    assert!(
        out.contains("tmpfs /scratch tmpfs") && out.contains("size=1024k"),
        "{out}"
    );
    for (flags, field) in [
        (vec!["-v", "/tmp:/host:shared"], "bind propagation"),
        (
            vec!["--device", "/dev/no-such-device"],
            "error gathering device information",
        ),
        // This berthd runs with --bridge none: publishing needs a network.
        (
            vec!["-p", "8080:80"],
            "published ports need a bridge network",
        ),
        (vec!["--dns", "nonsense"], "--dns"),
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend(flags.iter());
        args.extend(["bb:1", "true"]);
        let f = berth(&args);
        assert_eq!(f.status, 125, "{flags:?}");
        assert!(f.stderr.contains(field), "{flags:?}: {}", f.stderr);
    }
    let f = berth(&["run", "--rm", "-p", "80/icmp", "bb:1", "true"]);
    assert_eq!(f.status, 125);
    assert!(f.stderr.contains("invalid proto"), "{}", f.stderr);
    // login checks the credentials through berthd and keeps them where the docker CLI
    // does; push sends them.
    let reg = Registry::start(Auth::Basic("bob".into(), "hunter2".into())).unwrap();
    let f = berth(&["login", "-u", "bob", "-p", "wrong", &reg.host]);
    assert_eq!(f.status, 1);
    assert!(f.stderr.contains("unauthorized"), "{}", f.stderr);
    assert!(!config.join("config.json").exists());
    let f: Finished = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo hunter2 | {} -H unix://{} login -u bob --password-stdin {}",
            built_binary("berth").display(),
            b.sock.display(),
            reg.host
        ))
        .env("DOCKER_CONFIG", &config)
        .output()
        .unwrap()
        .into();
    assert_eq!(
        (f.status, f.stdout.as_str()),
        (0, "Login Succeeded\n"),
        "{}",
        f.stderr
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        saved["auths"][&reg.host]["auth"], "Ym9iOmh1bnRlcjI=",
        "{saved}"
    );
    let name = format!("{}/mine/bb:1", reg.host);
    ok(&["tag", "bb:1", &name]);
    ok(&["push", &name]);
    assert!(ok(&["logout", &reg.host]).contains("Removing login credentials"));
    assert_ne!(
        berth(&["push", &name]).status,
        0,
        "a push without credentials went through"
    );
    // A credential helper in the config is refused by name, never bypassed quietly.
    let mut with_helper = saved.clone();
    with_helper["credsStore"] = "desktop".into();
    std::fs::write(config.join("config.json"), with_helper.to_string()).unwrap();
    let f = berth(&["login", "-u", "bob", "-p", "hunter2", &reg.host]);
    assert_eq!(f.status, 1);
    assert!(f.stderr.contains("credsStore"), "{}", f.stderr);
}

#[test]
fn plain_tcp_is_refused_unless_forced() {
    let port = berth_e2e::registry::free_port().unwrap();
    let tcp = format!("tcp://127.0.0.1:{port}");
    let dir = TempDir::new("berthd-tcp").unwrap();
    let f: Finished = Command::new(built_binary("berthd"))
        .args(["-H", &tcp, "--data-root"])
        .arg(dir.path().join("data"))
        .arg("--exec-root")
        .arg(dir.path().join("run"))
        .output()
        .unwrap()
        .into();
    assert_eq!(f.status, 1);
    assert!(
        f.stderr
            .contains("plain TCP gives anyone who can reach it root")
            && f.stderr.contains("--tlsverify")
            && f.stderr.contains("--allow-plain-tcp"),
        "{}",
        f.stderr
    );
    let b = Berthd::start(&[
        "-H",
        &tcp,
        "--allow-plain-tcp",
        "--exec-opt",
        "isolation=process",
    ]);
    let v: Finished = Command::new(docker_bin())
        .args(["-H", &tcp, "version", "--format", "{{.Server.APIVersion}}"])
        .env("DOCKER_CONFIG", dir.path().join("docker-config"))
        .output()
        .unwrap()
        .into();
    assert_eq!(v.stdout.trim(), "1.44", "{}", v.stderr);
    assert!(
        b.log().contains("plain TCP without TLS"),
        "a loud warning in the log"
    );
}

/// Named volumes, anonymous volumes with the image's content copied up, bind mounts
/// (read-only ones refuse writes; host changes show live), `--volumes-from`, `rm -v`, and
/// data that outlives its container and a SIGKILLed berthd (process isolation).
#[test]
fn volumes_and_bind_mounts_keep_data_and_confine_writes() {
    let args = ["--exec-opt", "isolation=process"];
    let mut b = Berthd::start(&args);
    b.busybox();
    b.volume_image();

    // A named volume: written by one container, read by the next after the first is gone.
    b.ok(&["volume", "create", "--label", "k=v", "data"]);
    b.volume_kept_after_its_writer();
    let mp = b.ok(&[
        "volume",
        "inspect",
        "-f",
        "{{.Mountpoint}} {{.Labels.k}}",
        "data",
    ]);
    let (mountpoint, label) = mp.trim().split_once(' ').unwrap();
    assert_eq!(label, "v");
    assert_eq!(
        std::fs::read_to_string(Path::new(mountpoint).join("f")).unwrap(),
        "kept\n"
    );
    // In use: rm is refused with 409 naming it.
    let user = b.ok(&["run", "-d", "-v", "data:/data", "bb:1", "sleep", "300"]);
    let f = b.docker(&["volume", "rm", "data"]);
    assert_ne!(f.status, 0);
    assert!(f.stderr.contains("volume is in use"), "{}", f.stderr);
    // --volumes-from, read-only: the same data, writes refused.
    let out = b.docker(&[
        "run",
        "--rm",
        "--volumes-from",
        &format!("{}:ro", user.trim()),
        "bb:1",
        "sh",
        "-c",
        "cat /data/f; echo x > /data/g",
    ]);
    assert_eq!(out.stdout, "kept\n");
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );
    // Survives a SIGKILLed berthd.
    b.kill9();
    std::thread::sleep(Duration::from_millis(300));
    b.spawn(&args);
    assert_eq!(b.ok(&["exec", user.trim(), "cat", "/data/f"]), "kept\n");
    b.ok(&["rm", "-f", user.trim()]);
    assert!(b.ok(&["volume", "ls", "-q"]).lines().any(|l| l == "data"));

    // A bind mount: host changes show live; :ro refuses writes (EROFS).
    let host = b.dir.path().join("shared");
    std::fs::create_dir_all(&host).unwrap();
    let spec = format!("{}:/shared", host.display());
    let live = b.ok(&["run", "-d", "-v", &spec, "bb:1", "sleep", "300"]);
    std::fs::write(host.join("new"), "fresh\n").unwrap();
    assert_eq!(
        b.ok(&["exec", live.trim(), "cat", "/shared/new"]),
        "fresh\n"
    );
    b.ok(&["exec", live.trim(), "sh", "-c", "echo back > /shared/back"]);
    assert_eq!(
        std::fs::read_to_string(host.join("back")).unwrap(),
        "back\n"
    );
    b.ok(&["rm", "-f", live.trim()]);
    let f = b.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{spec}:ro"),
        "bb:1",
        "sh",
        "-c",
        "echo x > /shared/x",
    ]);
    assert_ne!(f.status, 0);
    assert!(f.stderr.contains("Read-only file system"), "{}", f.stderr);
    assert!(!host.join("x").exists());
    // ... and so are the mounts below it.
    std::fs::create_dir_all(host.join("sub")).unwrap();
    let sub = host.join("sub");
    assert!(Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&sub)
        .status()
        .unwrap()
        .success());
    let f = b.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{spec}:ro"),
        "bb:1",
        "sh",
        "-c",
        "echo x > /shared/sub/x",
    ]);
    let _ = Command::new("umount").arg(&sub).status();
    assert_ne!(f.status, 0, "a submount of a :ro bind was writable");
    assert!(f.stderr.contains("Read-only file system"), "{}", f.stderr);
    // --mount type=bind refuses a missing source; -v creates it.
    let missing = b.dir.path().join("made-by-v");
    let f = b.docker(&[
        "run",
        "--rm",
        "--mount",
        &format!("type=bind,src={},dst=/m", missing.display()),
        "bb:1",
        "true",
    ]);
    assert_eq!(f.status, 125);
    assert!(
        f.stderr.contains("bind source path does not exist"),
        "{}",
        f.stderr
    );
    b.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/m", missing.display()),
        "bb:1",
        "true",
    ]);
    assert!(missing.is_dir());

    // The image's VOLUME: an anonymous volume seeded with the image's content, shown in
    // inspect, and removed by rm -v.
    let id = b.ok(&["run", "-d", "vol:1", "cat", "/seed/hello"]);
    let id = id.trim();
    assert_eq!(b.ok(&["wait", id]).trim(), "0");
    assert_eq!(b.ok(&["logs", id]), "from the image\n");
    let name = b.ok(&[
        "inspect",
        "-f",
        "{{(index .Mounts 0).Name}} {{(index .Mounts 0).Destination}}",
        id,
    ]);
    let (anon, dest) = name.trim().split_once(' ').unwrap();
    assert_eq!(dest, "/seed");
    assert_eq!(anon.len(), 64);
    assert!(b.ok(&["volume", "ls", "-q"]).contains(anon));
    b.ok(&["rm", "-v", id]);
    assert!(
        !b.ok(&["volume", "ls", "-q"]).contains(anon),
        "rm -v removes the anonymous volume"
    );
    // --rm removes anonymous volumes too, never named ones.
    b.ok(&[
        "run",
        "--rm",
        "-v",
        "/scratch",
        "-v",
        "data:/data",
        "bb:1",
        "true",
    ]);
    let left = b.ok(&["volume", "ls", "-q"]);
    assert_eq!(left.trim(), "data", "{left}");
    // Bad input: clear errors, nothing made.
    for (spec, want) in [
        ("a/b:/x", "invalid characters"),
        ("data:/x:bogus", "invalid mode"),
        ("data:relative", "must be absolute"),
    ] {
        let f = b.docker(&["run", "--rm", "-v", spec, "bb:1", "true"]);
        assert_eq!(f.status, 125, "{spec}");
        assert!(f.stderr.contains(want), "{spec}: {}", f.stderr);
    }
    assert_eq!(b.ok(&["volume", "ls", "-q"]).trim(), "data");
    b.ok(&["volume", "rm", "data"]);
    assert_eq!(b.ok(&["volume", "ls", "-q"]), "");
}

/// docker cp both ways (running and stopped containers), export and diff; every path
/// resolves inside the container's root, symlinks and "../" included (process isolation).
#[test]
fn cp_export_and_diff_stay_inside_the_container() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let work = b.dir.path().join("cp");
    std::fs::create_dir_all(&work).unwrap();
    let id = b.ok(&[
        "run", "-d", "bb:1", "sh", "-c",
        "mkdir -p /data/sub; echo deep > /data/sub/x; ln -sfn / /hostroot; ln -sfn /etc /tmp/evil; rm -f /etc/group; sleep 300",
    ]);
    let id = id.trim();
    std::thread::sleep(Duration::from_millis(500));
    // Out: a directory, a file, a directory's contents.
    b.ok(&[
        "cp",
        &format!("{id}:/data"),
        work.join("d").to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(work.join("d/sub/x")).unwrap(),
        "deep\n"
    );
    b.ok(&["cp", &format!("{id}:/data/sub/x"), work.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(work.join("x")).unwrap(), "deep\n");
    // A symlink to / in the container is the container's root, not the host's.
    let f = b.docker(&[
        "cp",
        &format!("{id}:/hostroot/etc/shadow"),
        work.join("s").to_str().unwrap(),
    ]);
    assert_ne!(f.status, 0);
    assert!(f.stderr.contains("Could not find the file"), "{}", f.stderr);
    assert!(!work.join("s").exists());
    // In: a file through a symlink to /etc lands in the container's /etc.
    let marker = format!("berth-cp-test-{}", std::process::id());
    std::fs::write(work.join(&marker), "in\n").unwrap();
    b.ok(&[
        "cp",
        work.join(&marker).to_str().unwrap(),
        &format!("{id}:/tmp/evil/"),
    ]);
    assert_eq!(
        b.ok(&["exec", id, "cat", &format!("/etc/{marker}")]),
        "in\n"
    );
    assert!(
        !Path::new("/etc").join(&marker).exists(),
        "written on the host"
    );
    // A tar whose entries climb out with ../ stays inside too.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    let name = format!("../../../../tmp/{marker}-escape");
    // The tar crate refuses to write "..": set the name's bytes directly.
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    tar.append(&h, &b"out"[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut child = b
        .docker_cmd(&["cp", "-", &format!("{id}:/tmp")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&tar).unwrap();
    let _ = child.wait_with_output().unwrap();
    assert!(
        !Path::new(&format!("/tmp/{marker}-escape")).exists(),
        "escaped to the host"
    );
    // diff: what the workload changed, not berth's mount points.
    let diff = b.ok(&["diff", id]);
    for want in [
        "A /data",
        "A /data/sub/x",
        "D /etc/group",
        "A /hostroot",
        &format!("A /etc/{marker}"),
    ] {
        assert!(diff.lines().any(|l| l == want), "{want}: {diff}");
    }
    assert!(!diff.contains("/etc/hosts"), "{diff}");
    // Stopped: cp both ways through its layers, then started again with the file.
    b.ok(&["stop", "-t", "1", id]);
    b.ok(&[
        "cp",
        &format!("{id}:/data/sub/x"),
        work.join("x2").to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(work.join("x2")).unwrap(), "deep\n");
    b.ok(&[
        "cp",
        work.join(&marker).to_str().unwrap(),
        &format!("{id}:/stopped.txt"),
    ]);
    b.ok(&["start", id]);
    assert_eq!(b.ok(&["exec", id, "cat", "/stopped.txt"]), "in\n");
    // export: the whole filesystem, without /proc's content.
    let out = b.docker_cmd(&["export", id]).output().unwrap();
    assert!(out.status.success());
    let mut names = Vec::new();
    for e in tar::Archive::new(&out.stdout[..]).entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    assert!(names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    assert!(names.iter().any(|n| n == "data/sub/x"));
    assert!(
        !names.iter().any(|n| n.starts_with("proc/1")),
        "runtime mounts exported"
    );
    // The berth CLI: cp, export -o, diff.
    let berth = |args: &[&str]| -> Finished {
        Command::new(built_binary("berth"))
            .arg("-H")
            .arg(format!("unix://{}", b.sock.display()))
            .args(args)
            .output()
            .unwrap()
            .into()
    };
    let f = berth(&[
        "cp",
        &format!("{id}:/data/."),
        work.join("contents").to_str().unwrap(),
    ]);
    assert_eq!(f.status, 0, "{}", f.stderr);
    assert!(work.join("contents/sub/x").is_file());
    let f = berth(&["export", "-o", work.join("e.tar").to_str().unwrap(), id]);
    assert_eq!(f.status, 0, "{}", f.stderr);
    assert!(std::fs::metadata(work.join("e.tar")).unwrap().len() > 100_000);
    assert!(berth(&["diff", id]).stdout.contains("A /data/sub/x"));
    let f = berth(&["cp", &format!("{id}:/nope"), "x"]);
    assert_eq!(f.status, 1);
    assert!(
        f.stderr.contains("Could not find the file /nope"),
        "{}",
        f.stderr
    );
    b.ok(&["rm", "-f", id]);
    // A container sharing the host's PIDs can't reach the host through /proc/1/root: the
    // helper has no /proc.
    let hp = b.ok(&[
        "run",
        "-d",
        "--pid",
        "host",
        "bb:1",
        "sh",
        "-c",
        "ln -s /proc/1/root/etc /app; sleep 300",
    ]);
    let hp = hp.trim();
    std::thread::sleep(Duration::from_millis(300));
    let f = b.docker(&[
        "cp",
        &format!("{hp}:/app/hostname"),
        work.join("h").to_str().unwrap(),
    ]);
    assert_ne!(f.status, 0, "read the host's /etc/hostname");
    assert!(!work.join("h").exists());
    b.ok(&["rm", "-f", hp]);
    // Into a created container's volume: the data is in the volume when it starts.
    let cr = b.ok(&[
        "create",
        "-v",
        "seed:/data",
        "bb:1",
        "cat",
        &format!("/data/{marker}"),
    ]);
    let cr = cr.trim();
    b.ok(&[
        "cp",
        work.join(&marker).to_str().unwrap(),
        &format!("{cr}:/data/"),
    ]);
    b.ok(&["start", cr]);
    assert_eq!(b.ok(&["wait", cr]).trim(), "0");
    assert_eq!(b.ok(&["logs", cr]), "in\n");
    b.ok(&["rm", "-v", cr]);
    b.ok(&["volume", "rm", "seed"]);
}

/// The virtiofsd processes serving shares under `exec_root` (their sockets live there).
fn virtiofsd_under(exec_root: &Path) -> Vec<String> {
    let root = exec_root.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let argv0 = cmd.split(' ').next().unwrap_or_default();
        if argv0.ends_with("/virtiofsd") && cmd.contains(&root) {
            found.push(cmd);
        }
    }
    found
}

/// Waits up to 10 s for no virtiofsd to serve a container of this berthd.
fn assert_no_virtiofsd(exec_root: &Path, when: &str) {
    let t0 = Instant::now();
    loop {
        let left = virtiofsd_under(exec_root);
        if left.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{when}: virtiofsd left running: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Volumes, bind mounts and tmpfs of microVM containers, in the lab: each volume or bind is
/// a virtio-fs device served by its own virtiofsd. Data outlives containers and a
/// SIGKILLed berthd, `:ro` is refused with EROFS, host changes show, the image's VOLUME is
/// copied up, and no virtiofsd outlives its microVM.
#[test]
fn volumes_and_bind_mounts_of_microvm_containers_in_the_lab() {
    if !berth_e2e::in_lab_or_rerun(
        "volumes_and_bind_mounts_of_microvm_containers_in_the_lab",
        Duration::from_secs(1500),
    ) {
        return;
    }
    let (kernel, _) = guest_kernel().unwrap();
    // The agent's initramfs form (the other microVM tests boot its erofs image): its
    // guests boot (no snapshot: shares need guest RAM virtiofsd can map anyway) and find
    // the image's disk on virtio-blk.
    let initrd = repo_root().join("target/berth/agent-initramfs.cpio");
    assert!(initrd.is_file(), "run scripts/build-agent first");
    let virtiofsd = berth_e2e::virtiofsd().unwrap();
    // The lab's root is an overlay, which can't hold the upper layer of a process
    // container's overlay: the test's directories go on a tmpfs (the lab VM's own).
    let tmp = repo_root().join("target/e2e-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    assert!(Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&tmp)
        .status()
        .unwrap()
        .success());
    let args = [
        "--kernel",
        kernel.to_str().unwrap(),
        "--agent-initrd",
        initrd.to_str().unwrap(),
        "--virtiofsd",
        virtiofsd.to_str().unwrap(),
    ];
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("[{:6.1}s] {what}", t0.elapsed().as_secs_f64());
    let mut b = Berthd::start(&args);
    b.busybox();
    b.volume_image();
    step("berthd up, images loaded");

    // A named volume: written by one microVM, read by the next after the first is gone,
    // and by a process container: one volume, whatever the isolation.
    b.ok(&["volume", "create", "data"]);
    b.volume_kept_after_its_writer();
    assert_eq!(
        b.ok(&[
            "run",
            "--rm",
            "--isolation",
            "process",
            "-v",
            "data:/data",
            "bb:1",
            "cat",
            "/data/f"
        ]),
        "kept\n"
    );
    assert_no_virtiofsd(&b.exec_root, "after run --rm");
    // The lab's cgroups are v2: a process container's device allow-list is a BPF program.
    let f = b.docker(&[
        "run",
        "--rm",
        "--isolation",
        "process",
        "bb:1",
        "sh",
        "-c",
        "mknod /dev/x b 7 0 && head -c 1 /dev/x",
    ]);
    assert_ne!(f.status, 0);
    assert!(f.stderr.contains("Operation not permitted"), "{}", f.stderr);
    step("named volume across microVMs");
    // Survives a SIGKILLed berthd: the running microVM keeps its share.
    let user = b.ok(&["run", "-d", "-v", "data:/data", "bb:1", "sleep", "300"]);
    let user = user.trim().to_owned();
    // (virtiofsd is two processes: its sandboxed server and the parent waiting for it.)
    assert!(!virtiofsd_under(&b.exec_root).is_empty());
    b.kill9();
    std::thread::sleep(Duration::from_millis(300));
    b.spawn(&args);
    assert_eq!(b.ok(&["exec", &user, "cat", "/data/f"]), "kept\n");
    b.ok(&["exec", &user, "sh", "-c", "echo again > /data/g"]);
    let mp = b.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "data"]);
    assert_eq!(
        std::fs::read_to_string(Path::new(mp.trim()).join("g")).unwrap(),
        "again\n"
    );
    let f = b.docker(&["volume", "rm", "data"]);
    assert!(f.stderr.contains("volume is in use"), "{}", f.stderr);
    b.ok(&["rm", "-f", &user]);
    assert_no_virtiofsd(&b.exec_root, "after rm -f");
    step("kill -9 of berthd, rm -f");

    // A bind mount: host changes show, guest writes land; :ro refuses writes (EROFS),
    // and the host side refuses them too (virtiofsd --readonly).
    let host = b.dir.path().join("shared");
    std::fs::create_dir_all(&host).unwrap();
    let spec = format!("{}:/shared", host.display());
    let live = b.ok(&["run", "-d", "-v", &spec, "bb:1", "sleep", "300"]);
    let live = live.trim().to_owned();
    std::fs::write(host.join("new"), "fresh\n").unwrap();
    let seen = (0..50).find_map(|_| {
        let f = b.docker(&["exec", &live, "cat", "/shared/new"]);
        if f.status == 0 {
            return Some(f.stdout);
        }
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    assert_eq!(
        seen.as_deref(),
        Some("fresh\n"),
        "host changes did not show"
    );
    b.ok(&["exec", &live, "sh", "-c", "echo back > /shared/back"]);
    assert_eq!(
        std::fs::read_to_string(host.join("back")).unwrap(),
        "back\n"
    );
    b.ok(&["rm", "-f", &live]);
    let f = b.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{spec}:ro"),
        "bb:1",
        "sh",
        "-c",
        "cat /shared/back; echo x > /shared/x",
    ]);
    assert_eq!(f.stdout, "back\n");
    assert_ne!(f.status, 0);
    assert!(f.stderr.contains("Read-only file system"), "{}", f.stderr);
    assert!(!host.join("x").exists());
    let ro = b.ok(&[
        "run",
        "-d",
        "-v",
        &format!("{spec}:ro"),
        "bb:1",
        "sleep",
        "300",
    ]);
    let ro = ro.trim().to_owned();
    let sock_cmd = virtiofsd_under(&b.exec_root);
    assert!(
        sock_cmd.iter().any(|c| c.contains("--readonly")),
        "{sock_cmd:?}"
    );
    b.ok(&["rm", "-f", &ro]);
    // A file can't be shared with a microVM: refused by name, nothing made.
    std::fs::write(host.join("file"), "x").unwrap();
    let f = b.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/f", host.join("file").display()),
        "bb:1",
        "true",
    ]);
    assert_eq!(f.status, 125);
    assert!(f.stderr.contains("directories only"), "{}", f.stderr);
    step("bind mounts");

    // --tmpfs is a tmpfs of the requested size.
    let out = b.ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/t:size=8m",
        "bb:1",
        "sh",
        "-c",
        "grep ' /t ' /proc/mounts | cut -d' ' -f3; df -k /t | tail -n 1",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("tmpfs"), "{out}");
    let size: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(size.get(1), Some(&"8192"), "{out}");

    // The image's VOLUME: an anonymous volume seeded with the image's content.
    let id = b.ok(&["run", "-d", "vol:1", "cat", "/seed/hello"]);
    let id = id.trim();
    assert_eq!(b.ok(&["wait", id]).trim(), "0");
    assert_eq!(b.ok(&["logs", id]), "from the image\n");
    let anon = b.ok(&["inspect", "-f", "{{(index .Mounts 0).Name}}", id]);
    b.ok(&["rm", "-v", id]);
    assert!(!b.ok(&["volume", "ls", "-q"]).contains(anon.trim()));
    step("tmpfs, VOLUME copy-up");

    // cp, diff and export of a microVM container: the guest agent's helper, in the
    // container's own root (a symlink to / is the container's root, not the guest's).
    let work = b.dir.path().join("cp");
    std::fs::create_dir_all(&work).unwrap();
    let id = b.ok(&[
        "run", "-d", "-v", "cpvol:/vol", "bb:1", "sh", "-c",
        "mkdir -p /data/sub; echo deep > /data/sub/x; ln -sfn / /hostroot; rm -f /etc/group; touch /ready; sleep 300",
    ]);
    let id = id.trim().to_owned();
    for _ in 0..100 {
        if b.docker(&["exec", &id, "test", "-f", "/ready"]).status == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    b.ok(&[
        "cp",
        &format!("{id}:/data"),
        work.join("d").to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(work.join("d/sub/x")).unwrap(),
        "deep\n"
    );
    let f = b.docker(&[
        "cp",
        &format!("{id}:/hostroot/run/berth"),
        work.join("guest").to_str().unwrap(),
    ]);
    assert_ne!(f.status, 0, "the guest's /run/berth was reachable");
    assert!(f.stderr.contains("Could not find the file"), "{}", f.stderr);
    std::fs::write(work.join("in.txt"), "into the guest\n").unwrap();
    b.ok(&[
        "cp",
        work.join("in.txt").to_str().unwrap(),
        &format!("{id}:/tmp/"),
    ]);
    assert_eq!(
        b.ok(&["exec", &id, "cat", "/tmp/in.txt"]),
        "into the guest\n"
    );
    let diff = b.ok(&["diff", &id]);
    for want in ["A /data/sub/x", "D /etc/group", "A /tmp/in.txt"] {
        assert!(diff.lines().any(|l| l == want), "{want} not in:\n{diff}");
    }
    assert!(!diff.contains("/vol"), "{diff}");
    let tar = b.dir.path().join("export.tar");
    b.ok(&["export", "-o", tar.to_str().unwrap(), &id]);
    let list = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        list.lines()
            .any(|l| l.trim_end_matches('/') == "data/sub/x"),
        "{list}"
    );
    assert!(list.lines().any(|l| l == "bin/busybox"), "{list}");
    assert!(!list.lines().any(|l| l.starts_with("etc/group")), "{list}");
    step("cp, diff, export of a running microVM");
    // Stopped: its image with its volumes; a copy in goes into a volume, or is refused.
    b.ok(&["kill", &id]);
    b.ok(&["wait", &id]);
    b.ok(&[
        "cp",
        &format!("{id}:/bin/busybox"),
        work.join("bb").to_str().unwrap(),
    ]);
    assert!(work.join("bb").is_file());
    b.ok(&[
        "cp",
        work.join("in.txt").to_str().unwrap(),
        &format!("{id}:/vol/"),
    ]);
    let vmp = b.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "cpvol"]);
    assert_eq!(
        std::fs::read_to_string(Path::new(vmp.trim()).join("in.txt")).unwrap(),
        "into the guest\n"
    );
    let f = b.docker(&[
        "cp",
        work.join("in.txt").to_str().unwrap(),
        &format!("{id}:/tmp/"),
    ]);
    assert_ne!(f.status, 0);
    assert!(
        f.stderr.contains("made afresh from the image"),
        "{}",
        f.stderr
    );
    assert_eq!(b.ok(&["diff", &id]), "");
    b.ok(&["rm", &id]);
    b.ok(&["volume", "rm", "cpvol"]);
    step("cp of a stopped microVM");
    b.ok(&["volume", "rm", "data"]);
    assert_no_virtiofsd(&b.exec_root, "at the end");
}

/// A second berthd on a data root or an exec root already in use is refused with the
/// first one's PID, and the first goes on serving; once the first is SIGKILLed, a new one
/// starts on the same roots.
#[test]
fn a_second_berthd_on_the_same_roots_is_refused() {
    let args = ["--exec-opt", "isolation=process"];
    let mut b = Berthd::start(&args);
    let other = PathBuf::from(format!("/tmp/berth-e2e-second-{}", std::process::id()));
    let second = |data: &Path, exec: &Path| {
        let out = Command::new("timeout")
            .args(["-s", "KILL", "20"])
            .arg(built_binary("berthd"))
            .arg("-H")
            .arg(format!("unix://{}/b.sock", other.display()))
            .arg("--data-root")
            .arg(data)
            .arg("--exec-root")
            .arg(exec)
            .args(["--bridge", "none"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let pid = b.child.as_ref().unwrap().id().to_string();
    let data = b.dir.path().join("data");
    let (code, err) = second(&data, &other.join("run"));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--data-root") && err.contains(&format!("another berthd (pid {pid})")),
        "{err}"
    );
    let (code, err) = second(&b.dir.path().join("data2"), &b.exec_root);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--exec-root"), "{err}");
    assert!(
        !other.join("b.sock").exists(),
        "the refused one bound its socket"
    );
    // The first is untouched, and its lock goes with it.
    b.ok(&["version"]);
    b.kill9();
    b.spawn(&args);
    b.ok(&["ps"]);
    let _ = std::fs::remove_dir_all(&other);
}

/// /proc in a process container is mounted as runc mounts it: nosuid, nodev, noexec.
#[test]
fn proc_in_a_process_container_is_nosuid_nodev_noexec() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let line = b.ok(&[
        "run",
        "--rm",
        "bb:1",
        "grep",
        " /proc proc ",
        "/proc/mounts",
    ]);
    let opts: Vec<&str> = line
        .split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .split(',')
        .collect();
    for want in ["nosuid", "nodev", "noexec"] {
        assert!(opts.contains(&want), "{want} missing: {line}");
    }
}

/// Docker's default device allow-list in a process container: root may make any device
/// node, but opens only the listed ones (a loop device, /dev/kvm and /dev/mem: EPERM).
#[test]
fn a_process_container_opens_only_the_default_devices() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let out = b.docker(&[
        "run",
        "--rm",
        "bb:1",
        "sh",
        "-c",
        "for d in 'b 7 0' 'c 10 232' 'c 1 1' 'c 4 0'; do mknod /dev/x $d && echo made; \
         head -c 1 /dev/x >/dev/null 2>/tmp/e; echo \"open=$? $(cat /tmp/e)\"; rm -f /dev/x; done; \
         echo ok > /dev/null && head -c 4 /dev/urandom | wc -c",
    ]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 9, "{}", out.stdout);
    for pair in lines[..8].chunks(2) {
        assert_eq!(pair[0], "made", "{}", out.stdout);
        assert!(
            pair[1].starts_with("open=1") && pair[1].contains("Operation not permitted"),
            "{}",
            out.stdout
        );
    }
    assert_eq!(lines[8].trim(), "4", "{}", out.stdout);
}

/// berthd SIGKILLed in the middle of an `import` leaves its half-received upload in
/// `<data-root>/tmp`; the next berthd removes it at start (one berthd per data root).
#[test]
fn an_upload_cut_by_kill_9_leaves_no_temp_file() {
    let args = ["--exec-opt", "isolation=process"];
    let mut b = Berthd::start(&args);
    let tmp = b.dir.path().join("data/tmp");
    let uploads = || -> Vec<String> {
        std::fs::read_dir(&tmp)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut s = UnixStream::connect(&b.sock).unwrap();
    s.write_all(
        b"POST /v1.44/images/create?fromSrc=-&repo=half HTTP/1.1\r\nHost: berth\r\n\
          Content-Type: application/x-tar\r\nContent-Length: 100000000\r\n\r\n",
    )
    .unwrap();
    s.write_all(&vec![0u8; 1 << 20]).unwrap();
    let t0 = Instant::now();
    while uploads().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no upload file appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    b.kill9();
    drop(s);
    assert!(!uploads().is_empty(), "the upload was not left behind");
    b.spawn(&args);
    assert_eq!(uploads(), Vec::<String>::new());
    assert!(!b.ok(&["images", "-q"]).contains("half"));
}

/// Every file and directory under `roots` (not following links), as root sees them.
fn walk(roots: &[&Path]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo: Vec<PathBuf> = roots.iter().map(|p| p.to_path_buf()).collect();
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                todo.extend(rd.flatten().map(|e| e.path()));
            }
            out.push(p);
        } else if m.is_file() {
            out.push(p);
        }
    }
    out
}

/// What user `nobody` (65534, no groups) manages to read or list among `paths`.
fn readable_by_nobody(paths: &[PathBuf]) -> Vec<String> {
    use std::os::unix::process::CommandExt;
    let list = std::env::temp_dir().join(format!("berth-e2e-paths-{}", std::process::id()));
    let body: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(&list, body).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "[ -r \"$1\" ] || exit 3; while IFS= read -r f; do \
               if [ -d \"$f\" ]; then ls -- \"$f\" >/dev/null 2>&1 && echo \"$f\"; \
               else head -c 1 -- \"$f\" >/dev/null 2>&1 && echo \"$f\"; fi; \
             done < \"$1\"; exit 0",
        )
        .arg("sh")
        .arg(&list)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&list);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A local user who is not in berthd's group reads nothing berthd keeps: not a container's
/// record (its environment holds passwords), log, writable layer or volume, not an image;
/// the roots are 0700 (also when an older berthd left them 0755), records and logs 0600,
/// the socket 0660.
#[test]
fn a_local_user_reads_nothing_under_the_data_root() {
    use std::os::unix::fs::PermissionsExt;
    let args = ["--exec-opt", "isolation=process"];
    let mut b = Berthd::start(&args);
    b.busybox();
    b.ok(&[
        "run",
        "-d",
        "--name",
        "longrun",
        "-e",
        "PASSWORD=hunter2",
        "-v",
        "secrets:/secrets",
        "bb:1",
        "sh",
        "-c",
        "echo hunter2 > /secrets/pw; echo hunter2 > /root-pw; echo $PASSWORD; sleep 1000",
    ]);
    assert!(eventually(10, || b
        .ok(&["logs", "longrun"])
        .contains("hunter2")));
    let data = b.dir.path().join("data");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    // Control: the test's own files beside the data root are world-readable, so a refusal
    // below comes from berthd's modes.
    let control = vec![b.dir.path().to_path_buf(), b.dir.path().join("berthd.log")];
    assert_eq!(readable_by_nobody(&control).len(), 2);
    let check = |b: &Berthd| {
        assert_eq!(mode(&data), 0o700);
        assert!(matches!(mode(&b.exec_root), 0o700 | 0o710));
        assert_eq!(mode(&b.sock), 0o660);
        let all = walk(&[&data, &b.exec_root]);
        assert!(all.len() > 50, "{}", all.len());
        let secret: Vec<&PathBuf> = all
            .iter()
            .filter(|p| {
                std::fs::symlink_metadata(p).unwrap().is_file()
                    && std::fs::read(p)
                        .map(|c| c.windows(7).any(|w| w == b"hunter2"))
                        .unwrap_or(false)
            })
            .collect();
        // The record (environment), the log, the layer's file and the volume's.
        assert!(secret.len() >= 4, "{secret:?}");
        for p in &secret {
            let name = p.to_string_lossy();
            if name.ends_with(".json") || name.ends_with(".log") {
                assert_eq!(mode(p), 0o600, "{name}");
            }
        }
        let read = readable_by_nobody(&all);
        assert!(read.is_empty(), "nobody reads {read:?}");
    };
    check(&b);
    // An older berthd's 0755 root is closed again at start.
    b.kill9();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&b.exec_root, std::fs::Permissions::from_mode(0o755)).unwrap();
    b.spawn(&args);
    check(&b);
}

/// Sends `POST /containers/ID/stop?t=SECS` on a new connection and returns it unread.
fn send_stop(sock: &Path, id: &str, secs: u32) -> UnixStream {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(
        format!(
            "POST /v1.44/containers/{id}/stop?t={secs} HTTP/1.1\r\nHost: berth\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    s
}

/// `docker stop -t 3` whose client hangs up after a second still stops the container, as
/// dockerd does: the workload (PID 1, deaf to SIGTERM) is killed when the 3 s are up.
#[test]
fn a_stop_whose_client_hangs_up_still_stops_the_container() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    b.ok(&["run", "-d", "--name", "longrun", "bb:1", "sleep", "1000"]);
    let s = send_stop(&b.sock, "longrun", 3);
    std::thread::sleep(Duration::from_secs(1));
    drop(s);
    let state = || {
        b.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "longrun",
        ])
    };
    assert!(
        eventually(15, || state().trim() == "exited 137"),
        "{}",
        state()
    );
}

/// SIGTERM to berthd while a `stop -t 4` runs: berthd stops accepting at once (its socket
/// still there, connections refused), lets the stop finish and answer its client, and
/// removes its socket last.
#[test]
fn sigterm_stops_accepting_finishes_a_running_stop_then_removes_the_socket() {
    let args = ["--exec-opt", "isolation=process"];
    let mut b = Berthd::start(&args);
    b.busybox();
    b.ok(&["run", "-d", "--name", "longrun", "bb:1", "sleep", "1000"]);
    let mut s = send_stop(&b.sock, "longrun", 4);
    std::thread::sleep(Duration::from_secs(1));
    let pid = b.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill sends a signal to the berthd this test started; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(500));
    assert!(b.sock.exists(), "the socket went first");
    let refused = UnixStream::connect(&b.sock);
    assert!(
        refused.is_err(),
        "a new connection was accepted after SIGTERM"
    );
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 204"), "{head:?}\n{}", b.log());
    let mut child = b.child.take().unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "berthd did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(!b.sock.exists(), "the socket was left behind");
    b.spawn(&args);
    assert_eq!(
        b.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "longrun"
        ])
        .trim(),
        "exited 137"
    );
}

/// berthd's CPU time so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// 80 clients that connect and never send a header, against a berthd whose descriptors
/// run out (64): berthd neither spins (accept errors back off) nor holds them forever
/// (headers time out at 30 s), and a real client is answered once they are dropped.
#[test]
fn idle_connections_past_the_fd_limit_neither_spin_nor_starve_berthd() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    let pid = b.child.as_ref().unwrap().id();
    let st = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg("--nofile=64:64")
        .status()
        .unwrap();
    assert!(st.success());
    let hogs: Vec<UnixStream> = (0..80)
        .map(|_| UnixStream::connect(&b.sock).unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(4));
    let spent = cpu_ticks(pid) - t0;
    // A spinning accept loop burns all 4 s (400 ticks).
    assert!(
        spent < 40,
        "berthd used {spent} ticks in 4 s with idle clients"
    );
    let mut s = UnixStream::connect(&b.sock).unwrap();
    s.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(75))).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.0 200"), "{out:?}");
    // The first hog was dropped by the server (EOF), not kept.
    let mut first = &hogs[0];
    first
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(first.read(&mut [0u8; 16]).unwrap(), 0);
}

/// berthd's peak memory (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A tar stream of raw entries (name, type, mode, data), written verbatim.
fn raw_tar(entries: &[(&str, u8, u32, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, mode, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(tar::EntryType::new(*kind));
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Images keep what their layers say: setuid and setgid programs (owned by someone else
/// too) and device nodes with their modes. Hostile archives are refused at their cost,
/// cleaned up, and said plainly: a gzip bomb at berthd's `--max-image-size`, a free-space
/// reserve (`--min-free-space`), a 1 GiB long-name header before it is allocated, and a
/// `docker load` whose manifest.json is not JSON.
#[test]
fn images_keep_setuid_and_devices_and_bombs_are_refused_at_their_cost() {
    use std::os::unix::fs::PermissionsExt;
    let mut b = Berthd::start(&["--exec-opt", "isolation=process", "--max-image-size", "64m"]);
    // setuid root, setuid another user, setgid, and a device node.
    let root = b.dir.path().join("suidroot");
    busybox_rootfs(&root).unwrap();
    for (p, mode, owner) in [
        ("bin/t-suid", 0o4755, 0),
        ("bin/t-ping", 0o4711, 1000),
        ("bin/t-wall", 0o2755, 0),
    ] {
        std::fs::write(root.join(p), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::chown(root.join(p), Some(owner), Some(owner)).unwrap();
        std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::create_dir_all(root.join("lib")).unwrap();
    let st = Command::new("mknod")
        .args(["-m", "0640"])
        .arg(root.join("lib/null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success());
    let t = b.dir.path().join("suid.tar");
    tar_dir(&root, &t);
    b.ok(&["import", t.to_str().unwrap(), "suid:1"]);
    let out = b.ok(&[
        "run",
        "--rm",
        "suid:1",
        "stat",
        "-c",
        "%n %a %u %F %t,%T",
        "/bin/t-suid",
        "/bin/t-ping",
        "/bin/t-wall",
        "/lib/null",
    ]);
    assert_eq!(
        out,
        "/bin/t-suid 4755 0 regular file 0,0\n/bin/t-ping 4711 1000 regular file 0,0\n\
         /bin/t-wall 2755 0 regular file 0,0\n/lib/null 640 0 character special file 1,3\n"
    );

    // A gzip bomb: 100 KiB that unpack to 96 MiB, over the 64 MiB cap.
    let bomb = b.dir.path().join("bomb.tar.gz");
    let zeros = b.dir.path().join("zeros");
    std::fs::create_dir_all(&zeros).unwrap();
    std::fs::File::create(zeros.join("zeros"))
        .unwrap()
        .set_len(96 << 20)
        .unwrap();
    let st = Command::new("tar")
        .arg("-C")
        .arg(&zeros)
        .arg("-czf")
        .arg(&bomb)
        .arg("zeros")
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::metadata(&bomb).unwrap().len() < 1 << 20);
    let image = b.dir.path().join("data/image");
    let entries = |d: &str| std::fs::read_dir(image.join(d)).unwrap().count();
    let built = entries("rootfs");
    let f = b.docker(&["import", bomb.to_str().unwrap(), "bomb:1"]);
    assert_eq!(f.status, 1, "{}", f.stderr);
    assert!(
        f.stderr.contains("over the max-image-size cap"),
        "{}",
        f.stderr
    );
    assert_eq!(entries("tmp"), 0, "a refused unpack left its work");
    assert_eq!(entries("rootfs"), built);
    assert!(!b.ok(&["images"]).contains("bomb"));

    // A 1 GiB long-name header, with 160 MiB behind it, gzipped to ~160 KiB: refused at
    // its header (by `load` and by `import`), before anything is allocated for it.
    let pid = b.child.as_ref().unwrap().id();
    let mut evil = raw_tar(&[("././@LongLink", b'L', 0o644, b"")]);
    evil.truncate(512);
    evil[124..136].copy_from_slice(b"10000000000\0");
    let sum: u32 = evil[..148]
        .iter()
        .chain(&evil[156..512])
        .map(|c| *c as u32)
        .sum::<u32>()
        + 8 * 32;
    evil[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let header_path = b.dir.path().join("longname.hdr");
    std::fs::write(&header_path, &evil).unwrap();
    let evil_path = b.dir.path().join("longname.tar.gz");
    let st = Command::new("sh")
        .arg("-c")
        .arg("{ cat \"$1\"; head -c 167772160 /dev/zero; } | gzip -1 > \"$2\"")
        .arg("sh")
        .arg(&header_path)
        .arg(&evil_path)
        .status()
        .unwrap();
    assert!(st.success());
    let before = peak_rss_kib(pid);
    let f = b.docker(&["import", evil_path.to_str().unwrap(), "longname:1"]);
    assert_ne!(f.status, 0);
    assert!(f.stderr.contains("GNU long name"), "{}", f.stderr);
    let plain_path = b.dir.path().join("longname.tar");
    evil.extend(vec![b'a'; 4 << 20]);
    std::fs::write(&plain_path, &evil).unwrap();
    let f = b.docker(&["load", "-i", plain_path.to_str().unwrap()]);
    assert_ne!(f.status, 0);
    assert!(f.stderr.contains("GNU long name"), "{}", f.stderr);
    let after = peak_rss_kib(pid);
    assert!(
        after < before + (100 << 10),
        "berthd's peak went from {before} to {after} KiB"
    );
    assert_eq!(entries("tmp"), 0);

    // manifest.json that is not JSON: what is wrong, and where.
    let bad = raw_tar(&[("manifest.json", b'0', 0o644, b"{not json")]);
    let bad_path = b.dir.path().join("badmanifest.tar");
    std::fs::write(&bad_path, bad).unwrap();
    let f = b.docker(&["load", "-i", bad_path.to_str().unwrap()]);
    assert_ne!(f.status, 0);
    assert!(
        f.stderr.contains(
            "manifest.json in the archive is not valid JSON: key must be a string at line 1 column 2"
        ),
        "{}",
        f.stderr
    );

    // Without the cap, but keeping more free space than the disk has: refused the same.
    b.kill9();
    b.spawn(&[
        "--exec-opt",
        "isolation=process",
        "--max-image-size",
        "0",
        "--min-free-space",
        "1000t",
    ]);
    let f = b.docker(&["import", bomb.to_str().unwrap(), "bomb:1"]);
    assert_eq!(f.status, 1, "{}", f.stderr);
    assert!(f.stderr.contains("min-free-space"), "{}", f.stderr);
    assert_eq!(entries("rootfs"), built);
    assert_eq!(entries("tmp"), 0);
}

/// berthd SIGKILLed while it removes 12 containers (`rm -f`, all at once), plus the two
/// worst states by hand: a container directory whose record went first (its agent still
/// running), and an agent whose directory is gone. At restart every container is either
/// listed (and removable) or gone without a trace: no agent, cgroup, run directory or
/// container directory is left.
#[test]
fn what_a_crash_mid_remove_leaves_is_removed_at_restart() {
    let args = ["--exec-opt", "isolation=process"];
    let mut b = Berthd::start(&args);
    b.busybox();
    let run = |name: &str| {
        b.ok(&["run", "-d", "--name", name, "bb:1", "sleep", "1000"])
            .trim()
            .to_owned()
    };
    let storm: Vec<String> = (0..12).map(|i| run(&format!("c{i}"))).collect();
    let (no_record, no_dir) = (run("x1"), run("x2"));
    let mut rms: Vec<Child> = storm
        .iter()
        .map(|id| {
            b.docker_cmd(&["rm", "-f", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    b.kill9();
    for r in &mut rms {
        let _ = r.wait();
    }
    let data = b.dir.path().join("data/containers");
    std::fs::remove_file(data.join(&no_record).join("config.v2.json")).unwrap();
    std::fs::remove_dir_all(data.join(&no_dir)).unwrap();
    let mut all = storm.clone();
    all.extend([no_record.clone(), no_dir.clone()]);
    b.spawn(&args);
    let listed: Vec<String> = b
        .ok(&["ps", "-aq", "--no-trunc"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(!listed.contains(&no_record) && !listed.contains(&no_dir));
    let gone: Vec<String> = all
        .iter()
        .filter(|i| !listed.contains(i))
        .cloned()
        .collect();
    let mut left = leftovers(&b, &gone)
        .into_iter()
        // The listed ones' agents (still running, or being stopped) are theirs.
        .filter(|l| !listed.iter().any(|id| l.contains(&id[..12])))
        .collect::<Vec<_>>();
    left.extend(
        gone.iter()
            .filter(|id| data.join(id).exists())
            .map(|id| format!("container directory of {id}")),
    );
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    // What is still listed is whole: rm -f works and leaves nothing either.
    for id in &listed {
        b.ok(&["rm", "-f", id]);
    }
    let left = leftovers(&b, &all);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
}

/// `--device HOST:CONTAINER:PERMS` in a process container: the node is made with the
/// host's numbers, and opened only as the permissions allow (r: reading, not writing);
/// a missing host path or a non-device is refused (125, Docker's wording), and so is a
/// microVM container (501: no host device passes into a VM).
#[test]
fn devices_given_with_device_open_as_their_permissions_say() {
    let b = Berthd::start(&["--exec-opt", "isolation=process"]);
    b.busybox();
    let probe = "stat -c '%F %t,%T' /dev/lc; \
                 (exec 3</dev/lc) 2>/dev/null && echo read-ok || echo read-denied; \
                 (exec 4>/dev/lc) 2>/dev/null && echo write-ok || echo write-denied";
    for (device, write) in [
        ("/dev/loop-control:/dev/lc:r", "write-denied"),
        ("/dev/loop-control:/dev/lc", "write-ok"),
    ] {
        let out = b.ok(&["run", "--rm", "--device", device, "bb:1", "sh", "-c", probe]);
        assert_eq!(
            out,
            format!("character special file a,ed\nread-ok\n{write}\n")
        );
    }
    // Without --device, the same node made by hand stays closed.
    let out = b.ok(&[
        "run",
        "--rm",
        "bb:1",
        "sh",
        "-c",
        "mknod /dev/lc c 10 237; (exec 3</dev/lc) 2>/dev/null && echo read-ok || echo read-denied",
    ]);
    assert_eq!(out, "read-denied\n");
    for (dev, want) in [
        (
            "/dev/no-such-device",
            "error gathering device information while adding custom device \"/dev/no-such-device\"",
        ),
        ("/etc/hostname", "not a device node"),
        ("/dev/loop-control:/etc/lc", "must be a name under /dev"),
    ] {
        let f = b.docker(&["run", "--rm", "--device", dev, "bb:1", "true"]);
        assert_eq!(f.status, 125, "{dev}: {}", f.stderr);
        assert!(f.stderr.contains(want), "{dev}: {}", f.stderr);
    }
    // The CLI checks modes itself; the API does too.
    let (status, body) = raw_json(
        &b.sock,
        "POST",
        "/v1.44/containers/create",
        r#"{"Image": "bb:1", "Cmd": ["true"], "HostConfig": {"Devices": [{"PathOnHost": "/dev/loop-control", "PathInContainer": "/dev/lc", "CgroupPermissions": "rx"}]}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid device mode: rx"), "{body}");
    let f = b.docker(&[
        "create",
        "--isolation",
        "vm",
        "--device",
        "/dev/loop-control",
        "bb:1",
        "true",
    ]);
    assert_eq!(f.status, 1, "{}", f.stderr);
    assert!(f.stderr.contains("HostConfig.Devices"), "{}", f.stderr);
    assert_eq!(b.ok(&["ps", "-aq"]), "");
}

/// A docker CLI command against a TLS endpoint, with the client certificates in `certs`.
fn docker_tls(tcp: &str, certs: &Path, config: &Path, args: &[&str]) -> Finished {
    Command::new("timeout")
        .args(["-s", "KILL", "60", docker_bin()])
        .env("DOCKER_HOST", tcp)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", certs)
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_CONTEXT")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
        .into()
}

/// The remote API over mutual TLS, spelled as dockerd's: the docker CLI with
/// DOCKER_TLS_VERIFY and a certificate the CA signed works (version, import, run with
/// attach and its exit code); a certificate from another CA, no certificate, or plain HTTP
/// get no answer; `--tls` without `--tlsverify`, or `--tlsverify` without its files, is
/// refused at start.
#[test]
fn the_remote_api_answers_only_clients_the_ca_signed() {
    let pki_dir = TempDir::new("pki").unwrap();
    let pki = Pki::new(&pki_dir.path().join("ca"), "berth test CA").unwrap();
    let rogue = Pki::new(&pki_dir.path().join("rogue"), "rogue CA").unwrap();
    let good = pki.client("tenant-a", &pki.ca()).unwrap();
    let forged = rogue.client("tenant-a", &pki.ca()).unwrap();
    let port = berth_e2e::registry::free_port().unwrap();
    let tcp = format!("tcp://127.0.0.1:{port}");
    let (cert, key) = pki.server();
    let tls_args = [
        "--tlsverify".to_owned(),
        "--tlscacert".to_owned(),
        pki.ca().display().to_string(),
        "--tlscert".to_owned(),
        cert.display().to_string(),
        "--tlskey".to_owned(),
        key.display().to_string(),
    ];
    let mut args: Vec<&str> = vec!["-H", &tcp, "--exec-opt", "isolation=process"];
    args.extend(tls_args.iter().map(String::as_str));
    let b = Berthd::start(&args);
    let config = b.dir.path().join("docker-config");
    let v = docker_tls(
        &tcp,
        &good,
        &config,
        &["version", "--format", "{{.Server.APIVersion}}"],
    );
    assert_eq!(v.stdout.trim(), "1.44", "{}", v.stderr);
    let root = b.dir.path().join("bbroot");
    busybox_rootfs(&root).unwrap();
    let tar = b.dir.path().join("bb.tar");
    tar_dir(&root, &tar);
    let f = docker_tls(
        &tcp,
        &good,
        &config,
        &["import", tar.to_str().unwrap(), "bb:1"],
    );
    assert_eq!(f.status, 0, "{}", f.stderr);
    let f = docker_tls(
        &tcp,
        &good,
        &config,
        &["run", "--rm", "bb:1", "sh", "-c", "echo over tls; exit 3"],
    );
    assert_eq!(
        (f.status, f.stdout.as_str()),
        (3, "over tls\n"),
        "{}",
        f.stderr
    );
    // Another CA's certificate, with the same name: refused at the handshake.
    let f = docker_tls(
        &tcp,
        &forged,
        &config,
        &["version", "--format", "{{.Server.APIVersion}}"],
    );
    assert_ne!(f.status, 0);
    assert!(!f.stdout.contains("1.44"), "{}", f.stdout);
    // No certificate at all.
    let mut s_client = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-quiet", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-CAfile")
        .arg(pki.ca())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s_client
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /_ping HTTP/1.0\r\n\r\n")
        .unwrap();
    let out = s_client.wait_with_output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        !answer.contains("HTTP/1"),
        "answered without a certificate: {answer}"
    );
    // Plain HTTP to the TLS port.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("OK"), "{got:?}");
    assert!(b.log().contains("refused a TLS client"), "{}", b.log());
    // Refused at start: TLS that verifies nobody, and --tlsverify without its files.
    let dir = TempDir::new("berthd-tls").unwrap();
    for (extra, want) in [
        (vec!["--tls"], "--tls without --tlsverify"),
        (vec!["--tlsverify"], "--tlsverify needs --tlscacert"),
    ] {
        let f: Finished = Command::new(built_binary("berthd"))
            .args([
                "-H",
                &format!(
                    "tcp://127.0.0.1:{}",
                    berth_e2e::registry::free_port().unwrap()
                ),
            ])
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("run"))
            .args(extra)
            .output()
            .unwrap()
            .into();
        assert_eq!(f.status, 1, "{}", f.stderr);
        assert!(f.stderr.contains(want), "{}", f.stderr);
    }
}

/// One request to berthd's TLS port with the client certificates in `certs` (curl):
/// the status and the body.
fn curl_tls(
    certs: &Path,
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-m",
        "20",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ])
    .arg("--cacert")
    .arg(certs.join("ca.pem"))
    .arg("--cert")
    .arg(certs.join("cert.pem"))
    .arg("--key")
    .arg(certs.join("key.pem"))
    .arg(format!("https://127.0.0.1:{port}/v1.44{path}"));
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Tenants, named by their client certificates: alice tries every read and write endpoint
/// on bob's container, exec, image and volume and gets 404 or 403 every time; lists,
/// events and `system df` show her none of bob's; what would reach the host (bind mounts,
/// --privileged) is refused; her quotas (containers, memory, vCPUs) hold with a 403; a
/// tag cannot be taken from under bob; a certificate that names no tenant gets 403; the
/// operator (the Unix socket) sees both.
#[test]
fn a_tenant_reaches_none_of_another_tenants_objects() {
    let pki_dir = TempDir::new("pki-tenants").unwrap();
    let pki = Pki::new(&pki_dir.path().join("ca"), "berth tenants CA").unwrap();
    let alice = pki.client("alice", &pki.ca()).unwrap();
    let bob = pki.client("bob", &pki.ca()).unwrap();
    let mallory = pki.client("mallory", &pki.ca()).unwrap();
    let port = berth_e2e::registry::free_port().unwrap();
    let tcp = format!("tcp://127.0.0.1:{port}");
    let (cert, key) = pki.server();
    let config = pki_dir.path().join("berthd.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "tlsverify": true,
            "tlscacert": pki.ca(),
            "tlscert": cert,
            "tlskey": key,
            "tenants": {
                "alice": {"containers": 3, "memory": "256m", "cpus": 2},
                "bob": {}
            }
        })
        .to_string(),
    )
    .unwrap();
    let b = Berthd::start(&[
        "-H",
        &tcp,
        "--config-file",
        config.to_str().unwrap(),
        "--exec-opt",
        "isolation=process",
    ]);
    let dcfg = b.dir.path().join("docker-config");
    let as_ = |who: &Path, args: &[&str]| docker_tls(&tcp, who, &dcfg, args);
    let ok = |who: &Path, args: &[&str]| {
        let f = as_(who, args);
        assert_eq!(f.status, 0, "{args:?}: {}\n{}", f.stderr, b.log());
        f.stdout.trim().to_owned()
    };
    // bob's objects.
    let root = b.dir.path().join("bbroot");
    busybox_rootfs(&root).unwrap();
    let tar = b.dir.path().join("bb.tar");
    tar_dir(&root, &tar);
    let image = ok(&bob, &["import", tar.to_str().unwrap(), "bob/bb:1"]);
    let ctr = ok(
        &bob,
        &[
            "run",
            "-d",
            "--name",
            "bobctr",
            "-v",
            "bobvol:/data",
            "bob/bb:1",
            "sleep",
            "1000",
        ],
    );
    let (s, body) = curl_tls(
        &bob,
        port,
        "POST",
        &format!("/containers/{ctr}/exec"),
        Some(r#"{"Cmd":["true"]}"#),
    );
    assert_eq!(s, 201, "{body}");
    let exec: String = serde_json::from_str::<serde_json::Value>(&body).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Every endpoint on bob's objects, as alice.
    let c = format!("/containers/{ctr}");
    let e = format!("/exec/{exec}");
    let i = format!("/images/{image}");
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("GET", format!("{c}/json"), None),
        ("GET", format!("{c}/logs?stdout=1&stderr=1"), None),
        ("GET", format!("{c}/top"), None),
        ("GET", format!("{c}/stats?stream=0"), None),
        ("GET", format!("{c}/changes"), None),
        ("GET", format!("{c}/export"), None),
        ("GET", format!("{c}/archive?path=/data"), None),
        ("HEAD", format!("{c}/archive?path=/data"), None),
        ("PUT", format!("{c}/archive?path=/data"), Some("")),
        ("POST", format!("{c}/attach?stream=1&stdout=1"), None),
        ("POST", format!("{c}/wait"), None),
        ("POST", format!("{c}/resize?h=10&w=10"), None),
        ("POST", format!("{c}/start"), None),
        ("POST", format!("{c}/stop?t=0"), None),
        ("POST", format!("{c}/restart?t=0"), None),
        ("POST", format!("{c}/kill"), None),
        ("POST", format!("{c}/pause"), None),
        ("POST", format!("{c}/unpause"), None),
        ("POST", format!("{c}/update"), Some("{}")),
        ("POST", format!("{c}/rename?name=stolen"), None),
        ("POST", format!("{c}/exec"), Some(r#"{"Cmd":["true"]}"#)),
        ("DELETE", format!("{c}?force=1&v=1"), None),
        ("GET", format!("{e}/json"), None),
        ("POST", format!("{e}/start"), Some(r#"{"Detach":true}"#)),
        ("POST", format!("{e}/resize?h=10&w=10"), None),
        ("GET", format!("{i}/json"), None),
        ("GET", format!("{i}/history"), None),
        ("GET", format!("{i}/get"), None),
        ("GET", "/images/bob/bb:1/json".into(), None),
        ("POST", format!("{i}/tag?repo=stolen&tag=1"), None),
        ("POST", "/images/bob/bb/push?tag=1".into(), None),
        ("DELETE", format!("{i}?force=1"), None),
        ("GET", "/volumes/bobvol".into(), None),
        ("DELETE", "/volumes/bobvol".into(), None),
        (
            "POST",
            "/volumes/create".into(),
            Some(r#"{"Name":"bobvol"}"#),
        ),
        (
            "POST",
            "/containers/create".into(),
            Some(r#"{"Image":"bob/bb:1","Cmd":["true"]}"#),
        ),
        (
            "POST",
            "/containers/create".into(),
            Some(r#"{"Image":"x","Cmd":["true"],"HostConfig":{"Binds":["bobvol:/x"]}}"#),
        ),
        (
            "POST",
            "/containers/create".into(),
            Some(r#"{"Image":"x","Cmd":["true"],"HostConfig":{"VolumesFrom":["bobctr"]}}"#),
        ),
        (
            "POST",
            "/containers/create".into(),
            Some(r#"{"Image":"x","Cmd":["true"],"HostConfig":{"NetworkMode":"container:bobctr"}}"#),
        ),
        ("POST", "/commit?container=bobctr&repo=stolen".into(), None),
        ("POST", "/containers/prune".into(), None),
        ("POST", "/volumes/prune".into(), None),
        ("POST", "/images/prune".into(), None),
        ("POST", "/containers/prune/".into(), None),
        (
            "POST",
            "/images/prune/?filters=%7B%22dangling%22%3A%5B%22false%22%5D%7D".into(),
            None,
        ),
        (
            "POST",
            "/networks/create".into(),
            Some(r#"{"Name":"meta","IPAM":{"Config":[{"Subnet":"169.254.169.252/30"}]}}"#),
        ),
    ];
    for (m, path, body) in &cases {
        let (s, text) = curl_tls(&alice, port, m, path, *body);
        assert!(
            s == 404 || s == 403,
            "alice {m} {path}: {s} {text}\n{}",
            b.log()
        );
    }
    // Bob's objects are all still there and untouched.
    assert_eq!(
        ok(
            &bob,
            &["inspect", "-f", "{{.Name}} {{.State.Status}}", "bobctr"]
        ),
        "/bobctr running"
    );
    assert_eq!(ok(&bob, &["volume", "ls", "-q"]), "bobvol");
    assert!(ok(&bob, &["images", "-q", "--no-trunc"]).contains(&image));
    // Alice's lists, events and df show none of them.
    let (_, list) = curl_tls(&alice, port, "GET", "/containers/json?all=1", None);
    let (_, imgs) = curl_tls(&alice, port, "GET", "/images/json", None);
    let (_, vols) = curl_tls(&alice, port, "GET", "/volumes", None);
    let (_, df) = curl_tls(&alice, port, "GET", "/system/df", None);
    let now = unix_now();
    let (_, events) = curl_tls(
        &alice,
        port,
        "GET",
        &format!("/events?since=0&until={now}"),
        None,
    );
    for (what, text) in [
        ("ps", &list),
        ("images", &imgs),
        ("volumes", &vols),
        ("df", &df),
        ("events", &events),
    ] {
        for secret in [&ctr[..12], &image[7..19], "bobvol", "bobctr"] {
            assert!(
                !text.contains(secret),
                "alice's {what} shows {secret}: {text}"
            );
        }
    }
    // What would reach the host.
    ok(&alice, &["import", tar.to_str().unwrap(), "alice/mine:1"]);
    for flags in [
        vec!["-v", "/etc:/host"],
        vec!["--privileged"],
        vec!["--pid", "host"],
        vec!["--ulimit", "rtprio=99"],
        vec!["--oom-score-adj", "-500"],
    ] {
        let mut args = vec!["create", "--memory", "64m", "--cpus", "0.5"];
        args.extend(flags.iter());
        args.extend(["alice/mine:1", "true"]);
        let f = as_(&alice, &args);
        assert_ne!(f.status, 0, "{flags:?}");
        assert!(
            f.stderr.contains("for the operator only"),
            "{flags:?}: {}",
            f.stderr
        );
    }
    // Quotas: 3 containers, 256m, 2 vCPUs; each limit must be given.
    let f = as_(&alice, &["create", "alice/mine:1", "true"]);
    assert!(f.stderr.contains("memory quota"), "{}", f.stderr);
    ok(
        &alice,
        &[
            "create",
            "--name",
            "a1",
            "--memory",
            "100m",
            "--cpus",
            "1",
            "alice/mine:1",
            "true",
        ],
    );
    ok(
        &alice,
        &[
            "create",
            "--name",
            "a2",
            "--memory",
            "100m",
            "--cpus",
            "0.5",
            "alice/mine:1",
            "true",
        ],
    );
    let f = as_(
        &alice,
        &[
            "create",
            "--memory",
            "100m",
            "--cpus",
            "0.5",
            "alice/mine:1",
            "true",
        ],
    );
    assert!(f.stderr.contains("of its 268435456 bytes"), "{}", f.stderr);
    let f = as_(
        &alice,
        &[
            "create",
            "--memory",
            "10m",
            "--cpus",
            "1",
            "alice/mine:1",
            "true",
        ],
    );
    assert!(f.stderr.contains("vCPUs"), "{}", f.stderr);
    ok(
        &alice,
        &[
            "create",
            "--name",
            "a3",
            "--memory",
            "10m",
            "--cpus",
            "0.5",
            "alice/mine:1",
            "true",
        ],
    );
    let f = as_(
        &alice,
        &[
            "create",
            "--memory",
            "10m",
            "--cpus",
            "0.1",
            "alice/mine:1",
            "true",
        ],
    );
    assert!(f.stderr.contains("quota of 3 containers"), "{}", f.stderr);
    // Her own containers work.
    ok(&alice, &["start", "a1"]);
    assert_eq!(
        ok(&alice, &["ps", "-a", "--format", "{{.Names}}"])
            .lines()
            .count(),
        3
    );
    // The same content as bob's image is shared; a different one cannot take bob's tag.
    let other = b.dir.path().join("other");
    busybox_rootfs(&other).unwrap();
    std::fs::write(other.join("alice"), "x").unwrap();
    let other_tar = b.dir.path().join("other.tar");
    tar_dir(&other, &other_tar);
    for name in ["bob/bb:1", "busybox:latest"] {
        let f = as_(&alice, &["import", other_tar.to_str().unwrap(), name]);
        assert_ne!(f.status, 0, "{name}");
        assert!(
            f.stderr.contains("may name its images only under"),
            "{}",
            f.stderr
        );
    }
    assert_eq!(ok(&bob, &["inspect", "-f", "{{.Id}}", "bob/bb:1"]), image);
    assert_ne!(
        b.docker(&["inspect", "busybox:latest"]).status,
        0,
        "the name stayed free"
    );
    // Names that would stand for another container's ID.
    let f = as_(
        &alice,
        &[
            "create",
            "--name",
            &ctr[..12],
            "--memory",
            "1m",
            "--cpus",
            "0.1",
            "alice/mine:1",
            "true",
        ],
    );
    assert!(f.stderr.contains("may not look like an ID"), "{}", f.stderr);
    // A certificate naming no tenant.
    let (s, text) = curl_tls(&mallory, port, "GET", "/containers/json", None);
    assert_eq!(s, 403, "{text}");
    // The operator sees both.
    let all = b.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(all.contains("bobctr") && all.contains("a1"), "{all}");
    b.ok(&["rm", "-f", "bobctr", "a1", "a2", "a3"]);
}
