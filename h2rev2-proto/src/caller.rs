//! Who may use a tunnel: opt-in access control for Clients of `B/proxy/{id}/…` and of
//! the default target (the Listeners' side is [`crate::auth`]).
//!
//! Without any rule every Client may use every id, as in the Go package. Once a rule
//! exists, **every** id needs a credential, and a credential opens the ids it was
//! given for (or all of them): so a Client learns nothing about which ids exist, since
//! a refusal for an unknown id is the same as for a known one.
//!
//! Credentials are HTTP bearer tokens (`Authorization: Bearer …`) and HTTP basic
//! (`Authorization: Basic …`), compared in constant time, and verified TLS client
//! certificates: the caller of [`CallerPolicy::check`] passes the identities (SAN DNS
//! names or CN) of the certificate the Client's connection presented, which the TLS
//! layer has already verified against the operator's CA. This crate does no TLS.
//!
//! ```
//! use h2rev2_proto::caller::{Admitted, CallerPolicy, CallerRefusal};
//! use h2rev2_proto::wire::DialerId;
//! let web = DialerId::new("web").unwrap();
//! let db = DialerId::new("db").unwrap();
//! let no_cert: &[String] = &[];
//! let alice = ["alice".to_string()];
//! let mut p = CallerPolicy::default();
//! assert_eq!(p.check(&db, None, no_cert), Ok(Admitted::Open), "no rule: open");
//! p.allow_bearer(Some(web.clone()), "s3cret");
//! p.allow_basic(None, "ops", "hunter2");
//! p.allow_certificate(Some(web.clone()), "alice");
//! assert_eq!(p.check(&web, None, no_cert), Err(CallerRefusal::Missing));
//! assert_eq!(p.check(&web, Some("Bearer s3cret"), no_cert), Ok(Admitted::Header));
//! assert_eq!(p.check(&db, Some("Bearer s3cret"), no_cert), Err(CallerRefusal::Denied));
//! assert!(p.check(&db, Some("Basic b3BzOmh1bnRlcjI="), no_cert).is_ok(), "ops:hunter2, any id");
//! assert_eq!(p.check(&web, None, &alice), Ok(Admitted::Certificate));
//! assert_eq!(p.check(&db, None, &alice), Err(CallerRefusal::Denied));
//! ```

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::wire::DialerId;

/// Why a Client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerRefusal {
    /// No credential (or one in no scheme we know): `401`.
    Missing,
    /// A credential that does not open this id: `403`.
    Denied,
}

impl CallerRefusal {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            CallerRefusal::Missing => 401,
            CallerRefusal::Denied => 403,
        }
    }
}

impl fmt::Display for CallerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallerRefusal::Missing => "authentication required",
            CallerRefusal::Denied => "not allowed",
        })
    }
}

/// Which credential let a Client in ([`CallerPolicy::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// No rule exists: every Client may use every id.
    Open,
    /// The `Authorization` value (a bearer token or basic credentials): it was meant
    /// for the tunnel, so it should not be forwarded.
    Header,
    /// A client certificate identity. An `Authorization` value the Client also sent
    /// opened nothing here and may be meant for the NATed server.
    Certificate,
}

/// The access rules for Clients. See the module documentation.
#[derive(Clone, Default)]
pub struct CallerPolicy {
    /// Credentials (a bearer token, or `user:password` for basic) for every id.
    any: Vec<Secret>,
    /// Credentials for one id.
    per_id: HashMap<DialerId, Vec<Secret>>,
}

#[derive(Clone)]
enum Secret {
    Bearer(Vec<u8>),
    /// `user:password`.
    Basic(Vec<u8>),
    /// A verified client certificate identity (SAN DNS name or CN).
    Certificate(String),
}

impl fmt::Debug for CallerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerPolicy")
            .field("credentials_for_any_id", &self.any.len())
            .field("ids_with_credentials", &self.per_id.len())
            .finish()
    }
}

impl CallerPolicy {
    /// Whether any rule exists (then every id needs a credential).
    pub fn is_enforced(&self) -> bool {
        !self.any.is_empty() || !self.per_id.is_empty()
    }

    fn add(&mut self, id: Option<DialerId>, secret: Secret) -> &mut Self {
        match id {
            Some(id) => self.per_id.entry(id).or_default().push(secret),
            None => self.any.push(secret),
        }
        self
    }

    /// Admits `Authorization: Bearer {token}` for `id` (`None`: every id).
    pub fn allow_bearer(&mut self, id: Option<DialerId>, token: &str) -> &mut Self {
        self.add(id, Secret::Bearer(token.as_bytes().to_vec()))
    }

    /// Admits HTTP basic `user:password` for `id` (`None`: every id).
    pub fn allow_basic(&mut self, id: Option<DialerId>, user: &str, password: &str) -> &mut Self {
        self.add(id, Secret::Basic(format!("{user}:{password}").into_bytes()))
    }

    /// Admits a Client whose verified TLS client certificate has the identity
    /// `identity` (a SAN DNS name or the CN, whichever the server extracts) for `id`
    /// (`None`: every id). The certificate must have been verified against a CA the
    /// operator trusts before its identities reach [`CallerPolicy::check`].
    pub fn allow_certificate(&mut self, id: Option<DialerId>, identity: &str) -> &mut Self {
        self.add(id, Secret::Certificate(identity.to_string()))
    }

    /// Checks a Client's request for `id`: the `Authorization` (or
    /// `Proxy-Authorization`) value it sent, and `cert_identities`, the identities of
    /// the verified client certificate of its connection (empty without one).
    ///
    /// A valid header credential is preferred (then [`Admitted::Header`]), else a
    /// certificate identity that opens `id`. Refusals: [`CallerRefusal::Missing`] when
    /// the Client gave neither a header credential nor a certificate,
    /// [`CallerRefusal::Denied`] when what it gave does not open `id`; the same for
    /// known and unknown ids.
    pub fn check(
        &self,
        id: &DialerId,
        authorization: Option<&str>,
        cert_identities: &[String],
    ) -> Result<Admitted, CallerRefusal> {
        if !self.is_enforced() {
            return Ok(Admitted::Open);
        }
        let own = self.per_id.get(id).map(Vec::as_slice).unwrap_or_default();
        let rules = || self.any.iter().chain(own);
        let given = parse_authorization(authorization);
        if let Some(Some(given)) = &given {
            let mut ok = subtle::Choice::from(0u8);
            for secret in rules() {
                ok |= match (secret, given) {
                    (Secret::Bearer(s), Given::Bearer(g)) | (Secret::Basic(s), Given::Basic(g)) => {
                        s.as_slice().ct_eq(g.as_slice())
                    }
                    _ => subtle::Choice::from(0u8),
                };
            }
            if bool::from(ok) {
                return Ok(Admitted::Header);
            }
        }
        // Certificate identities are not secrets: a plain comparison will do.
        let by_cert = rules().any(|secret| match secret {
            Secret::Certificate(name) => cert_identities.iter().any(|c| c == name),
            _ => false,
        });
        if by_cert {
            Ok(Admitted::Certificate)
        } else if given.is_some() || !cert_identities.is_empty() {
            Err(CallerRefusal::Denied)
        } else {
            Err(CallerRefusal::Missing)
        }
    }
}

/// `None`: no credential in a scheme we know; `Some(None)`: a malformed one.
fn parse_authorization(authorization: Option<&str>) -> Option<Option<Given>> {
    let (scheme, value) = authorization?.trim().split_once(' ')?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(Some(Given::Bearer(value.as_bytes().to_vec())))
    } else if scheme.eq_ignore_ascii_case("basic") {
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()
                .map(Given::Basic),
        )
    } else {
        None
    }
}

enum Given {
    Bearer(Vec<u8>),
    Basic(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DialerId {
        DialerId::new(s).unwrap()
    }

    const NO_CERT: &[String] = &[];

    fn certs(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn known_and_unknown_ids_are_refused_alike() {
        let mut p = CallerPolicy::default();
        p.allow_bearer(Some(id("web")), "t");
        for who in ["web", "ghost"] {
            assert_eq!(
                p.check(&id(who), None, NO_CERT),
                Err(CallerRefusal::Missing)
            );
            assert_eq!(
                p.check(&id(who), Some("Bearer wrong"), NO_CERT),
                Err(CallerRefusal::Denied)
            );
            assert_eq!(
                p.check(&id(who), Some("Digest x"), NO_CERT),
                Err(CallerRefusal::Missing)
            );
            assert_eq!(
                p.check(&id(who), Some("Basic !!!"), NO_CERT),
                Err(CallerRefusal::Denied)
            );
        }
        assert!(p.check(&id("web"), Some("bearer t"), NO_CERT).is_ok());
        assert_eq!(
            p.check(&id("ghost"), Some("Bearer t"), NO_CERT),
            Err(CallerRefusal::Denied)
        );
        // A bearer token is not a basic password and back.
        p.allow_basic(None, "u", "t");
        assert_eq!(
            p.check(&id("ghost"), Some("Bearer t"), NO_CERT),
            Err(CallerRefusal::Denied)
        );
        assert!(p.check(&id("ghost"), Some("Basic dTp0"), NO_CERT).is_ok());
    }

    #[test]
    fn certificate_identities_open_their_ids() {
        let mut p = CallerPolicy::default();
        assert_eq!(
            p.check(&id("db"), None, &certs(&["alice"])),
            Ok(Admitted::Open)
        );
        p.allow_certificate(Some(id("web")), "alice");
        p.allow_certificate(None, "ops");
        assert!(p.is_enforced(), "a certificate rule alone enforces");
        let alice = certs(&["alice"]);
        assert_eq!(p.check(&id("web"), None, &alice), Ok(Admitted::Certificate));
        // Any of the certificate's names may match.
        assert_eq!(
            p.check(&id("web"), None, &certs(&["x.example", "alice"])),
            Ok(Admitted::Certificate)
        );
        for who in ["db", "ghost"] {
            assert_eq!(p.check(&id(who), None, &alice), Err(CallerRefusal::Denied));
            assert_eq!(
                p.check(&id(who), None, NO_CERT),
                Err(CallerRefusal::Missing)
            );
            assert_eq!(
                p.check(&id(who), None, &certs(&["ops"])),
                Ok(Admitted::Certificate)
            );
        }
        // Names are compared exactly.
        assert_eq!(
            p.check(&id("web"), None, &certs(&["Alice", "alice.", "alic"])),
            Err(CallerRefusal::Denied)
        );
        // A certificate name is not a bearer token.
        assert_eq!(
            p.check(&id("web"), Some("Bearer alice"), NO_CERT),
            Err(CallerRefusal::Denied)
        );
    }

    #[test]
    fn certificates_and_headers_side_by_side() {
        let mut p = CallerPolicy::default();
        p.allow_certificate(Some(id("web")), "alice");
        p.allow_bearer(Some(id("db")), "t");
        let alice = certs(&["alice"]);
        assert_eq!(
            p.check(&id("db"), Some("Bearer t"), NO_CERT),
            Ok(Admitted::Header)
        );
        assert_eq!(
            p.check(&id("db"), Some("Bearer t"), &alice),
            Ok(Admitted::Header)
        );
        // The certificate opens web; the header is then someone else's business.
        assert_eq!(
            p.check(&id("web"), Some("Bearer for-the-app"), &alice),
            Ok(Admitted::Certificate)
        );
        assert_eq!(
            p.check(&id("web"), Some("Bearer t"), NO_CERT),
            Err(CallerRefusal::Denied)
        );
        assert_eq!(
            p.check(&id("db"), Some("Bearer wrong"), &alice),
            Err(CallerRefusal::Denied)
        );
        assert_eq!(
            p.check(&id("db"), Some("Digest x"), NO_CERT),
            Err(CallerRefusal::Missing)
        );
    }
}
