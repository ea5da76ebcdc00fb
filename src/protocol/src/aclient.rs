//! An async client for the agent protocol (tokio), for hosts that watch many containers
//! at once without a thread each. Same framing and handshake as [`crate::client`].

use crate::client::{ClientError, Endpoint};
use crate::{
    encode_frame, frame_len, Channel, FrameError, Hello, HelloOk, Request, Response, VERSION,
};
use serde::{de::DeserializeOwned, Serialize};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long a handshake may take (a booting guest may hold the answer back).
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Writes one frame.
pub async fn write_frame<T: Serialize>(
    w: &mut (impl AsyncWrite + Unpin),
    msg: &T,
) -> Result<(), FrameError> {
    w.write_all(&encode_frame(msg)?).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame.
pub async fn read_frame<T: DeserializeOwned>(
    r: &mut (impl AsyncRead + Unpin),
) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let mut body = vec![0u8; frame_len(header)?];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

fn timed_out(what: &str) -> FrameError {
    FrameError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("the agent did not answer the {what}"),
    ))
}

/// Opens a raw connection (the hybrid vsock `CONNECT` done).
pub async fn connect(ep: &Endpoint) -> Result<UnixStream, ClientError> {
    let (path, port) = match ep {
        Endpoint::Unix(p) => (p, None),
        Endpoint::Vsock(p, port) => (p, Some(*port)),
    };
    let err = |err| ClientError::Connect {
        path: path.display().to_string(),
        err,
    };
    let mut s = UnixStream::connect(path).await.map_err(err)?;
    if let Some(port) = port {
        s.write_all(format!("CONNECT {port}\n").as_bytes())
            .await
            .map_err(err)?;
        // "OK <port>\n", a byte at a time: what follows belongs to the protocol.
        let line = tokio::time::timeout(HANDSHAKE, async {
            let mut line = Vec::new();
            loop {
                match s.read_u8().await {
                    Ok(b'\n') => return Ok(line),
                    Ok(b) if line.len() < 64 => line.push(b),
                    Ok(_) => return Err(ClientError::VsockRefused(port)),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return Err(ClientError::VsockRefused(port))
                    }
                    Err(e) => return Err(err(e)),
                }
            }
        })
        .await
        .map_err(|_| ClientError::Frame(timed_out("vsock connect")))??;
        if !line.starts_with(b"OK ") {
            return Err(ClientError::VsockRefused(port));
        }
    }
    Ok(s)
}

/// Opens a connection for `channel` and completes the hello.
pub async fn open(ep: &Endpoint, channel: Channel) -> Result<UnixStream, ClientError> {
    let mut s = connect(ep).await?;
    write_frame(
        &mut s,
        &Hello {
            version: VERSION,
            channel,
        },
    )
    .await?;
    let ok: HelloOk = tokio::time::timeout(HANDSHAKE, read_frame(&mut s))
        .await
        .map_err(|_| ClientError::Frame(timed_out("hello")))??;
    if ok.version != VERSION {
        return Err(ClientError::Version { agent: ok.version });
    }
    Ok(s)
}

/// A control connection.
pub struct AsyncClient {
    stream: UnixStream,
}

impl AsyncClient {
    /// Opens a control connection.
    pub async fn connect(ep: &Endpoint) -> Result<AsyncClient, ClientError> {
        Ok(AsyncClient {
            stream: open(ep, Channel::Control).await?,
        })
    }

    /// Sends a request and waits for its response.
    pub async fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        write_frame(&mut self.stream, req).await?;
        Ok(read_frame(&mut self.stream).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talks_to_a_blocking_agent() {
        let dir = std::env::temp_dir().join(format!("berth-aclient-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("a.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let h: Hello = crate::read_frame(&mut c).unwrap();
            assert_eq!(h.channel, Channel::Control);
            crate::write_frame(
                &mut c,
                &HelloOk {
                    version: VERSION,
                    agent: "t".into(),
                },
            )
            .unwrap();
            let r: Request = crate::read_frame(&mut c).unwrap();
            assert!(matches!(r, Request::Wait { .. }));
            crate::write_frame(
                &mut c,
                &Response::Exited {
                    status: 9,
                    oom_killed: false,
                },
            )
            .unwrap();
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(async {
            let mut c = AsyncClient::connect(&Endpoint::Unix(sock.clone()))
                .await
                .unwrap();
            c.call(&Request::Wait {
                id: "x".into(),
                exec_id: None,
            })
            .await
            .unwrap()
        });
        assert_eq!(
            r,
            Response::Exited {
                status: 9,
                oom_killed: false,
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
