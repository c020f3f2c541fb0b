//! Certificates for the CLI: loading the server's, making a self-signed one, and how a
//! client trusts the server.
//!
//! `client --ca FILE` (and the original form's `-cert FILE`) trusts the server when its
//! certificate is signed by a certificate of FILE (normal chain verification, host
//! name included), *or* when it is byte for byte a certificate of FILE (pinning). The
//! second rule is what makes the original README's example work: `openssl req -x509
//! -subj /CN=localhost` makes a CA certificate without a subjectAltName, which chain
//! verification rejects as a server certificate, and the Go client got past that only
//! by skipping verification altogether. Pinning keeps the check exact instead.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use h2rev2_tokio::tls::{self, Identity, ServerTrust};
use rustls::RootCertStore;

use crate::error::CliError;

/// Loads `--cert`/`--key`, saying which file is wrong and how.
pub fn load_identity(cert: &Path, key: &Path) -> Result<Identity, CliError> {
    for (what, p) in [("certificate", cert), ("key", key)] {
        if let Err(e) = std::fs::metadata(p) {
            return Err(CliError::config(format!(
                "cannot read the {what} file {}: {e}",
                p.display()
            )));
        }
    }
    let identity =
        Identity::from_pem_files(cert, key).map_err(|e| CliError::config(e.to_string()))?;
    // Catch a certificate/key mismatch now rather than at the first handshake.
    tls::server_config(identity.clone(), None)
        .map_err(|e| CliError::config(format!("{} and {}: {e}", cert.display(), key.display())))?;
    Ok(identity)
}

/// Names for a self-signed certificate: the given ones, or loopback names plus the
/// host of `listen`.
pub fn self_signed_names(given: &[String], listen: &str) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let host = match listen.parse::<SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => listen
            .rsplit_once(':')
            .map_or(listen, |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_string(),
    };
    let unspecified = matches!(host.as_str(), "0.0.0.0" | "::" | "");
    if !unspecified && !names.contains(&host) {
        names.push(host);
    }
    if unspecified {
        if let Ok(h) = std::env::var("HOSTNAME") {
            if !h.is_empty() && !names.contains(&h) {
                names.push(h);
            }
        }
    }
    names
}

/// Makes a self-signed certificate for `names` and writes the certificate (only) to
/// `out`. Returns the identity and its SHA-256 fingerprint.
pub fn make_self_signed(names: &[String], out: &Path) -> Result<(Identity, String), CliError> {
    let (identity, cert_pem, _key_pem) =
        Identity::self_signed(names).map_err(|e| CliError::config(e.to_string()))?;
    std::fs::write(out, cert_pem).map_err(|e| {
        CliError::config(format!(
            "cannot write the self-signed certificate to {}: {e}",
            out.display()
        ))
    })?;
    let fp = identity.fingerprint();
    Ok((identity, fp))
}

/// The client's TLS config (ALPN `h2`) for `--ca`, `--insecure` or neither (the
/// bundled public CA roots).
pub fn client_tls(
    ca: Option<&Path>,
    insecure: bool,
) -> Result<Arc<rustls::ClientConfig>, CliError> {
    let cfg = if insecure {
        tls::client_config(ServerTrust::Insecure, None, &[tls::ALPN_H2])
    } else if let Some(path) = ca {
        if let Err(e) = std::fs::metadata(path) {
            return Err(CliError::config(format!(
                "cannot read the CA/server certificate file {}: {e}",
                path.display()
            )));
        }
        let certs = tls::load_certs(path).map_err(|e| CliError::config(e.to_string()))?;
        tls::client_config(ServerTrust::PinnedOrChained(certs), None, &[tls::ALPN_H2])
    } else {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        tls::client_config(ServerTrust::Roots(roots), None, &[tls::ALPN_H2])
    };
    cfg.map_err(|e| CliError::config(e.to_string()))
}
