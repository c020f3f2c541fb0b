//! Identities of a verified TLS client certificate, for ids bound to certificates.

use rustls::ServerConnection;

/// Which part of a client certificate names the Listener's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertIdentity {
    /// The DNS subject alternative names (default).
    #[default]
    San,
    /// The subject's common name.
    Cn,
}

/// The identities of the peer's certificate (verified by rustls before we get here),
/// as chosen by `which`. Empty without a client certificate.
pub fn peer_identities(session: &ServerConnection, which: CertIdentity) -> Vec<String> {
    let Some(cert) = session.peer_certificates().and_then(|c| c.first()) else {
        return Vec::new();
    };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    match which {
        CertIdentity::San => parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        CertIdentity::Cn => parsed
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_string))
            .collect(),
    }
}
