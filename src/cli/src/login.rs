//! `login` and `logout`, as the docker CLI does them: berthd checks the credentials with
//! the registry (`POST /auth`), and the client keeps them in Docker's own file
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, key `auths`), so that the
//! docker CLI and berth share one login. `pull` and `push` send them to berthd in the
//! `X-Registry-Auth` header.

use crate::client::{json, Conn, Fail};
use base64::Engine;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

/// Docker Hub's key in `auths`, as the docker CLI writes it.
const HUB: &str = "https://index.docker.io/v1/";

// The flags of `login`.
#[derive(clap::Args, Clone, Default)]
pub(crate) struct LoginOpts {
    /// Username.
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short = 'p', long)]
    password: Option<String>,
    /// Take the password from stdin.
    #[arg(long = "password-stdin")]
    password_stdin: bool,
    /// The registry (Docker Hub when none is named).
    server: Option<String>,
}

/// Docker's client configuration file.
fn config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => PathBuf::from(d).join("config.json"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".docker/config.json"),
    }
}

fn read_config() -> Result<serde_json::Map<String, serde_json::Value>, Fail> {
    let p = config_path();
    match std::fs::read(&p) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Default::default()),
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Fail(format!("Error: loading {}: {e}", p.display()), 1)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(Fail(format!("Error: reading {}: {e}", p.display()), 1)),
    }
}

/// Writes the configuration whole (a temporary file renamed over it, mode 0600: it
/// holds passwords), keeping every key berth does not know.
fn write_config(c: &serde_json::Map<String, serde_json::Value>) -> Result<(), Fail> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = config_path();
    let fail = |e: std::io::Error| {
        Fail(
            format!("Error: saving credentials to {}: {e}", p.display()),
            1,
        )
    };
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = p.with_extension("json.tmp");
    // A fresh file, so that the mode below is the one it gets.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    let written = f
        .write_all(&serde_json::to_vec_pretty(c).unwrap_or_default())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &p));
    if written.is_err() {
        // Nothing half-written left behind: the old file stays as it was.
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(fail)
}

/// The key of a registry in `auths`: Docker Hub's URL for Hub, else its host (and port),
/// the registry berthd's login checks (`berth_image::registry::login_host`).
fn server_key(server: Option<&str>) -> String {
    match berth_image::registry::login_host(server.unwrap_or("")) {
        h if h == "docker.io" => HUB.into(),
        h => h,
    }
}

/// A credential helper the docker CLI would use for `key` (`credsStore`, or
/// `credHelpers`' entry): berth keeps credentials in config.json only.
fn helper_for(config: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    config
        .get("credHelpers")
        .and_then(|h| h.get(key))
        .and_then(|v| v.as_str())
        .map(|h| format!("credHelpers[{key:?}] = {h:?}"))
        .or_else(|| {
            config
                .get("credsStore")
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(|h| format!("credsStore = {h:?}"))
        })
}

/// The stored credentials for the registry of an image reference, as berthd's
/// `X-Registry-Auth` header (base64url of `{"username","password","serveraddress"}`).
pub(crate) fn registry_auth(image: &str) -> Option<String> {
    let host = image
        .parse::<berth_image::Reference>()
        .ok()
        .map(|r| r.registry.clone())
        .unwrap_or_default();
    let key = server_key(Some(&host));
    let config = read_config().ok()?;
    let Some(auth) = config
        .get("auths")
        .and_then(|a| a.get(&key))
        .and_then(|a| a.get("auth"))
        .and_then(|a| a.as_str())
    else {
        if let Some(h) = helper_for(&config, &key) {
            eprintln!(
                "WARNING: {} sets a credential helper ({h}), which berth does not run: no credentials sent for {key}",
                config_path().display()
            );
        }
        return None;
    };
    let plain = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let plain = String::from_utf8(plain).ok()?;
    let (user, pass) = plain.split_once(':')?;
    let doc = serde_json::json!({ "username": user, "password": pass, "serveraddress": key });
    Some(base64::engine::general_purpose::URL_SAFE.encode(doc.to_string()))
}

fn prompt(what: &str, hide: bool) -> Result<String, Fail> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Fail(
            format!("Error: cannot perform an interactive login from a non TTY device (give --username and --password-stdin; {what} missing)"),
            1,
        ));
    }
    eprint!("{what}: ");
    let _ = std::io::stderr().flush();
    let echo_off = hide.then(crate::stream::RawTerm::no_echo);
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    drop(echo_off);
    if hide {
        eprintln!();
    }
    r.map_err(|e| Fail(format!("Error: reading the {what}: {e}"), 1))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// `login`: checks the credentials through berthd, then stores them.
pub(crate) async fn login(c: &Conn, o: LoginOpts) -> Result<u8, Fail> {
    if o.password.is_some() && o.password_stdin {
        return Err(Fail(
            "--password and --password-stdin are mutually exclusive".into(),
            1,
        ));
    }
    if o.password_stdin && o.username.is_none() {
        return Err(Fail(
            "Must provide --username with --password-stdin".into(),
            1,
        ));
    }
    let key = server_key(o.server.as_deref());
    let mut config = read_config()?;
    if let Some(h) = helper_for(&config, &key) {
        return Err(Fail(
            format!(
                "Error: {} sets a credential helper ({h}); berth keeps credentials in config.json only and does not run helpers",
                config_path().display()
            ),
            1,
        ));
    }
    let username = match o.username {
        Some(u) => u,
        None => prompt("Username", false)?,
    };
    let password = if o.password_stdin {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Fail(format!("Error: reading the password from stdin: {e}"), 1))?;
        s.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        match o.password {
            Some(p) => {
                eprintln!(
                    "WARNING! Using --password via the CLI is insecure. Use --password-stdin."
                );
                p
            }
            None => prompt("Password", true)?,
        }
    };
    if username.is_empty() || password.is_empty() {
        return Err(Fail("Error: Username and password are required".into(), 1));
    }
    let body = serde_json::json!({
        "username": username,
        "password": password,
        "serveraddress": o.server.clone().unwrap_or_else(|| key.clone()),
    });
    // A refused login exits 1, as docker login does.
    let _: serde_json::Value = c
        .call("POST", "/auth", json(&body))
        .await
        .map_err(|e| Fail(e.0, 1))?;
    let auths = config
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    auths[&key] = serde_json::json!({ "auth": token });
    write_config(&config)?;
    println!("Login Succeeded");
    Ok(0)
}

/// `logout`: forgets the stored credentials.
pub(crate) fn logout(server: Option<String>) -> Result<u8, Fail> {
    let key = server_key(server.as_deref());
    let mut config = read_config()?;
    let removed = config
        .get_mut("auths")
        .and_then(|a| a.as_object_mut())
        .and_then(|a| a.remove(&key))
        .is_some();
    if removed {
        write_config(&config)?;
        println!("Removing login credentials for {key}");
    } else {
        println!("Not logged in to {key}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::server_key;

    #[test]
    fn registries_are_keyed_as_dockers() {
        assert_eq!(server_key(None), super::HUB);
        assert_eq!(server_key(Some("docker.io")), super::HUB);
        assert_eq!(server_key(Some("https://index.docker.io/v1/")), super::HUB);
        assert_eq!(server_key(Some("localhost:5000")), "localhost:5000");
        assert_eq!(server_key(Some("http://localhost:5000/")), "localhost:5000");
        assert_eq!(server_key(Some("https://reg:5000/v2/")), "reg:5000");
    }
}
