//! `exec` and `attach`: a command in a running container, or this terminal onto one.

use crate::client::{Conn, Fail};
use crate::stream::{stream, RawTerm};
use serde_json::json;
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
    let mut body = json!({"Cmd": command, "Tty": tty, "AttachStdin": interactive, "AttachStdout": !detach, "AttachStderr": !detach, "Env": env});
    if let Some(w) = workdir {
        body["WorkingDir"] = json!(w);
    }
    if let Some(u) = user {
        body["User"] = json!(u);
    }
    let v = c
        .call("POST", &format!("/containers/{container}/exec"), Some(body))
        .await?;
    let id = v["Id"].as_str().unwrap_or_default().to_owned();
    let r = c
        .send(
            "POST",
            &format!("/exec/{id}/start"),
            Some(json!({"Detach": detach, "Tty": tty})),
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
        let v = c.call("GET", &format!("/exec/{id}/json"), None).await?;
        if !v["Running"].as_bool().unwrap_or(false) && !v["ExitCode"].is_null() {
            return Ok(v["ExitCode"].as_i64().unwrap_or(0).clamp(0, 255) as u8);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(0)
}

/// `attach`: this terminal onto the container's stdio, until it ends.
pub(crate) async fn attach(c: &Conn, container: String) -> Result<u8, Fail> {
    let info = c
        .call("GET", &format!("/containers/{container}/json"), None)
        .await?;
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let stdin = info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
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
