//! Certificates for the CLI: loading the server's, making a self-signed one, and how a
//! client trusts the server.
//!
//! `server --self-signed` keeps its key in a file (mode 0600) and reuses it, and the
//! certificate too when it still fits, so a restarted server presents the same
//! certificate and clients pinned to it keep working ([`SelfSigned`]). Its files are
//! written only once the server's ports are bound.
//!
//! `client --ca FILE` (and the original form's `-cert FILE`) trusts the server when its
//! certificate is signed by a certificate of FILE (normal chain verification, host
//! name included), *or* when it is byte for byte a certificate of FILE (pinning). The
//! second rule is what makes the original README's example work: `openssl req -x509
//! -subj /CN=localhost` makes a CA certificate without a subjectAltName, which chain
//! verification rejects as a server certificate, and the Go client got past that only
//! by skipping verification altogether. Pinning keeps the check exact instead.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use h2rev2_tokio::tls::{self, Identity, ServerTrust};
use rcgen::PublicKeyData;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::ParsedCertificate;
use tracing::{info, warn};

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

/// Where `--self-signed` keeps its key when `--self-signed-key` is not given: the
/// certificate's path with the extension `.key` (`h2rev2-server.crt` →
/// `h2rev2-server.key`).
pub fn default_key_path(cert_out: &Path) -> PathBuf {
    cert_out.with_extension("key")
}

/// Where a self-signed certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The key and certificate files existed and fit: both are used as they are, and
    /// nothing is written.
    Reused,
    /// The key file existed but the certificate file was missing, for another key or
    /// without one of the names: a new certificate is signed with that key.
    NewCertificate,
    /// No key file: a new key and a new certificate.
    New,
}

/// A self-signed identity for `--self-signed`, with the files still to write.
///
/// Made before the server binds its ports (it only reads files), written with
/// [`SelfSigned::write`] once they are bound, so that a start that fails (a port in
/// use) leaves the files of a running server alone.
#[derive(Debug)]
pub struct SelfSigned {
    /// The certificate and key to serve.
    pub identity: Identity,
    /// SHA-256 fingerprint of the certificate.
    pub fingerprint: String,
    /// The names asked for.
    pub names: Vec<String>,
    /// Whether the certificate is reused or new.
    pub origin: Origin,
    cert_path: PathBuf,
    /// `None`: the key is not kept (the demo).
    key_path: Option<PathBuf>,
    /// The certificate to write, if it is new.
    cert_pem: Option<String>,
    /// The key to write, if it is new.
    key_pem: Option<String>,
}

impl SelfSigned {
    /// The identity of `--self-signed`: the key of `key_path` if the file exists (else a
    /// new one), and the certificate of `cert_path` if it is for that key and names
    /// every one of `names` (else a new one signed with the key). Reads files, writes
    /// none.
    pub fn load_or_make(
        names: &[String],
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<SelfSigned, CliError> {
        if cert_path == key_path {
            return Err(CliError::usage(format!(
                "--cert-out and --self-signed-key are both {}: give the key another file \
                 with --self-signed-key FILE",
                cert_path.display()
            )));
        }
        let (key, key_is_new) = match read_key(key_path)? {
            Some(k) => (k, false),
            None => (new_key()?, true),
        };
        let reused = if key_is_new {
            None
        } else {
            match reusable_cert(cert_path, &key, names) {
                Ok(der) => Some(der),
                Err(why) => {
                    info!(
                        "{}: {why}; making a new certificate with the key {}",
                        cert_path.display(),
                        key_path.display()
                    );
                    None
                }
            }
        };
        let (der, cert_pem, origin) = match reused {
            Some(der) => (der, None, Origin::Reused),
            None => {
                let cert = sign(names, &key)?;
                let origin = if key_is_new {
                    Origin::New
                } else {
                    Origin::NewCertificate
                };
                (cert.der().clone(), Some(cert.pem()), origin)
            }
        };
        let identity = identity(der, &key)?;
        Ok(SelfSigned {
            fingerprint: identity.fingerprint(),
            identity,
            names: names.to_vec(),
            origin,
            cert_path: cert_path.to_path_buf(),
            key_path: Some(key_path.to_path_buf()),
            cert_pem,
            key_pem: key_is_new.then(|| key.serialize_pem()),
        })
    }

    /// A new key and certificate whose key is not kept (the demo); [`SelfSigned::write`]
    /// writes the certificate to `cert_path`.
    pub fn ephemeral(names: &[String], cert_path: &Path) -> Result<SelfSigned, CliError> {
        let key = new_key()?;
        let cert = sign(names, &key)?;
        let identity = identity(cert.der().clone(), &key)?;
        Ok(SelfSigned {
            fingerprint: identity.fingerprint(),
            identity,
            names: names.to_vec(),
            origin: Origin::New,
            cert_path: cert_path.to_path_buf(),
            key_path: None,
            cert_pem: Some(cert.pem()),
            key_pem: None,
        })
    }

    /// Writes what is new: the key first (created with mode 0600, never replacing a
    /// file), then the certificate (through a temporary file renamed over the old one,
    /// so a client never reads half of it). Nothing is written for a reused
    /// certificate.
    pub fn write(&self) -> Result<(), CliError> {
        if let (Some(path), Some(pem)) = (&self.key_path, &self.key_pem) {
            write_key(path, pem)?;
        }
        if let Some(pem) = &self.cert_pem {
            write_cert(&self.cert_path, pem).map_err(|e| {
                CliError::config(format!(
                    "cannot write the self-signed certificate to {}: {e}",
                    self.cert_path.display()
                ))
            })?;
        }
        Ok(())
    }

    /// Logs where the certificate and key are, whether they were reused, the
    /// fingerprint, and how clients trust it.
    pub fn report(&self) {
        let cert = shown(&self.cert_path);
        let key = self.key_path.as_deref().map(shown);
        let key = key.as_deref().unwrap_or("(not kept)");
        let names = &self.names;
        match self.origin {
            Origin::Reused => info!(
                "reusing the self-signed certificate {cert} (key {key}) for {names:?}: \
                 clients pinned to it keep working"
            ),
            Origin::NewCertificate => info!(
                "made a new self-signed certificate for {names:?} with the existing key \
                 {key}, written to {cert} (clients pinned to the previous certificate \
                 need this file)"
            ),
            Origin::New => info!(
                "made a new self-signed certificate for {names:?} and a new key: \
                 certificate written to {cert}, key to {key} (keep it private: the next \
                 start reuses both)"
            ),
        }
        let how = match self.origin {
            Origin::Reused => "reused",
            Origin::NewCertificate | Origin::New => "new",
        };
        info!(
            "certificate SHA-256 fingerprint {} ({how})",
            self.fingerprint
        );
        info!("clients trust it with: h2rev2 client --ca {cert} ...");
    }
}

fn shown(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

fn new_key() -> Result<rcgen::KeyPair, CliError> {
    rcgen::KeyPair::generate()
        .map_err(|e| CliError::runtime(format!("cannot make a private key: {e}")))
}

fn sign(names: &[String], key: &rcgen::KeyPair) -> Result<rcgen::Certificate, CliError> {
    rcgen::CertificateParams::new(names.to_vec())
        .and_then(|p| p.self_signed(key))
        .map_err(|e| {
            CliError::config(format!(
                "cannot make a self-signed certificate for {names:?}: {e}"
            ))
        })
}

fn identity(cert: CertificateDer<'static>, key: &rcgen::KeyPair) -> Result<Identity, CliError> {
    let key = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| CliError::runtime(format!("bad private key: {e}")))?;
    Ok(Identity {
        certs: vec![cert],
        key,
    })
}

/// The key of `path`, or `None` if there is no such file.
fn read_key(path: &Path) -> Result<Option<rcgen::KeyPair>, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::config(format!(
                "cannot read the self-signed key file {}: {e}",
                path.display()
            )));
        }
    };
    warn_if_readable_by_others(path);
    rcgen::KeyPair::from_pem(&text).map(Some).map_err(|e| {
        CliError::config(format!(
            "the self-signed key file {} holds no usable private key (PEM PKCS#8 \
             expected): {e}. Fix or remove it (a new key means clients need the new \
             certificate), or choose another file with --self-signed-key",
            path.display()
        ))
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warn!(
                "the self-signed key {} may be read by other users (mode {mode:04o}): \
                 chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// The certificate of `path` if it can serve with `key` for every one of `names`, else
/// why not.
fn reusable_cert(
    path: &Path,
    key: &rcgen::KeyPair,
    names: &[String],
) -> Result<CertificateDer<'static>, String> {
    if !path.exists() {
        return Err("no certificate yet".into());
    }
    let mut certs = tls::load_certs(path).map_err(|e| e.to_string())?;
    if certs.len() != 1 {
        return Err(format!("{} certificates, not one", certs.len()));
    }
    let der = certs.remove(0);
    let parsed = ParsedCertificate::try_from(&der).map_err(|e| format!("unusable: {e}"))?;
    if parsed.subject_public_key_info().as_ref() != key.subject_public_key_info().as_slice() {
        return Err("the certificate is not for this key".into());
    }
    if let Some(n) = names.iter().find(|n| !names_host(&parsed, &der, n)) {
        return Err(format!("the certificate does not name {n:?}"));
    }
    Ok(der)
}

/// Whether `cert` (parsed, and its DER) is valid for `name`.
fn names_host(parsed: &ParsedCertificate<'_>, der: &[u8], name: &str) -> bool {
    let name = name.trim_start_matches('[').trim_end_matches(']');
    match ServerName::try_from(name) {
        Ok(sn) if !name.starts_with("*.") => {
            rustls::client::verify_server_name(parsed, &sn).is_ok()
        }
        // Not a name a client can ask for (a wildcard, say): the certificate must hold
        // it as written.
        _ => !name.is_empty() && der.windows(name.len()).any(|w| w == name.as_bytes()),
    }
}

/// Creates the key file with mode 0600 (before any byte is in it); never replaces a
/// file.
fn write_key(path: &Path, pem: &str) -> Result<(), CliError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
            " (it appeared while this server started: another h2rev2 server? start again \
             to use it)"
        } else {
            ""
        };
        CliError::config(format!(
            "cannot create the self-signed key file {}: {e}{hint}",
            path.display()
        ))
    })?;
    f.write_all(pem.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| {
            CliError::config(format!(
                "cannot write the self-signed key file {}: {e}",
                path.display()
            ))
        })
}

/// Replaces the certificate file through a temporary file in the same directory and a
/// rename; something that is not a regular file (`/dev/null`, a symlink) is written
/// through instead.
fn write_cert(path: &Path, pem: &str) -> std::io::Result<()> {
    let regular = match std::fs::symlink_metadata(path) {
        Ok(m) => m.file_type().is_file(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    let Some(name) = path.file_name().filter(|_| regular) else {
        return std::fs::write(path, pem);
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o644);
    }
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(pem.as_bytes())?;
        f.sync_all()
    });
    let done = written.and_then(|()| std::fs::rename(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// The client's TLS config (ALPN `h2`) for `--ca`, `--insecure` or neither (the
/// bundled public CA roots).
pub fn client_tls(
    ca: Option<&Path>,
    insecure: bool,
    identity: Option<Identity>,
) -> Result<Arc<rustls::ClientConfig>, CliError> {
    let cfg = if insecure {
        tls::client_config(ServerTrust::Insecure, identity, &[tls::ALPN_H2])
    } else if let Some(path) = ca {
        if let Err(e) = std::fs::metadata(path) {
            return Err(CliError::config(format!(
                "cannot read the CA/server certificate file {}: {e}",
                path.display()
            )));
        }
        let certs = tls::load_certs(path).map_err(|e| CliError::config(e.to_string()))?;
        tls::client_config(
            ServerTrust::PinnedOrChained(certs),
            identity,
            &[tls::ALPN_H2],
        )
    } else {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        tls::client_config(ServerTrust::Roots(roots), identity, &[tls::ALPN_H2])
    };
    cfg.map_err(|e| CliError::config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn second_start_reuses_key_and_certificate_for_every_kind_of_name() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("s.crt"), dir.path().join("s.key"));
        let n = names(&["localhost", "10.0.0.1", "::1", "*.tunnel.example"]);
        let first = SelfSigned::load_or_make(&n, &crt, &key).unwrap();
        assert_eq!(first.origin, Origin::New);
        assert!(
            !crt.exists() && !key.exists(),
            "nothing written before write()"
        );
        first.write().unwrap();
        let again = SelfSigned::load_or_make(&n, &crt, &key).unwrap();
        assert_eq!(again.origin, Origin::Reused);
        assert_eq!(again.fingerprint, first.fingerprint);
        assert_eq!(again.identity.key, first.identity.key);
        // Fewer names: still covered.
        let fewer = SelfSigned::load_or_make(&n[..1], &crt, &key).unwrap();
        assert_eq!(fewer.origin, Origin::Reused);
        // Another name: a new certificate, same key.
        let more = names(&["localhost", "other.example"]);
        let other = SelfSigned::load_or_make(&more, &crt, &key).unwrap();
        assert_eq!(other.origin, Origin::NewCertificate);
        assert_ne!(other.fingerprint, first.fingerprint);
        assert_eq!(other.identity.key, first.identity.key);
        other.write().unwrap();
        assert_eq!(
            SelfSigned::load_or_make(&more, &crt, &key).unwrap().origin,
            Origin::Reused
        );
    }

    #[test]
    fn a_certificate_for_another_key_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("s.crt"), dir.path().join("s.key"));
        let n = names(&["localhost"]);
        SelfSigned::load_or_make(&n, &crt, &key)
            .unwrap()
            .write()
            .unwrap();
        let other_key = dir.path().join("other.key");
        let s = SelfSigned::load_or_make(&n, &crt, &other_key).unwrap();
        assert_eq!(s.origin, Origin::New);
        // An existing key is not written again, and a key file that appears between
        // the start and the write is never replaced.
        let existing = SelfSigned::load_or_make(&n, &dir.path().join("x.crt"), &key).unwrap();
        assert!(existing.key_pem.is_none());
        let late_key = dir.path().join("late.key");
        let late = SelfSigned::load_or_make(&n, &dir.path().join("y.crt"), &late_key).unwrap();
        std::fs::write(&late_key, "someone else's\n").unwrap();
        assert!(late.write().is_err());
        assert_eq!(std::fs::read(&late_key).unwrap(), b"someone else's\n");
        // The certificate and the key in one file: refused.
        assert!(SelfSigned::load_or_make(&n, &crt, &crt).is_err());
    }
}
