//! A real registry for tests: Debian's `docker-registry` (distribution 2.8) on a loopback
//! port, with its storage in a temp dir, anonymous or behind basic auth (htpasswd) or
//! bearer tokens from `tests/registry/token-service.py`.

use crate::{repo_root, TempDir};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the registry checks clients.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Anyone may pull and push.
    Anonymous,
    /// HTTP basic auth against one user.
    Basic(String, String),
    /// Bearer tokens from a token service that knows one user.
    Token(String, String),
}

/// A running registry; stopped (and its storage removed) when dropped.
pub struct Registry {
    registry: Child,
    token: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub host: String,
    dir: TempDir,
}

/// A loopback port nobody listens on (bound, then released).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn http_status(addr: &str, path: &str) -> io::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf)?;
    String::from_utf8_lossy(&buf[9..12])
        .parse()
        .map_err(|_| io::Error::other("bad status line"))
}

impl Registry {
    /// Starts a registry and waits until it answers.
    pub fn start(auth: Auth) -> io::Result<Registry> {
        let dir = TempDir::new("registry")?;
        let port = free_port()?;
        let host = format!("127.0.0.1:{port}");
        let mut token = None;
        let auth_yaml = match &auth {
            Auth::Anonymous => String::new(),
            Auth::Basic(u, p) => {
                let out = Command::new("htpasswd").args(["-Bbn", u, p]).output()?;
                if !out.status.success() {
                    return Err(io::Error::other("htpasswd failed"));
                }
                std::fs::write(dir.path().join("htpasswd"), &out.stdout)?;
                format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                )
            }
            Auth::Token(u, p) => {
                // Debian's python3, which has python3-jwt and python3-cryptography.
                let mut child = Command::new("/usr/bin/python3")
                    .arg(repo_root().join("tests/registry/token-service.py"))
                    .arg(dir.path())
                    .args([u, p])
                    .stdout(Stdio::piped())
                    .spawn()?;
                let mut line = Vec::new();
                let mut out = child
                    .stdout
                    .take()
                    .ok_or_else(|| io::Error::other("no stdout"))?;
                let mut b = [0u8; 1];
                while out.read(&mut b)? == 1 && b[0] != b'\n' {
                    line.push(b[0]);
                }
                let tport: u16 = String::from_utf8_lossy(&line)
                    .trim()
                    .parse()
                    .map_err(|_| io::Error::other("the token service printed no port"))?;
                token = Some(child);
                format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{tport}/token\n    service: berth-test\n    issuer: berth-test-issuer\n    rootcertbundle: {}\n",
                    dir.path().join("cert.pem").display()
                )
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{auth_yaml}",
            dir.path().join("storage").display()
        );
        std::fs::write(dir.path().join("config.yml"), config)?;
        let registry = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log"))?)
            .spawn()?;
        let r = Registry {
            registry,
            token,
            host,
            dir,
        };
        let t0 = Instant::now();
        loop {
            match http_status(&r.host, "/v2/") {
                Ok(200) | Ok(401) => return Ok(r),
                _ if t0.elapsed() > Duration::from_secs(20) => {
                    let log = std::fs::read_to_string(r.dir.path().join("registry.log"))
                        .unwrap_or_default();
                    return Err(io::Error::other(format!("registry did not start: {log}")));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The file holding a blob's content in the registry's storage.
    pub fn blob_data(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Freezes the registry (SIGSTOP): connections stay open, nothing moves.
    pub fn pause(&self) {
        // SAFETY: kill(2) with the pid of our own child.
        unsafe { libc::kill(self.registry.id() as i32, libc::SIGSTOP) };
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&self) {
        // SAFETY: kill(2) with the pid of our own child.
        unsafe { libc::kill(self.registry.id() as i32, libc::SIGCONT) };
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.resume();
        for c in std::iter::once(&mut self.registry).chain(self.token.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP proxy in front of a registry that slows its answers to `rate` bytes a second,
/// so that a test can act in the middle of a download. Stops when dropped.
pub struct Throttle {
    /// `127.0.0.1:PORT` to use instead of the registry's host.
    pub host: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Throttle {
    /// Starts the proxy.
    pub fn start(target: &str, rate: u64) -> io::Result<Throttle> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let l = TcpListener::bind("127.0.0.1:0")?;
        let host = format!("127.0.0.1:{}", l.local_addr()?.port());
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (st, target) = (stop.clone(), target.to_owned());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((client, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(upstream) = TcpStream::connect(&target) else {
                    continue;
                };
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = io::copy(&mut c2, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Write);
                });
                let (mut up, mut down, st2) = (upstream, client, st.clone());
                std::thread::spawn(move || {
                    let chunk = (rate / 100).max(1) as usize;
                    let mut buf = vec![0u8; chunk];
                    while !st2.load(Ordering::Relaxed) {
                        match up.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if down.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let _ = down.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Ok(Throttle { host, stop })
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
