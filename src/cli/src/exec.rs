//! `exec` and `attach`: a command in a running container, or this terminal onto one.

use crate::client::{json, Conn, Fail};
use crate::containers::tty_of;
use crate::stream::{stream, RawTerm};
use berth_api::{docker, ExecBody, ExecStartBody, IdResponse};
use std::time::Duration;

// The flags and arguments of `exec` (a plain comment: clap would take a doc comment
// for the command's help).
#[derive(clap::Args)]
pub(crate) struct ExecOpts {
    #[arg(short = 'i', long)]
    interactive: bool,
    #[arg(short = 't', long)]
    tty: bool,
    #[arg(short = 'd', long)]
    detach: bool,
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// `exec`: runs the command, streams it unless detached, and returns its exit code.
pub(crate) async fn exec(c: &Conn, o: ExecOpts) -> Result<u8, Fail> {
    let ExecOpts {
        interactive,
        tty,
        detach,
        env,
        workdir,
        user,
        container,
        command,
    } = o;
    let body = ExecBody {
        cmd: Some(command),
        tty: Some(tty),
        attach_stdin: Some(interactive),
        attach_stdout: Some(!detach),
        attach_stderr: Some(!detach),
        env: Some(env),
        working_dir: workdir,
        user,
        ..Default::default()
    };
    let v: IdResponse = c
        .call(
            "POST",
            &format!("/containers/{container}/exec"),
            json(&body),
        )
        .await?;
    let id = v.id;
    let start = ExecStartBody {
        detach: Some(detach),
        tty: Some(tty),
        ..Default::default()
    };
    let r = c
        .send(
            "POST",
            &format!("/exec/{id}/start"),
            json(&start),
            None,
            !detach,
        )
        .await?;
    if detach {
        return Ok(0);
    }
    {
        let _raw = RawTerm::new(tty && interactive);
        stream(r, tty, interactive).await?;
    }
    for _ in 0..100 {
        let v: docker::ExecInspectResponse =
            c.call("GET", &format!("/exec/{id}/json"), None).await?;
        if let (false, Some(code)) = (v.running.unwrap_or(false), v.exit_code) {
            return Ok(code.clamp(0, 255) as u8);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(0)
}

/// `attach`: this terminal onto the container's stdio, until it ends.
pub(crate) async fn attach(c: &Conn, container: String) -> Result<u8, Fail> {
    let (tty, stdin) = tty_of(c, &container).await?;
    let r = c
        .send(
            "POST",
            &format!(
                "/containers/{container}/attach?stream=1&stdout=1&stderr=1&stdin={}",
                u8::from(stdin)
            ),
            None,
            None,
            true,
        )
        .await?;
    let _raw = RawTerm::new(tty && stdin);
    stream(r, tty, stdin).await?;
    Ok(0)
}
