//! Dialer ids.

use std::fmt;

/// The longest dialer id accepted, in bytes.
///
/// An id travels in a URL query, in a `Host` header (`Host: {id}` on proxied requests,
/// as the Go package does), and in logs, so it is kept short.
pub const MAX_ID_LEN: usize = 253;

/// A validated dialer id: the name a Listener registers under.
///
/// Valid ids are 1 to [`MAX_ID_LEN`] bytes of printable, non-whitespace characters
/// (no ASCII control characters, no spaces, no `/`), so an id can always be written in
/// a path segment, a header and a log line without escaping surprises.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialerId(String);

/// Why a string is not a valid dialer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    /// The id is empty.
    Empty,
    /// The id is longer than [`MAX_ID_LEN`] bytes.
    TooLong(usize),
    /// The id contains a character that is not allowed (control, whitespace or `/`).
    BadChar(char),
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => f.write_str("dialer id is empty"),
            IdError::TooLong(n) => {
                write!(f, "dialer id is {n} bytes long, the limit is {MAX_ID_LEN}")
            }
            IdError::BadChar(c) => write!(f, "dialer id contains the character {c:?}"),
        }
    }
}

impl std::error::Error for IdError {}

impl DialerId {
    /// Validates `s` as a dialer id.
    ///
    /// ```
    /// use h2rev2_proto::wire::{DialerId, IdError};
    /// assert_eq!(DialerId::new("001").unwrap().as_str(), "001");
    /// assert_eq!(DialerId::new(""), Err(IdError::Empty));
    /// assert_eq!(DialerId::new("a b"), Err(IdError::BadChar(' ')));
    /// ```
    pub fn new(s: impl Into<String>) -> Result<DialerId, IdError> {
        let s = s.into();
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(IdError::TooLong(s.len()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| c.is_control() || c.is_whitespace() || *c == '/')
        {
            return Err(IdError::BadChar(c));
        }
        Ok(DialerId(s))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DialerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for DialerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for DialerId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        DialerId::new(s)
    }
}

impl AsRef<str> for DialerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert!(DialerId::new("x".repeat(MAX_ID_LEN)).is_ok());
        assert_eq!(
            DialerId::new("x".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong(MAX_ID_LEN + 1))
        );
        assert_eq!(DialerId::new("a\u{0}"), Err(IdError::BadChar('\0')));
        assert_eq!(DialerId::new("a/b"), Err(IdError::BadChar('/')));
        assert!(DialerId::new("émile-01.example").is_ok());
    }
}
