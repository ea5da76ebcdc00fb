//! A blocking client for the agent protocol, over a Unix socket (process isolation) or a
//! microVM's hybrid vsock socket.

use crate::{
    read_frame, write_frame, Channel, FrameError, Hello, HelloOk, Request, Response, VERSION,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be made.
    #[error("connecting to the agent at {path}: {err}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        err: std::io::Error,
    },
    /// The microVM refused the vsock connection (nothing listening on the port yet).
    #[error("the microVM refused a connection to vsock port {0}")]
    VsockRefused(u32),
    /// Framing or transport.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The agent speaks another protocol version.
    #[error("agent protocol version {agent} does not match ours ({VERSION})")]
    Version {
        /// The agent's version.
        agent: u32,
    },
}

/// Where the agent listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A Unix socket served by the agent itself.
    Unix(PathBuf),
    /// A microVM's hybrid vsock socket and the agent's port.
    Vsock(PathBuf, u32),
}

impl Endpoint {
    /// Opens a raw connection.
    pub fn connect(&self) -> Result<UnixStream, ClientError> {
        let (path, port) = match self {
            Endpoint::Unix(p) => (p, None),
            Endpoint::Vsock(p, port) => (p, Some(*port)),
        };
        let err = |err| ClientError::Connect {
            path: path.display().to_string(),
            err,
        };
        let mut s = UnixStream::connect(path).map_err(err)?;
        if let Some(port) = port {
            // A guest that is still booting may hold the answer back: don't wait forever.
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(err)?;
            s.write_all(format!("CONNECT {port}\n").as_bytes())
                .map_err(err)?;
            // Read "OK <port>\n" a byte at a time: what follows belongs to the protocol.
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            loop {
                match s.read(&mut b) {
                    Ok(0) => return Err(ClientError::VsockRefused(port)),
                    Ok(_) if b[0] == b'\n' => break,
                    Ok(_) if line.len() < 64 => line.push(b[0]),
                    Ok(_) => return Err(ClientError::VsockRefused(port)),
                    Err(e) => return Err(err(e)),
                }
            }
            if !line.starts_with(b"OK ") {
                return Err(ClientError::VsockRefused(port));
            }
            s.set_read_timeout(None).map_err(err)?;
        }
        Ok(s)
    }

    /// Opens a connection for `channel` and completes the hello.
    pub fn open(&self, channel: Channel) -> Result<UnixStream, ClientError> {
        let mut s = self.connect()?;
        // An agent that accepted but does not answer (still starting, or gone) must not
        // block the caller forever.
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(FrameError::Io)?;
        write_frame(
            &mut s,
            &Hello {
                version: VERSION,
                channel,
            },
        )?;
        let ok: HelloOk = read_frame(&mut s)?;
        s.set_read_timeout(None).map_err(FrameError::Io)?;
        if ok.version != VERSION {
            return Err(ClientError::Version { agent: ok.version });
        }
        Ok(s)
    }

    /// Waits until the agent answers (a booting microVM), up to `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Client, ClientError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match Client::connect(self) {
                Ok(c) => return Ok(c),
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// A control connection.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Opens a control connection.
    pub fn connect(ep: &Endpoint) -> Result<Client, ClientError> {
        Ok(Client {
            stream: ep.open(Channel::Control)?,
        })
    }

    /// Sends a request and waits for its response.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        write_frame(&mut self.stream, req)?;
        Ok(read_frame(&mut self.stream)?)
    }
}

/// Reads a stream connection to its end.
pub fn read_all(s: UnixStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    BufReader::new(s).read_to_end(&mut out)?;
    Ok(out)
}

/// Reads lines from a stream connection.
pub fn lines(s: UnixStream) -> impl Iterator<Item = String> {
    BufReader::new(s).lines().map_while(Result::ok)
}

/// The path of a Unix socket endpoint, for messages.
pub fn shown(ep: &Endpoint) -> String {
    match ep {
        Endpoint::Unix(p) => p.display().to_string(),
        Endpoint::Vsock(p, port) => format!("{} (vsock port {port})", Path::new(p).display()),
    }
}
