//! # h2rev2-tls: the rustls configuration of h2rev2
//!
//! Certificates from PEM files or made on the spot, and rustls configs with the right
//! ALPN for each side. Runtime-agnostic (rustls configs are plain data), so the tokio
//! adapter, the smol adapter and the CLI share this one copy; only the acceptors and
//! connectors (tokio-rustls, futures-rustls) differ per runtime.
//!
//! One crypto provider, *ring*, is chosen explicitly (`builder_with_provider`): rustls
//! panics at config build when both ring and aws-lc-rs are enabled and none is chosen.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// ALPN protocol id of HTTP/1.0 (`curl --http1.0` offers only it): served as HTTP/1.1
/// serves it.
pub const ALPN_HTTP10: &[u8] = b"http/1.0";

/// A TLS setup error, naming the file or step that failed.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    /// The chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Loads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let certs = load_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            TlsError(format!(
                "cannot read a private key from {}: {e}",
                key.display()
            ))
        })?;
        Ok(Identity { certs, key })
    }

    /// Makes a self-signed certificate for `names` (DNS names or IP addresses).
    /// Returns it with its PEM texts (certificate, key).
    pub fn self_signed(names: &[String]) -> Result<(Identity, String, String), TlsError> {
        let ck = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| TlsError(format!("cannot make a self-signed certificate: {e}")))?;
        let cert_pem = ck.cert.pem();
        let key_pem = ck.signing_key.serialize_pem();
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
            .map_err(|e| TlsError(format!("bad generated key: {e}")))?;
        Ok((
            Identity {
                certs: vec![ck.cert.der().clone()],
                key,
            },
            cert_pem,
            key_pem,
        ))
    }

    /// SHA-256 fingerprint of the leaf certificate, as colon-separated hex.
    pub fn fingerprint(&self) -> String {
        let digest = ring_sha256(self.certs.first().map(|c| c.as_ref()).unwrap_or(&[]));
        digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

fn ring_sha256(data: &[u8]) -> Vec<u8> {
    // rustls re-exports no hash API; use the provider's hash through its cipher suites.
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let hash = suite.tls13().expect("TLS 1.3 suite").common.hash_provider;
    hash.hash(data).as_ref().to_vec()
}

/// Loads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| {
        TlsError(format!(
            "cannot read certificates from {}: {e}",
            path.display()
        ))
    })?;
    let certs: Vec<_> = iter
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("bad certificate in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "no certificate found in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// The server certificate in force, replaceable while the server runs: a renewed
/// certificate (certbot) takes effect for the next TLS handshakes, without a restart;
/// connections already open keep theirs. Share it between [`server_config_with`] and
/// whatever reloads it.
#[derive(Debug)]
pub struct CertSlot(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl CertSlot {
    /// A slot holding `identity` (its key checked against its certificate).
    pub fn new(identity: Identity) -> Result<Arc<CertSlot>, TlsError> {
        Ok(Arc::new(CertSlot(std::sync::RwLock::new(certified(
            identity,
        )?))))
    }

    /// Serves `identity` from the next handshake on. On an error (a key that is not
    /// the certificate's, an unusable key) the slot keeps what it held.
    pub fn replace(&self, identity: Identity) -> Result<(), TlsError> {
        let key = certified(identity)?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }

    /// The leaf certificate served now.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        let key = self.0.read().unwrap_or_else(|e| e.into_inner());
        key.cert.first().cloned()
    }
}

impl rustls::server::ResolvesServerCert for CertSlot {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn certified(identity: Identity) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let unusable = |e: rustls::Error| {
        TlsError(format!(
            "certificate and key do not form a usable pair: {e}"
        ))
    };
    let key = provider()
        .key_provider
        .load_private_key(identity.key)
        .map_err(unusable)?;
    let ck = rustls::sign::CertifiedKey::new(identity.certs, key);
    ck.keys_match().map_err(unusable)?;
    Ok(Arc::new(ck))
}

/// The public server's TLS config: ALPN `h2` and `http/1.1`.
///
/// With `client_roots`, client certificates signed by those roots are requested (and
/// optional: token-authenticated Listeners and ordinary Clients need none).
pub fn server_config(
    identity: Identity,
    client_roots: Option<RootCertStore>,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with(CertSlot::new(identity)?, client_roots)
}

/// The same, serving whatever certificate `slot` holds at each handshake
/// ([`CertSlot::replace`] rotates it).
pub fn server_config_with(
    slot: Arc<CertSlot>,
    client_roots: Option<RootCertStore>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match client_roots {
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError(format!("client certificate roots: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(slot);
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec(), ALPN_HTTP10.to_vec()];
    Ok(Arc::new(cfg))
}

/// How a Listener checks the public server's certificate.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// The system's usual roots are not bundled: give the CA (or the self-signed
    /// certificate itself) that signed the server's certificate.
    Roots(RootCertStore),
    /// Accept a certificate that is byte for byte one of these (a pin: skips the host
    /// name and expiry checks), or that chains to them (the usual check, host name
    /// included). A self-signed certificate made with `openssl req -x509` has no
    /// subjectAltName, so chain verification alone rejects it as a server certificate;
    /// pinning keeps the check exact instead of turning it off.
    PinnedOrChained(Vec<CertificateDer<'static>>),
    /// Accept any certificate. Only for tests and first steps: anyone on the path can
    /// read and change the traffic.
    Insecure,
}

impl ServerTrust {
    /// Trust the certificates of a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<ServerTrust, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in load_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| TlsError(format!("bad CA certificate in {}: {e}", path.display())))?;
        }
        Ok(ServerTrust::Roots(roots))
    }

    /// Trust exactly these certificates.
    pub fn from_certs(certs: &[CertificateDer<'static>]) -> Result<ServerTrust, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in certs {
            roots
                .add(c.clone())
                .map_err(|e| TlsError(format!("bad CA certificate: {e}")))?;
        }
        Ok(ServerTrust::Roots(roots))
    }
}

/// A client TLS config with ALPN `alpn` (`h2` for a Listener).
pub fn client_config(
    trust: ServerTrust,
    client_identity: Option<Identity>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match trust {
        ServerTrust::Roots(roots) => builder.with_root_certificates(roots),
        ServerTrust::PinnedOrChained(pinned) => {
            let mut roots = RootCertStore::empty();
            let _ = roots.add_parsable_certificates(pinned.iter().cloned());
            let chained = if roots.is_empty() {
                None
            } else {
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .ok()
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(CustomVerifier {
                    check: Check::PinnedOrChained { pinned, chained },
                    provider: provider(),
                }))
        }
        ServerTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CustomVerifier {
                check: Check::AcceptAny,
                provider: provider(),
            })),
    };
    let mut cfg = match client_identity {
        Some(id) => builder
            .with_client_auth_cert(id.certs, id.key)
            .map_err(|e| TlsError(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Parses `host` as a TLS server name (DNS name or IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsError(format!("{host:?} is not a valid TLS server name: {e}")))
}

/// A server certificate check other than plain chain verification.
#[derive(Debug)]
enum Check {
    /// Accept anything ([`ServerTrust::Insecure`]).
    AcceptAny,
    /// One of `pinned`, or chaining to them ([`ServerTrust::PinnedOrChained`]).
    PinnedOrChained {
        pinned: Vec<CertificateDer<'static>>,
        chained: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    },
}

/// Runs a [`Check`] on the certificate; handshake signatures are always verified with
/// the provider's algorithms.
#[derive(Debug)]
struct CustomVerifier {
    check: Check,
    provider: Arc<CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for CustomVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let ok = rustls::client::danger::ServerCertVerified::assertion;
        match &self.check {
            Check::AcceptAny => Ok(ok()),
            Check::PinnedOrChained { pinned, .. }
                if pinned.iter().any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ok())
            }
            Check::PinnedOrChained {
                chained: Some(v), ..
            } => v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
            Check::PinnedOrChained { chained: None, .. } => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str) -> Identity {
        Identity::self_signed(&[name.to_string()]).unwrap().0
    }

    #[test]
    fn a_cert_slot_rotates_and_refuses_a_key_of_another_certificate() {
        let (a, b) = (identity("a.example"), identity("b.example"));
        let slot = CertSlot::new(a.clone()).unwrap();
        assert_eq!(slot.leaf().as_ref(), a.certs.first());
        slot.replace(b.clone()).unwrap();
        assert_eq!(slot.leaf().as_ref(), b.certs.first());
        let mixed = Identity {
            certs: a.certs.clone(),
            key: b.key.clone_key(),
        };
        let e = slot.replace(mixed.clone()).unwrap_err();
        assert!(e.to_string().contains("do not form a usable pair"), "{e}");
        assert_eq!(slot.leaf().as_ref(), b.certs.first(), "the old one is kept");
        assert!(CertSlot::new(mixed).is_err());
    }
}
