//! Terminal plumbing shared by run, start -a, exec and attach: raw mode, the window size,
//! and the pump between this terminal and an upgraded attach/exec connection.

use crate::client::{daemon_err, error_of, Fail, Resp};
use hyper_util::rt::TokioIo;
use std::io::{IsTerminal, Write};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Puts the terminal in raw mode while it lives.
pub(crate) struct RawTerm(Option<libc::termios>);

impl RawTerm {
    pub(crate) fn new(on: bool) -> RawTerm {
        RawTerm::set(on, |t| {
            // SAFETY: cfmakeraw edits the struct in place.
            unsafe { libc::cfmakeraw(t) }
        })
    }

    /// The terminal without echo (a password prompt) while it lives.
    pub(crate) fn no_echo() -> RawTerm {
        RawTerm::set(true, |t| t.c_lflag &= !libc::ECHO)
    }

    fn set(on: bool, change: impl FnOnce(&mut libc::termios)) -> RawTerm {
        if !on || !std::io::stdin().is_terminal() {
            return RawTerm(None);
        }
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is a terminal (checked above); `t` is a valid out pointer.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return RawTerm(None);
        }
        let old = t;
        change(&mut t);
        // SAFETY: applies a valid termios to fd 0.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        RawTerm(Some(old))
    }
}

impl Drop for RawTerm {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the saved termios on fd 0.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

/// The terminal's (rows, columns), when stdout is one.
pub(crate) fn term_size() -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it for fd 1.
    let mut w: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer for the ioctl.
    (unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut w) } == 0 && w.ws_row > 0)
        .then_some((w.ws_row, w.ws_col))
}

/// Streams an upgraded attach/exec connection to this terminal: stdin up (then a
/// half-close), stdout/stderr down (demultiplexed unless a TTY).
pub(crate) async fn stream(r: Resp, tty: bool, stdin: bool) -> Result<(), Fail> {
    if r.status().as_u16() != 101 {
        return Err(error_of(r).await);
    }
    let up = hyper::upgrade::on(r)
        .await
        .map_err(|e| daemon_err(e.to_string()))?;
    let (mut rd, mut wr) = tokio::io::split(TokioIo::new(up));
    let input = tokio::spawn(async move {
        if stdin {
            let mut i = tokio::io::stdin();
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = i.read(&mut buf).await {
                if n == 0 || wr.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    if tty {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
    } else {
        let mut hdr = [0u8; 8];
        while rd.read_exact(&mut hdr).await.is_ok() {
            let len = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
            let mut data = vec![0u8; len];
            if rd.read_exact(&mut data).await.is_err() {
                break;
            }
            let w: &mut dyn Write = if hdr[0] == 2 { &mut err } else { &mut out };
            let _ = w.write_all(&data);
            let _ = w.flush();
        }
    }
    input.abort();
    Ok(())
}
