//! `logs`: a container's output, demultiplexed to stdout and stderr unless it has a TTY.

use crate::client::{read_body, Conn, Fail};
use crate::containers::tty_of;
use std::io::Write;

/// `logs`.
pub(crate) async fn logs(
    c: &Conn,
    follow: bool,
    timestamps: bool,
    tail: Option<String>,
    since: Option<String>,
    container: String,
) -> Result<u8, Fail> {
    let tty = tty_of(c, &container).await?.0;
    let mut q = format!(
        "stdout=1&stderr=1&follow={}&timestamps={}",
        u8::from(follow),
        u8::from(timestamps)
    );
    if let Some(t) = tail {
        q.push_str(&format!("&tail={t}"));
    }
    if let Some(s) = since {
        q.push_str(&format!("&since={s}"));
    }
    let r = c
        .send(
            "GET",
            &format!("/containers/{container}/logs?{q}"),
            None,
            None,
            false,
        )
        .await?;
    let mut buf = Vec::new();
    read_body(r, |d| {
        if tty {
            let _ = std::io::stdout().write_all(d);
            return;
        }
        buf.extend_from_slice(d);
        while buf.len() >= 8 {
            let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
            if buf.len() < 8 + len {
                break;
            }
            let frame: Vec<u8> = buf.drain(..8 + len).collect();
            if frame[0] == 2 {
                let _ = std::io::stderr().write_all(&frame[8..]);
            } else {
                let _ = std::io::stdout().write_all(&frame[8..]);
                let _ = std::io::stdout().flush();
            }
        }
    })
    .await?;
    Ok(0)
}
