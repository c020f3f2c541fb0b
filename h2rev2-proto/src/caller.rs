//! Who may use a tunnel: opt-in access control for Clients of `B/proxy/{id}/…` and of
//! the default target (the Listeners' side is [`crate::auth`]).
//!
//! Without any rule every Client may use every id, as in the Go package. Once a rule
//! exists, **every** id needs a credential, and a credential opens the ids it was
//! given for (or all of them): so a Client learns nothing about which ids exist, since
//! a refusal for an unknown id is the same as for a known one.
//!
//! Credentials are HTTP bearer tokens (`Authorization: Bearer …`) and HTTP basic
//! (`Authorization: Basic …`), compared in constant time.
//!
//! ```
//! use h2rev2_proto::caller::{CallerPolicy, CallerRefusal};
//! use h2rev2_proto::wire::DialerId;
//! let web = DialerId::new("web").unwrap();
//! let db = DialerId::new("db").unwrap();
//! let mut p = CallerPolicy::default();
//! assert!(p.check(&db, None).is_ok(), "no rule: open");
//! p.allow_bearer(Some(web.clone()), "s3cret");
//! p.allow_basic(None, "ops", "hunter2");
//! assert_eq!(p.check(&web, None), Err(CallerRefusal::Missing));
//! assert!(p.check(&web, Some("Bearer s3cret")).is_ok());
//! assert_eq!(p.check(&db, Some("Bearer s3cret")), Err(CallerRefusal::Denied));
//! assert!(p.check(&db, Some("Basic b3BzOmh1bnRlcjI=")).is_ok(), "ops:hunter2, any id");
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

    /// Checks the `Authorization` (or `Proxy-Authorization`) value a Client sent for
    /// `id`.
    pub fn check(&self, id: &DialerId, authorization: Option<&str>) -> Result<(), CallerRefusal> {
        if !self.is_enforced() {
            return Ok(());
        }
        let Some((scheme, value)) = authorization.and_then(|a| a.trim().split_once(' ')) else {
            return Err(CallerRefusal::Missing);
        };
        let value = value.trim();
        let given = if scheme.eq_ignore_ascii_case("bearer") {
            Given::Bearer(value.as_bytes().to_vec())
        } else if scheme.eq_ignore_ascii_case("basic") {
            match base64::engine::general_purpose::STANDARD.decode(value) {
                Ok(v) => Given::Basic(v),
                Err(_) => return Err(CallerRefusal::Denied),
            }
        } else {
            return Err(CallerRefusal::Missing);
        };
        let mut ok = subtle::Choice::from(0u8);
        let own = self.per_id.get(id).map(Vec::as_slice).unwrap_or_default();
        for secret in self.any.iter().chain(own) {
            ok |= match (secret, &given) {
                (Secret::Bearer(s), Given::Bearer(g)) | (Secret::Basic(s), Given::Basic(g)) => {
                    s.as_slice().ct_eq(g.as_slice())
                }
                _ => subtle::Choice::from(0u8),
            };
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(CallerRefusal::Denied)
        }
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

    #[test]
    fn known_and_unknown_ids_are_refused_alike() {
        let mut p = CallerPolicy::default();
        p.allow_bearer(Some(id("web")), "t");
        for who in ["web", "ghost"] {
            assert_eq!(p.check(&id(who), None), Err(CallerRefusal::Missing));
            assert_eq!(
                p.check(&id(who), Some("Bearer wrong")),
                Err(CallerRefusal::Denied)
            );
            assert_eq!(
                p.check(&id(who), Some("Digest x")),
                Err(CallerRefusal::Missing)
            );
            assert_eq!(
                p.check(&id(who), Some("Basic !!!")),
                Err(CallerRefusal::Denied)
            );
        }
        assert!(p.check(&id("web"), Some("bearer t")).is_ok());
        assert_eq!(
            p.check(&id("ghost"), Some("Bearer t")),
            Err(CallerRefusal::Denied)
        );
        // A bearer token is not a basic password and back.
        p.allow_basic(None, "u", "t");
        assert_eq!(
            p.check(&id("ghost"), Some("Bearer t")),
            Err(CallerRefusal::Denied)
        );
        assert!(p.check(&id("ghost"), Some("Basic dTp0")).is_ok());
    }
}
