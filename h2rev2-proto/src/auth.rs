//! Authentication decisions (PROTOCOL.md 4.1), as pure functions.
//!
//! The Go package lets anyone who knows an id register it and take its traffic. Here a
//! revdial request (control *and* data) is admitted only when one of these holds:
//!
//! * it carries `Authorization: Bearer <token>` and the token equals the one configured
//!   for its id (compared in constant time);
//! * the id is bound to the TLS client certificate: the certificate's identities (SANs
//!   or CN, as the operator chose; the adapter extracts them) include the id;
//! * the operator opted into anonymous mode, optionally restricted to some ids.
//!
//! Failures never say whether an id exists: an unknown id and a wrong token get the same
//! answer.

use std::collections::HashMap;
use std::fmt;

use subtle::ConstantTimeEq;

use crate::wire::DialerId;

/// What the adapter learnt about the peer of a revdial request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The token of an `Authorization: Bearer` header, if any.
    pub bearer: Option<&'a str>,
    /// Identities of the verified TLS client certificate (empty without mutual TLS).
    pub cert_identities: &'a [String],
}

/// The token of an `Authorization` header value of the `Bearer` scheme (RFC 6750
/// 2.1; the scheme name is case-insensitive), or `None`.
///
/// ```
/// use h2rev2_proto::auth::parse_bearer;
/// assert_eq!(parse_bearer("Bearer s3cret"), Some("s3cret"));
/// assert_eq!(parse_bearer("bearer  s3cret "), Some("s3cret"));
/// assert_eq!(parse_bearer("Basic dXNlcg=="), None);
/// assert_eq!(parse_bearer("Bearer"), None);
/// ```
pub fn parse_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// How a request was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// It proved it owns the id (token or certificate).
    Authenticated,
    /// Anonymous mode: it proved nothing.
    Anonymous,
}

/// What admitted a session: kept with it, so that a new policy can tell whether the
/// session would still be admitted ([`AuthPolicy::still_admits`]) and end exactly the
/// sessions whose credential it withdrew.
#[derive(Clone, PartialEq, Eq)]
pub enum Grant {
    /// This token of the id (a copy of the configured secret, never shown).
    Token(Vec<u8>),
    /// The verified client certificate named the id.
    Certificate,
    /// Anonymous mode.
    Anonymous,
}

impl Grant {
    /// How the request was admitted, in the terms of [`takeover`].
    pub fn principal(&self) -> Principal {
        match self {
            Grant::Token(_) | Grant::Certificate => Principal::Authenticated,
            Grant::Anonymous => Principal::Anonymous,
        }
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a secret: its bytes never reach a log.
        f.write_str(match self {
            Grant::Token(_) => "Token(***)",
            Grant::Certificate => "Certificate",
            Grant::Anonymous => "Anonymous",
        })
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials at all, and anonymous mode is off: `401`.
    Missing,
    /// Credentials were given but do not match the id: `403`. (An unknown id answers the
    /// same, so probing reveals nothing.)
    Denied,
}

impl AuthError {
    /// The HTTP status for this refusal.
    pub fn status(self) -> u16 {
        match self {
            AuthError::Missing => 401,
            AuthError::Denied => 403,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::Missing => {
                "authentication required: send a bearer token or a client certificate"
            }
            AuthError::Denied => "credentials not valid for this id",
        })
    }
}

impl std::error::Error for AuthError {}

/// The operator's authentication policy.
///
/// ```
/// use h2rev2_proto::auth::{AuthPolicy, Credentials, Principal};
/// use h2rev2_proto::wire::DialerId;
/// let mut p = AuthPolicy::new();
/// p.add_token(DialerId::new("db").unwrap(), "s3cret");
/// let id = DialerId::new("db").unwrap();
/// let ok = Credentials { bearer: Some("s3cret"), ..Default::default() };
/// assert_eq!(p.authenticate(&id, &ok), Ok(Principal::Authenticated));
/// assert!(p.authenticate(&id, &Credentials::default()).is_err());
/// ```
#[derive(Debug, Clone, Default)]
pub struct AuthPolicy {
    tokens: HashMap<DialerId, Vec<Vec<u8>>>,
    cert_bound: bool,
    anonymous: Option<Anonymous>,
}

#[derive(Debug, Clone)]
enum Anonymous {
    AnyId,
    Only(Vec<DialerId>),
}

impl AuthPolicy {
    /// A policy that admits nobody until tokens, certificates or anonymous mode are
    /// configured.
    pub fn new() -> Self {
        AuthPolicy::default()
    }

    /// Accepts `token` for `id`. Several tokens per id may be configured (rotation).
    pub fn add_token(&mut self, id: DialerId, token: &str) -> &mut Self {
        self.tokens
            .entry(id)
            .or_default()
            .push(token.as_bytes().to_vec());
        self
    }

    /// Admits a request whose verified client certificate names its id.
    pub fn bind_ids_to_certificates(&mut self, on: bool) -> &mut Self {
        self.cert_bound = on;
        self
    }

    /// Admits anonymous Listeners for any id (explicit opt-in; unsafe on the internet).
    pub fn allow_anonymous(&mut self) -> &mut Self {
        self.anonymous = Some(Anonymous::AnyId);
        self
    }

    /// Admits anonymous Listeners, but only for these ids (the original CLI's
    /// `-dialer-id` on the public side).
    pub fn allow_anonymous_for(&mut self, ids: Vec<DialerId>) -> &mut Self {
        self.anonymous = Some(Anonymous::Only(ids));
        self
    }

    /// Whether any anonymous registration is possible.
    pub fn anonymous_enabled(&self) -> bool {
        self.anonymous.is_some()
    }

    /// Decides whether a revdial request for `id` with `creds` is admitted.
    ///
    /// Presented credentials are checked first: a wrong token is refused even in
    /// anonymous mode, so a misconfigured Listener learns of it.
    pub fn authenticate(
        &self,
        id: &DialerId,
        creds: &Credentials<'_>,
    ) -> Result<Principal, AuthError> {
        self.admit(id, creds).map(|g| g.principal())
    }

    /// The same decision as [`AuthPolicy::authenticate`], with what admitted the
    /// request.
    pub fn admit(&self, id: &DialerId, creds: &Credentials<'_>) -> Result<Grant, AuthError> {
        if self.cert_bound && creds.cert_identities.iter().any(|i| i == id.as_str()) {
            return Ok(Grant::Certificate);
        }
        if let Some(bearer) = creds.bearer {
            let given = bearer.as_bytes();
            return if self.has_token(id, given) {
                Ok(Grant::Token(given.to_vec()))
            } else {
                Err(AuthError::Denied)
            };
        }
        if self.admits_anonymously(id) {
            return Ok(Grant::Anonymous);
        }
        match &self.anonymous {
            Some(_) => Err(AuthError::Denied),
            None if self.cert_bound && !creds.cert_identities.is_empty() => Err(AuthError::Denied),
            None => Err(AuthError::Missing),
        }
    }

    /// Whether a session of `id` admitted by `grant` (under an earlier policy) is
    /// admitted by this one too: its token is still one of the id's, ids are still
    /// bound to certificates, or anonymous mode still covers the id. A live reload
    /// ends the sessions for which this is false.
    pub fn still_admits(&self, id: &DialerId, grant: &Grant) -> bool {
        match grant {
            Grant::Token(t) => self.has_token(id, t),
            Grant::Certificate => self.cert_bound,
            Grant::Anonymous => self.admits_anonymously(id),
        }
    }

    /// Whether `given` is one of `id`'s tokens, compared in constant time.
    fn has_token(&self, id: &DialerId, given: &[u8]) -> bool {
        let mut ok = subtle::Choice::from(0u8);
        if let Some(tokens) = self.tokens.get(id) {
            for t in tokens {
                ok |= t.as_slice().ct_eq(given);
            }
        }
        bool::from(ok)
    }

    fn admits_anonymously(&self, id: &DialerId) -> bool {
        match &self.anonymous {
            Some(Anonymous::AnyId) => true,
            Some(Anonymous::Only(ids)) => ids.contains(id),
            None => false,
        }
    }
}

/// What to do with a new control stream for an id that already has live sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// Close the live sessions and take their place (a reconnecting Listener).
    Replace,
    /// Stand beside them (several Listeners per id, PROTOCOL.md 4.4).
    Join,
    /// Refuse with `409`: the id is held by a live session the newcomer may not touch.
    Refuse,
}

/// The rule for a new control stream when `id` already has live sessions
/// (PROTOCOL.md 4.2 and 4.4):
///
/// | newcomer | explicit `role=control` | unmarked (Go Listener) |
/// | --- | --- | --- |
/// | authenticated | join | replace |
/// | anonymous | refuse | refuse |
///
/// Anonymous newcomers never replace nor join a live session: otherwise anybody who knows
/// an id could take its traffic. The old session must first be found dead (PING timeout,
/// control stream closed).
pub fn takeover(newcomer: Principal, explicit_control: bool) -> Takeover {
    match (newcomer, explicit_control) {
        (Principal::Anonymous, _) => Takeover::Refuse,
        (Principal::Authenticated, true) => Takeover::Join,
        (Principal::Authenticated, false) => Takeover::Replace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DialerId {
        DialerId::new(s).unwrap()
    }

    #[test]
    fn tokens() {
        let mut p = AuthPolicy::new();
        p.add_token(id("a"), "t1").add_token(id("a"), "t2");
        let c = |t| Credentials {
            bearer: Some(t),
            cert_identities: &[],
        };
        assert_eq!(
            p.authenticate(&id("a"), &c("t1")),
            Ok(Principal::Authenticated)
        );
        assert_eq!(
            p.authenticate(&id("a"), &c("t2")),
            Ok(Principal::Authenticated)
        );
        assert_eq!(p.authenticate(&id("a"), &c("t")), Err(AuthError::Denied));
        assert_eq!(p.authenticate(&id("b"), &c("t1")), Err(AuthError::Denied));
        assert_eq!(
            p.authenticate(&id("a"), &Credentials::default()),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn anonymous_modes() {
        let mut p = AuthPolicy::new();
        p.allow_anonymous_for(vec![id("001")]);
        assert_eq!(
            p.authenticate(&id("001"), &Credentials::default()),
            Ok(Principal::Anonymous)
        );
        assert_eq!(
            p.authenticate(&id("002"), &Credentials::default()),
            Err(AuthError::Denied)
        );
        p.allow_anonymous();
        assert_eq!(
            p.authenticate(&id("002"), &Credentials::default()),
            Ok(Principal::Anonymous)
        );
        // A wrong token is refused even in anonymous mode.
        let c = Credentials {
            bearer: Some("x"),
            cert_identities: &[],
        };
        assert_eq!(p.authenticate(&id("002"), &c), Err(AuthError::Denied));
    }

    #[test]
    fn certificates() {
        let mut p = AuthPolicy::new();
        p.bind_ids_to_certificates(true);
        let ids = vec!["node-1".to_string()];
        let c = Credentials {
            bearer: None,
            cert_identities: &ids,
        };
        assert_eq!(
            p.authenticate(&id("node-1"), &c),
            Ok(Principal::Authenticated)
        );
        assert_eq!(p.authenticate(&id("node-2"), &c), Err(AuthError::Denied));
    }

    #[test]
    fn a_new_policy_keeps_exactly_the_grants_it_still_holds() {
        let mut old = AuthPolicy::new();
        old.add_token(id("a"), "t1")
            .add_token(id("a"), "t2")
            .add_token(id("b"), "t3");
        old.bind_ids_to_certificates(true);
        old.allow_anonymous_for(vec![id("demo")]);
        let grant = |p: &AuthPolicy, i: &str, t: Option<&str>, certs: &[String]| {
            p.admit(
                &id(i),
                &Credentials {
                    bearer: t,
                    cert_identities: certs,
                },
            )
            .unwrap()
        };
        let node = vec!["node".to_string()];
        let a1 = grant(&old, "a", Some("t1"), &[]);
        let a2 = grant(&old, "a", Some("t2"), &[]);
        let b3 = grant(&old, "b", Some("t3"), &[]);
        let cert = grant(&old, "node", None, &node);
        let anon = grant(&old, "demo", None, &[]);
        assert_eq!(cert, Grant::Certificate);
        assert_eq!(anon, Grant::Anonymous);
        assert_eq!(
            format!("{a1:?}"),
            "Token(***)",
            "a token never reaches a log"
        );
        for g in [&a1, &a2] {
            assert!(old.still_admits(&id("a"), g));
        }

        // t1 removed, t3 moved from b to a, certificates off, anonymous kept.
        let mut new = AuthPolicy::new();
        new.add_token(id("a"), "t2").add_token(id("a"), "t3");
        new.allow_anonymous_for(vec![id("demo")]);
        assert!(!new.still_admits(&id("a"), &a1));
        assert!(new.still_admits(&id("a"), &a2));
        assert!(!new.still_admits(&id("b"), &b3));
        assert!(!new.still_admits(&id("node"), &cert));
        assert!(new.still_admits(&id("demo"), &anon));
        // A grant is about its own id only.
        assert!(!new.still_admits(&id("b"), &a2));
        new.allow_anonymous_for(vec![]);
        assert!(!new.still_admits(&id("demo"), &anon));
    }

    #[test]
    fn takeover_table() {
        assert_eq!(takeover(Principal::Anonymous, true), Takeover::Refuse);
        assert_eq!(takeover(Principal::Anonymous, false), Takeover::Refuse);
        assert_eq!(takeover(Principal::Authenticated, true), Takeover::Join);
        assert_eq!(takeover(Principal::Authenticated, false), Takeover::Replace);
    }
}
