//! Errors, typed by who is to blame.
//!
//! * [`ProtocolError`]: the peer broke the wire contract (a malformed control line, a bad
//!   request). The one stream or session concerned fails; nothing else does.
//! * [`Misuse`]: the caller (the adapter) used the API wrongly, for example by reusing a
//!   stream id. This is a bug in the adapter, reported instead of panicking.
//! * [`LimitError`]: a configured limit was reached. The request is refused with a status.

use std::fmt;

/// The peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A control line was longer than [`crate::wire::MAX_CONTROL_LINE`] bytes.
    LineTooLong {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A control line was not valid UTF-8 JSON.
    InvalidJson(String),
    /// A control line was JSON, but not an object.
    NotAnObject,
    /// A known field had the wrong JSON type.
    BadField(&'static str),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::LineTooLong { limit } => {
                write!(f, "control line longer than {limit} bytes")
            }
            ProtocolError::InvalidJson(e) => write!(f, "control line is not valid JSON: {e}"),
            ProtocolError::NotAnObject => f.write_str("control line is not a JSON object"),
            ProtocolError::BadField(name) => {
                write!(f, "control field `{name}` has the wrong type")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The caller used the API in a way the contract forbids (an adapter bug).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misuse(pub &'static str);

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "API misuse: {}", self.0)
    }
}

impl std::error::Error for Misuse {}

/// Which limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    /// The total number of sessions on the server.
    Sessions,
    /// The number of sessions (Listeners) holding one id.
    SessionsPerId,
    /// The number of pending dials for one id.
    PendingDials,
    /// The number of parked spare streams in one session.
    Spares,
}

impl LimitError {
    /// The HTTP status that answers this limit (PROTOCOL.md 2.1).
    pub fn status(self) -> u16 {
        match self {
            LimitError::Sessions => 503,
            LimitError::SessionsPerId | LimitError::PendingDials | LimitError::Spares => 429,
        }
    }
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitError::Sessions => "too many sessions on this server",
            LimitError::SessionsPerId => "too many sessions for this id",
            LimitError::PendingDials => "too many pending dials for this id",
            LimitError::Spares => "too many spare streams for this session",
        })
    }
}

impl std::error::Error for LimitError {}
