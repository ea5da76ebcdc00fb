//! Container networking end to end, with process isolation: berthd runs inside a network
//! namespace this test creates ("host"), joined by a veth to a second one ("outside").
//! No packet leaves the two namespaces: every address used is theirs or a container's.

use berth_e2e::{built_binary, busybox_rootfs, guest_kernel, repo_root, Finished, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOST_IP: &str = "10.250.0.1";
const OUT_IP: &str = "10.250.0.2";

/// The two namespaces; removed (with everything in them) on drop.
struct Netns {
    host: String,
    out: String,
}

fn sh(cmd: &str) -> Finished {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap()
        .into()
}

fn must(cmd: &str) -> String {
    let f = sh(cmd);
    assert_eq!(f.status, 0, "{cmd}: {}{}", f.stdout, f.stderr);
    f.stdout
}

impl Netns {
    fn new() -> Netns {
        // Unique among this process's tests, which run side by side.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("{}{seq}", std::process::id());
        let n = Netns {
            host: format!("bnh{id}"),
            out: format!("bno{id}"),
        };
        let (h, o) = (&n.host, &n.out);
        must(&format!(
            "ip netns add {h} && ip netns add {o} && ip link add vh{id} type veth peer name vo{id} && \
             ip link set vh{id} netns {h} && ip link set vo{id} netns {o} && \
             ip -n {h} addr add {HOST_IP}/24 dev vh{id} && ip -n {h} link set vh{id} up && ip -n {h} link set lo up && \
             ip -n {o} addr add {OUT_IP}/24 dev vo{id} && ip -n {o} link set vo{id} up && ip -n {o} link set lo up"
        ));
        n
    }

    /// A command in the host namespace (network only: /sys and the cgroups stay).
    fn in_host(&self, cmd: &str) -> Finished {
        sh(&format!(
            "nsenter --net=/run/netns/{} sh -c '{cmd}'",
            self.host
        ))
    }

    fn in_out(&self, cmd: &str) -> Finished {
        sh(&format!("ip netns exec {} sh -c '{cmd}'", self.out))
    }
}

impl Netns {
    /// No link of berth's (`prefix`: a veth's or a tap's), no bridge and no nft table in
    /// the host namespace (the default bridge goes a few seconds after its last use).
    fn assert_clean(&self, prefix: &str) {
        let t0 = Instant::now();
        loop {
            let links = must(&format!("ip -n {} -o link", self.host));
            let tables = must(&format!("ip netns exec {} nft list tables", self.host));
            let clean = !links.contains(prefix)
                && !links.contains("berth0")
                && !links.contains(" br-")
                && !tables.contains("berth");
            if clean {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "left behind:\n{links}\n{tables}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "ip netns del {}; ip netns del {}",
            self.host, self.out
        ));
    }
}

struct Berthd {
    child: Option<Child>,
    dir: TempDir,
    exec_root: PathBuf,
    sock: PathBuf,
    ns: String,
    args: Vec<String>,
}

impl Berthd {
    /// berthd with process isolation.
    fn start(ns: &Netns) -> Berthd {
        Berthd::start_with(ns, &["--exec-opt", "isolation=process"])
    }

    fn start_with(ns: &Netns, args: &[&str]) -> Berthd {
        let dir = TempDir::new("berthd-net").unwrap();
        let exec_root = PathBuf::from(format!("/tmp/berth-net-{}", ns.host));
        let mut b = Berthd {
            child: None,
            sock: exec_root.join("berthd.sock"),
            dir,
            exec_root,
            ns: ns.host.clone(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("berthd.log"))
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg(built_binary("berthd"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .arg("--data-root")
            .arg(self.dir.path().join("data"))
            .arg("--exec-root")
            .arg(&self.exec_root)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        while self.docker(&["version"]).status != 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "berthd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
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

    fn docker(&self, args: &[&str]) -> Finished {
        let docker = if Path::new("/usr/local/bin/docker").is_file() {
            "/usr/local/bin/docker"
        } else {
            "docker"
        };
        Command::new("timeout")
            .args(["-s", "KILL", "120", docker])
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .args(args)
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
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if let Ok(ids) = std::str::from_utf8(&self.docker(&["ps", "-aq"]).stdout.into_bytes()) {
            for id in ids.split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.kill9();
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.exec_root.to_string_lossy().as_ref())
            .status();
        let _ = std::fs::remove_dir_all(&self.exec_root);
    }
}

/// Imports "web:1": busybox with a page in /www, EXPOSE 80. Returns the root's path.
fn web_image(b: &Berthd) -> PathBuf {
    let root = b.dir.path().join("root");
    busybox_rootfs(&root).unwrap();
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::write(root.join("www/index.html"), format!("{PAGE}\n")).unwrap();
    let tar = b.dir.path().join("bb.tar");
    must(&format!(
        "tar -C {} -cf {} .",
        root.display(),
        tar.display()
    ));
    b.ok(&["import", "-c", "EXPOSE 80", tar.to_str().unwrap(), "web:1"]);
    root
}

/// busybox's wget (without -T, which crashes Debian's static busybox 1.35), bounded. The
/// trailing `exit` keeps sh as the container's PID 1, so that wget is not: PID 1 ignores
/// timeout's SIGTERM.
fn wget(url: &str) -> String {
    format!("timeout 5 wget -qO- {url}; exit $?")
}

/// `wget` until the server answers, for at most a minute: `run -d` returns once the
/// workload is started, not once it listens (as with Docker), and a microVM in the
/// emulated lab can take seconds between the two.
fn wget_when_up(url: &str) -> String {
    format!("for i in $(seq 12); do timeout 5 wget -qO- {url} && exit 0; sleep 1; done; exit 1")
}

const PAGE: &str = "hello from berth";

#[test]
fn published_ports_user_networks_dns_isolation_and_cleanup_for_process_containers() {
    let ns = Netns::new();
    let mut b = Berthd::start(&ns);
    let root = web_image(&b);
    let httpd = ["httpd", "-f", "-p", "80", "-h", "/www"];
    let run_d = |extra: &[&str]| {
        let mut a = vec!["run", "-d"];
        a.extend_from_slice(extra);
        a.push("web:1");
        a.extend_from_slice(&httpd);
        b.ok(&a).trim().to_owned()
    };

    // -p 8080:80: from outside (DNAT) and from the host itself (the proxy).
    run_d(&["--name", "web", "-p", "8080:80"]);
    let got = ns.in_out(&wget(&format!("http://{HOST_IP}:8080/index.html")));
    assert_eq!(got.stdout.trim(), PAGE, "from outside: {}", got.stderr);
    let got = ns.in_host(&wget("http://127.0.0.1:8080/index.html"));
    assert_eq!(got.stdout.trim(), PAGE, "from the host: {}", got.stderr);
    let ps = b.ok(&["ps", "--format", "{{.Names}} {{.Ports}}"]);
    assert!(ps.contains("web 0.0.0.0:8080->80/tcp"), "{ps}");
    // The same host port again: 125, "address already in use".
    let f = b.docker(&[
        "run", "-d", "--name", "web2", "-p", "8080:80", "web:1", "true",
    ]);
    assert_eq!(f.status, 125, "{}", f.stderr);
    assert!(f.stderr.contains("address already in use"), "{}", f.stderr);
    // -p 127.0.0.1::80: an ephemeral port on loopback only, shown by `docker port`.
    run_d(&["--name", "local", "-p", "127.0.0.1::80"]);
    let port = b.ok(&["port", "local", "80"]);
    assert!(port.trim().starts_with("127.0.0.1:"), "{port}");
    let got = ns.in_host(&wget(&format!("http://{}/index.html", port.trim())));
    assert_eq!(got.stdout.trim(), PAGE);
    // -P: the image's EXPOSEd port, published on an ephemeral port.
    run_d(&["--name", "all", "-P"]);
    let p = b.ok(&[
        "inspect",
        "-f",
        "{{(index (index .NetworkSettings.Ports \"80/tcp\") 0).HostPort}}",
        "all",
    ]);
    let got = ns.in_out(&wget(&format!("http://{HOST_IP}:{}/index.html", p.trim())));
    assert_eq!(got.stdout.trim(), PAGE);

    // A user network: names and aliases resolve, data flows; /etc files as Docker's.
    b.ok(&["network", "create", "--label", "t=1", "front"]);
    b.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.251.0.0/24",
        "back",
    ]);
    run_d(&[
        "--name",
        "svc",
        "--network",
        "front",
        "--network-alias",
        "alpha",
    ]);
    let out = b.ok(&[
        "run", "--rm", "--network", "front", "--hostname", "probe", "--add-host", "db.local:10.9.9.9",
        "--dns-search", "example.test", "web:1", "sh", "-c",
        "wget -qO- http://svc/index.html && wget -qO- http://alpha/index.html && wget -qO- http://svc.front/index.html && cat /etc/hosts /etc/resolv.conf /etc/hostname",
    ]);
    assert_eq!(out.matches(PAGE).count(), 3, "{out}");
    let gw = b.ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        "front",
    ]);
    assert!(out.contains(&format!("nameserver {}", gw.trim())), "{out}");
    assert!(
        out.contains("search example.test") && out.contains("10.9.9.9\tdb.local"),
        "{out}"
    );
    assert!(
        out.contains("\tprobe\n") && out.lines().last() == Some("probe"),
        "{out}"
    );
    // Another network cannot reach it.
    let svc_ip = b.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.front.IPAddress}}",
        "svc",
    ]);
    let f = b.docker(&[
        "run",
        "--rm",
        "web:1",
        "sh",
        "-c",
        &wget(&format!("http://{}/index.html", svc_ip.trim())),
    ]);
    assert_ne!(
        f.status, 0,
        "the default bridge reached a container on front: {}",
        f.stdout
    );
    // Outside: the default bridge reaches it through NAT, an internal network does not.
    let mut server = Command::new("ip")
        .args([
            "netns", "exec", &ns.out, "busybox", "httpd", "-f", "-p", "9999", "-h",
        ])
        .arg(root.join("www"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let outside = format!("http://{OUT_IP}:9999/index.html");
    let out = b.ok(&["run", "--rm", "web:1", "sh", "-c", &wget(&outside)]);
    assert_eq!(out.trim(), PAGE);
    let f = b.docker(&[
        "run",
        "--rm",
        "--network",
        "back",
        "web:1",
        "sh",
        "-c",
        &wget(&outside),
    ]);
    assert_ne!(
        f.status, 0,
        "an internal network reached outside: {}",
        f.stdout
    );
    let _ = server.kill();
    let _ = server.wait();
    // A static address, and connect/disconnect.
    let ip = b.ok(&[
        "run",
        "--rm",
        "--network",
        "back",
        "--ip",
        "10.251.0.77",
        "web:1",
        "sh",
        "-c",
        "ip -4 addr show eth0",
    ]);
    assert!(ip.contains("10.251.0.77/24"), "{ip}");
    b.ok(&["network", "connect", "back", "svc"]);
    let ifs = b.ok(&["exec", "svc", "ip", "-4", "addr"]);
    assert!(ifs.contains("10.251.0."), "{ifs}");
    b.ok(&["network", "disconnect", "back", "svc"]);
    assert!(!b
        .ok(&["exec", "svc", "ip", "-4", "addr"])
        .contains("10.251.0."));
    // The berth CLI: network ls/inspect/create/rm, port.
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
    let ls = berth(&["network", "ls"]);
    assert!(
        ls.stdout.starts_with("NETWORK ID")
            && ls.stdout.contains(" front ")
            && ls.stdout.contains(" none "),
        "{}{}",
        ls.stdout,
        ls.stderr
    );
    let f = berth(&[
        "network",
        "create",
        "--subnet",
        "10.252.0.0/24",
        "--gateway",
        "10.252.0.9",
        "side",
    ]);
    assert_eq!(f.status, 0, "{}", f.stderr);
    let f = berth(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}} {{.Driver}}",
        "side",
    ]);
    assert_eq!(f.stdout.trim(), "10.252.0.9 bridge", "{}", f.stderr);
    let f = berth(&["network", "create", "--subnet", "10.252.0.0/25", "overlap"]);
    assert_ne!(f.status, 0);
    assert!(f.stderr.contains("overlaps"), "{}", f.stderr);
    assert_eq!(berth(&["network", "rm", "side"]).stdout.trim(), "side");
    let f = berth(&["port", "web"]);
    assert_eq!(f.stdout.trim(), "80/tcp -> 0.0.0.0:8080", "{}", f.stderr);
    // A network in use can't go; a predefined one never.
    assert_ne!(b.docker(&["network", "rm", "front"]).status, 0);
    let f = b.docker(&["network", "rm", "bridge"]);
    assert!(f.stderr.contains("pre-defined"), "{}", f.stderr);
    let ls = b.ok(&[
        "network",
        "ls",
        "--filter",
        "label=t=1",
        "--format",
        "{{.Name}}",
    ]);
    assert_eq!(ls.trim(), "front");
    // berthd killed -9 and restarted with 5 containers on 2 networks and the default
    // bridge: addresses, ports and names still work.
    run_d(&[
        "--name",
        "db",
        "--network",
        "back",
        "--network-alias",
        "store",
    ]);
    let names = b.ok(&["ps", "--format", "{{.Names}}"]);
    assert!(names.lines().count() >= 5, "{names}");
    let before = b.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.front.IPAddress}}",
        "svc",
    ]);
    b.kill9();
    b.spawn();
    assert_eq!(
        b.ok(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.front.IPAddress}}",
            "svc"
        ]),
        before
    );
    let got = ns.in_out(&wget(&format!("http://{HOST_IP}:8080/index.html")));
    assert_eq!(got.stdout.trim(), PAGE, "after the restart: {}", got.stderr);
    let got = ns.in_host(&wget("http://127.0.0.1:8080/index.html"));
    assert_eq!(got.stdout.trim(), PAGE);
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "front",
        "web:1",
        "sh",
        "-c",
        "wget -qO- http://alpha/index.html",
    ]);
    assert_eq!(out.trim(), PAGE);
    let out = b.ok(&[
        "run",
        "--rm",
        "--network",
        "back",
        "web:1",
        "sh",
        "-c",
        "wget -qO- http://store/index.html",
    ]);
    assert_eq!(out.trim(), PAGE);

    // rm -f everything and remove the networks: nothing is left.
    for id in b.ok(&["ps", "-aq"]).split_whitespace() {
        b.ok(&["rm", "-f", id]);
    }
    b.ok(&["network", "rm", "front", "back"]);
    ns.assert_clean(" vb");
    let f = ns.in_host(&wget("http://127.0.0.1:8080/"));
    assert_ne!(f.status, 0, "port 8080 is still served");
    for e in std::fs::read_dir(b.dir.path().join("data/network"))
        .unwrap()
        .flatten()
    {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        assert_eq!(v["leases"], serde_json::json!({}), "{}", e.path().display());
    }
}

/// The same scenario with microVM containers, in the lab (a KVM host): each microVM gets a
/// tap on its network's bridge and the guest agent configures virtio-net.
#[test]
fn published_ports_and_names_for_microvm_containers_in_the_lab() {
    if !berth_e2e::in_lab_or_rerun(
        "published_ports_and_names_for_microvm_containers_in_the_lab",
        Duration::from_secs(1500),
    ) {
        return;
    }
    let (kernel, _) = guest_kernel().unwrap();
    // The agent's erofs image: microVMs start from a snapshot, their interfaces and
    // image disks added in its empty slots (docs/snapshots.md).
    let initrd = repo_root().join("target/berth/agent.erofs");
    assert!(initrd.is_file(), "run scripts/build-agent first");
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("[{:6.1}s] {what}", t0.elapsed().as_secs_f64());
    let ns = Netns::new();
    let b = Berthd::start_with(
        &ns,
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--agent-initrd",
            initrd.to_str().unwrap(),
        ],
    );
    let root = web_image(&b);
    step("berthd up");
    b.ok(&["network", "create", "front"]);
    // A microVM serving a published port on a user network, with an alias.
    let web = b.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "front",
        "--network-alias",
        "alpha",
        "-p",
        "8080:80",
        "web:1",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    step("web started");
    let vm_json = b.exec_root.join(format!("c/{}/vm.json", &web.trim()[..12]));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&vm_json).unwrap()).unwrap();
    assert!(
        config["restore_from"].is_string() && !config["net"].as_array().unwrap().is_empty(),
        "the microVM started from a snapshot, its interface added: {config}\n{}",
        b.log()
    );
    let got = ns.in_out(&wget_when_up(&format!("http://{HOST_IP}:8080/index.html")));
    assert_eq!(
        got.stdout.trim(),
        PAGE,
        "from outside: {}{}",
        got.stderr,
        b.log()
    );
    let got = ns.in_host(&wget("http://127.0.0.1:8080/index.html"));
    assert_eq!(got.stdout.trim(), PAGE, "from the host: {}", got.stderr);
    let f = b.docker(&["run", "-d", "-p", "8080:80", "web:1", "true"]);
    assert_eq!(f.status, 125, "{}", f.stderr);
    assert!(f.stderr.contains("address already in use"), "{}", f.stderr);
    // A second microVM resolves it by name and alias, through the embedded DNS.
    let out = b.ok(&[
        "run", "--rm", "--network", "front", "--add-host", "db.local:10.9.9.9", "web:1", "sh",
        "-c",
        "wget -qO- http://web/index.html && wget -qO- http://alpha/index.html && cat /etc/resolv.conf /etc/hosts && ip -4 addr show eth0",
    ]);
    step("names resolved");
    assert_eq!(out.matches(PAGE).count(), 2, "{out}");
    let gw = b.ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        "front",
    ]);
    assert!(out.contains(&format!("nameserver {}", gw.trim())), "{out}");
    assert!(out.contains("10.9.9.9\tdb.local"), "{out}");
    let ip = b.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.front.IPAddress}}",
        web.trim(),
    ]);
    assert!(b
        .ok(&["exec", "web", "ip", "-4", "addr", "show", "eth0"])
        .contains(&format!("{}/", ip.trim())));
    // The default bridge reaches outside through NAT.
    let mut server = Command::new("ip")
        .args([
            "netns", "exec", &ns.out, "busybox", "httpd", "-f", "-p", "9999", "-h",
        ])
        .arg(root.join("www"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = b.ok(&[
        "run",
        "--rm",
        "web:1",
        "sh",
        "-c",
        &wget(&format!("http://{OUT_IP}:9999/index.html")),
    ]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(out.trim(), PAGE);
    step("outside reached");
    // Hot-plug is refused with the reason; a running microVM keeps its network.
    let f = b.docker(&["network", "connect", "bridge", "web"]);
    assert_ne!(f.status, 0);
    assert!(f.stderr.contains("hot-plug"), "{}", f.stderr);
    // Cleanup: no tap, bridge or rule is left.
    b.ok(&["rm", "-f", "web"]);
    b.ok(&["network", "rm", "front"]);
    ns.assert_clean(" tb");
    step("cleaned up");
}

/// docker-compose 1.29 (Debian's) against berthd: a two-service project whose second
/// service fetches a page from the first by its service name and leaves it in a named
/// volume both mount; ps, logs, down -v.
#[test]
fn docker_compose_up_ps_logs_down_of_a_two_service_project() {
    if Command::new("docker-compose")
        .arg("version")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        panic!("docker-compose is missing: scripts/test installs Debian's docker-compose");
    }
    let ns = Netns::new();
    let b = Berthd::start(&ns);
    web_image(&b);
    let proj = b.dir.path().join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(
        proj.join("docker-compose.yml"),
        r#"version: "2.4"
services:
  web:
    image: web:1
    command: httpd -f -p 80 -h /www
    volumes: ["shared:/shared"]
  probe:
    image: web:1
    depends_on: [web]
    volumes: ["shared:/shared"]
    command: sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web/index.html | tee /shared/page && exit 0; sleep 1; done; exit 1'
volumes:
  shared:
"#,
    )
    .unwrap();
    let compose = |args: &[&str]| -> Finished {
        Command::new("timeout")
            .args(["-s", "KILL", "180", "docker-compose", "-p", "proj"])
            .args(args)
            .current_dir(&proj)
            .env("DOCKER_HOST", format!("unix://{}", b.sock.display()))
            .env("DOCKER_CONFIG", b.dir.path().join("docker-config"))
            .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    };
    let f = compose(&["up", "-d"]);
    assert_eq!(f.status, 0, "up: {}{}\n{}", f.stdout, f.stderr, b.log());
    assert_eq!(b.ok(&["wait", "proj_probe_1"]).trim(), "0");
    let f = compose(&["logs", "--no-color", "probe"]);
    assert!(f.stdout.contains(PAGE), "logs: {}{}", f.stdout, f.stderr);
    let f = compose(&["ps"]);
    assert!(
        f.stdout.contains("proj_web_1") && f.stdout.contains("Up"),
        "ps: {}{}",
        f.stdout,
        f.stderr
    );
    assert!(f.stdout.contains("proj_probe_1"), "ps: {}", f.stdout);
    assert!(b.ok(&["network", "ls"]).contains("proj_default"));
    // The named volume: what one service wrote, the other reads.
    assert_eq!(
        b.ok(&["exec", "proj_web_1", "cat", "/shared/page"]).trim(),
        PAGE
    );
    assert!(b.ok(&["volume", "ls", "-q"]).contains("proj_shared"));
    let f = compose(&["down", "-v"]);
    assert_eq!(f.status, 0, "down: {}{}", f.stdout, f.stderr);
    assert_eq!(b.ok(&["ps", "-aq"]), "");
    assert!(!b.ok(&["network", "ls"]).contains("proj_default"));
    assert_eq!(
        b.ok(&["volume", "ls", "-q"]),
        "",
        "down -v removes the volume"
    );
}
