//! The remote API over mutual TLS (`-H tcp://ADDR --tlsverify --tlscacert --tlscert
//! --tlskey`, as dockerd spells them): berthd presents its certificate, and a client must
//! present one signed by the CA or the handshake fails. The client certificate's subject
//! (its common name) is recorded with each request (`router::Caller`): it names the
//! caller's tenant when berthd has tenants (docs/tenants.md); otherwise any certificate
//! the CA signed is full access, as with dockerd.
//!
//! OpenSSL (the `openssl` and `tokio-openssl` crates) rather than rustls: it is already in
//! berth's build (the registry client's native-tls), and it reads the certificate's
//! subject without another parser.

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

/// Errors setting up or completing TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file is missing or not usable.
    #[error("{what} {path}: {err}")]
    File {
        /// Which flag.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        err: openssl::error::ErrorStack,
    },
    /// A file could not be read.
    #[error("--tlscacert {path}: {err}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        err: std::io::Error,
    },
    /// The acceptor could not be built.
    #[error("TLS: {0}")]
    Setup(#[from] openssl::error::ErrorStack),
    /// A handshake failed (no certificate, one the CA did not sign, not TLS...).
    #[error("TLS handshake: {0}")]
    Handshake(String),
}

/// What the TLS listener is given.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA whose signature a client certificate must carry (`--tlscacert`).
    pub ca: PathBuf,
    /// berthd's certificate (`--tlscert`).
    pub cert: PathBuf,
    /// Its key (`--tlskey`).
    pub key: PathBuf,
}

/// How long a client has to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the server side: TLS 1.2 or later, a client certificate required and verified
/// against the CA.
pub fn acceptor(f: &TlsFiles) -> Result<SslAcceptor, TlsError> {
    fn file(what: &'static str, p: &Path) -> impl FnOnce(openssl::error::ErrorStack) -> TlsError {
        let path = p.display().to_string();
        move |err| TlsError::File { what, path, err }
    }
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_ca_file(&f.ca).map_err(file("--tlscacert", &f.ca))?;
    b.set_certificate_chain_file(&f.cert)
        .map_err(file("--tlscert", &f.cert))?;
    b.set_private_key_file(&f.key, SslFiletype::PEM)
        .map_err(file("--tlskey", &f.key))?;
    b.check_private_key().map_err(file("--tlskey", &f.key))?;
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    // Needed for session resumption when clients are verified.
    b.set_session_id_context(b"berthd")?;
    // The CA's name in the certificate request: clients pick the right certificate.
    let pem = std::fs::read(&f.ca).map_err(|err| TlsError::Read {
        path: f.ca.display().to_string(),
        err,
    })?;
    let mut names = openssl::stack::Stack::new()?;
    for c in openssl::x509::X509::stack_from_pem(&pem).map_err(file("--tlscacert", &f.ca))? {
        names.push(c.subject_name().to_owned()?)?;
    }
    b.set_client_ca_list(names);
    Ok(b.build())
}

/// Completes the handshake on `tcp` (within [`HANDSHAKE_TIMEOUT`]) and returns the
/// stream and the client certificate's common name.
pub async fn accept(
    acc: &SslAcceptor,
    tcp: tokio::net::TcpStream,
) -> Result<(tokio_openssl::SslStream<tokio::net::TcpStream>, String), TlsError> {
    let ssl = openssl::ssl::Ssl::new(acc.context())?;
    let mut s = tokio_openssl::SslStream::new(ssl, tcp)?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, Pin::new(&mut s).accept()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(TlsError::Handshake(e.to_string())),
        Err(_) => return Err(TlsError::Handshake("timed out".into())),
    }
    let cn = s
        .ssl()
        .peer_certificate()
        .and_then(|c| {
            c.subject_name()
                .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                .next()
                .and_then(|e| e.data().to_string().ok())
        })
        .unwrap_or_default();
    Ok((s, cn))
}
