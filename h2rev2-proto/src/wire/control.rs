//! Control messages (PROTOCOL.md section 3).
//!
//! > UTF-8 JSON objects, one per line, each ended by `\n`, on the control stream in
//! > both directions. [...] Unknown commands and unknown fields are ignored. A line over
//! > 64 KiB, or one that is not a JSON object, is a protocol error.
//!
//! The encoder writes exactly what Go's `encoding/json` writes for the Go package's
//! `controlMsg` struct (fields `command`, `connPath`, `err`, each `omitempty`, in that
//! order, with Go's HTML-safe string escaping), so a byte capture of either
//! implementation is the same.

use bytes::{Buf, BytesMut};

use crate::error::ProtocolError;

/// The longest control line accepted, newline excluded: 64 KiB.
pub const MAX_CONTROL_LINE: usize = 64 * 1024;

/// A control command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Dialer to Listener: open one data stream now.
    ConnReady,
    /// Dialer to Listener: no-op that keeps NAT mappings warm.
    KeepAlive,
    /// Listener to Dialer: the data stream for a `conn-ready` could not be opened.
    PickupFailed,
    /// Dialer to Listener (our extension): this server is going away; open a new
    /// session (another replica behind the same address takes it) and keep this one
    /// until the server ends it. Go Listeners ignore it.
    GoingAway,
    /// A command this version does not know; ignored by both machines.
    Unknown(String),
}

impl Command {
    /// The wire name of the command.
    pub fn as_str(&self) -> &str {
        match self {
            Command::ConnReady => "conn-ready",
            Command::KeepAlive => "keep-alive",
            Command::PickupFailed => "pickup-failed",
            Command::GoingAway => "going-away",
            Command::Unknown(s) => s,
        }
    }

    fn from_wire(s: &str) -> Command {
        match s {
            "conn-ready" => Command::ConnReady,
            "keep-alive" => Command::KeepAlive,
            "pickup-failed" => Command::PickupFailed,
            "going-away" => Command::GoingAway,
            other => Command::Unknown(other.to_string()),
        }
    }
}

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMessage {
    /// The command.
    pub command: Command,
    /// `connPath`: the exact-match token (PROTOCOL.md 4.2); empty means none.
    pub conn_path: String,
    /// `err`: the reason, with `pickup-failed`; empty means none.
    pub err: String,
}

impl ControlMessage {
    /// A bare `conn-ready` (what the Go Dialer sends).
    pub fn conn_ready(token: Option<&str>) -> Self {
        ControlMessage {
            command: Command::ConnReady,
            conn_path: token.unwrap_or_default().to_string(),
            err: String::new(),
        }
    }

    /// A `keep-alive`.
    pub fn keep_alive() -> Self {
        ControlMessage {
            command: Command::KeepAlive,
            conn_path: String::new(),
            err: String::new(),
        }
    }

    /// A `going-away` (our extension, [`Command::GoingAway`]).
    pub fn going_away() -> Self {
        ControlMessage {
            command: Command::GoingAway,
            conn_path: String::new(),
            err: String::new(),
        }
    }

    /// A `pickup-failed` with its reason and, from a Listener of ours, the token of the
    /// `conn-ready` it answers.
    pub fn pickup_failed(token: Option<&str>, err: &str) -> Self {
        ControlMessage {
            command: Command::PickupFailed,
            conn_path: token.unwrap_or_default().to_string(),
            err: err.to_string(),
        }
    }

    /// Appends the message and its `\n` to `out`.
    ///
    /// ```
    /// use h2rev2_proto::wire::ControlMessage;
    /// let mut out = Vec::new();
    /// ControlMessage::pickup_failed(None, "dial <x> & fail").encode(&mut out);
    /// assert_eq!(
    ///     out,
    ///     b"{\"command\":\"pickup-failed\",\"err\":\"dial \\u003cx\\u003e \\u0026 fail\"}\n"
    /// );
    /// ```
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (name, value) in [
            ("command", self.command.as_str()),
            ("connPath", self.conn_path.as_str()),
            ("err", self.err.as_str()),
        ] {
            if value.is_empty() {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            go_json_string(value, out);
        }
        out.extend_from_slice(b"}\n");
    }

    /// The encoded message as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        self.encode(&mut out);
        out
    }

    fn from_json(line: &[u8]) -> Result<ControlMessage, ProtocolError> {
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| ProtocolError::InvalidJson(e.to_string()))?;
        let serde_json::Value::Object(map) = value else {
            return Err(ProtocolError::NotAnObject);
        };
        let field = |name: &'static str| -> Result<String, ProtocolError> {
            match map.get(name) {
                None | Some(serde_json::Value::Null) => Ok(String::new()),
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(ProtocolError::BadField(name)),
            }
        };
        Ok(ControlMessage {
            command: Command::from_wire(&field("command")?),
            conn_path: field("connPath")?,
            err: field("err")?,
        })
    }
}

/// Writes `s` as a JSON string the way Go's `encoding/json` does (HTML-safe escaping).
fn go_json_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                let b = c as u32 as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// An incremental control-line decoder.
///
/// Feed it bytes as they arrive, split anywhere, with [`Decoder::push`]; take messages
/// with [`Decoder::next_message`]. Blank lines are skipped. After an error the decoder
/// is poisoned and returns the same error forever: the stream must be reset.
///
/// ```
/// use h2rev2_proto::wire::{Command, Decoder};
/// let mut d = Decoder::new();
/// d.push(b"{\"command\":\"conn-r");
/// assert!(d.next_message().is_none());
/// d.push(b"eady\",\"new\":1}\n{\"command\":\"keep-alive\"}\n");
/// assert_eq!(d.next_message().unwrap().unwrap().command, Command::ConnReady);
/// assert_eq!(d.next_message().unwrap().unwrap().command, Command::KeepAlive);
/// assert!(d.next_message().is_none());
/// ```
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    poisoned: Option<ProtocolError>,
}

impl Decoder {
    /// A new decoder.
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Appends received bytes. Bytes after a poisoning error are dropped.
    pub fn push(&mut self, data: &[u8]) {
        if self.poisoned.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, an error, or `None` when more bytes are needed.
    pub fn next_message(&mut self) -> Option<Result<ControlMessage, ProtocolError>> {
        loop {
            if let Some(e) = &self.poisoned {
                return Some(Err(e.clone()));
            }
            let Some(pos) = memchr::memchr(b'\n', &self.buf[self.scanned..]) else {
                self.scanned = self.buf.len();
                if self.buf.len() > MAX_CONTROL_LINE {
                    return Some(Err(self.poison(ProtocolError::LineTooLong {
                        limit: MAX_CONTROL_LINE,
                    })));
                }
                return None;
            };
            let end = self.scanned + pos;
            self.scanned = 0;
            if end > MAX_CONTROL_LINE {
                return Some(Err(self.poison(ProtocolError::LineTooLong {
                    limit: MAX_CONTROL_LINE,
                })));
            }
            let line = self.buf.split_to(end + 1);
            let body = &line[..end];
            if body.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            return Some(ControlMessage::from_json(body).map_err(|e| self.poison(e)));
        }
    }

    fn poison(&mut self, e: ProtocolError) -> ProtocolError {
        self.poisoned = Some(e.clone());
        self.buf.clear();
        self.buf.advance(0);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn go_bytes() {
        assert_eq!(
            ControlMessage::conn_ready(None).to_bytes(),
            b"{\"command\":\"conn-ready\"}\n"
        );
        assert_eq!(
            ControlMessage::keep_alive().to_bytes(),
            b"{\"command\":\"keep-alive\"}\n"
        );
        assert_eq!(
            ControlMessage::conn_ready(Some("42")).to_bytes(),
            b"{\"command\":\"conn-ready\",\"connPath\":\"42\"}\n"
        );
        assert_eq!(
            ControlMessage::pickup_failed(None, "a\"b\\c\n\u{1}\u{2028}é").to_bytes(),
            "{\"command\":\"pickup-failed\",\"err\":\"a\\\"b\\\\c\\n\\u0001\\u2028é\"}\n"
                .as_bytes()
        );
    }

    #[test]
    fn errors() {
        let mut d = Decoder::new();
        d.push(b"[1,2]\n");
        assert_eq!(d.next_message(), Some(Err(ProtocolError::NotAnObject)));
        // Poisoned.
        d.push(b"{\"command\":\"keep-alive\"}\n");
        assert_eq!(d.next_message(), Some(Err(ProtocolError::NotAnObject)));

        let mut d = Decoder::new();
        d.push(b"{\"command\":1}\n");
        assert_eq!(
            d.next_message(),
            Some(Err(ProtocolError::BadField("command")))
        );

        let mut d = Decoder::new();
        d.push(&vec![b' '; MAX_CONTROL_LINE + 1]);
        assert_eq!(
            d.next_message(),
            Some(Err(ProtocolError::LineTooLong {
                limit: MAX_CONTROL_LINE
            }))
        );

        let mut d = Decoder::new();
        d.push(b"\n  \r\n{\"command\":\"x\",\"connPath\":null}\n");
        assert_eq!(
            d.next_message().unwrap().unwrap().command,
            Command::Unknown("x".into())
        );
    }

    #[test]
    fn exactly_max_line_is_accepted() {
        let mut line = b"{\"command\":\"keep-alive\",\"pad\":\"".to_vec();
        while line.len() < MAX_CONTROL_LINE - 2 {
            line.push(b'x');
        }
        line.extend_from_slice(b"\"}");
        assert_eq!(line.len(), MAX_CONTROL_LINE);
        line.push(b'\n');
        let mut d = Decoder::new();
        d.push(&line);
        assert!(d.next_message().unwrap().is_ok());
    }

    fn arb_msg() -> impl Strategy<Value = ControlMessage> {
        (
            prop_oneof![
                Just(Command::ConnReady),
                Just(Command::KeepAlive),
                Just(Command::PickupFailed),
                "[a-z-]{1,12}".prop_map(|s| Command::from_wire(&s)),
            ],
            ".{0,20}",
            "\\PC{0,30}",
        )
            .prop_map(|(command, conn_path, err)| ControlMessage {
                command,
                conn_path,
                err,
            })
    }

    fn decode_all(chunks: &[&[u8]]) -> Vec<Result<ControlMessage, ProtocolError>> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(m) = d.next_message() {
                let stop = m.is_err();
                out.push(m);
                if stop {
                    return out;
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn roundtrip_any_split(msgs in proptest::collection::vec(arb_msg(), 0..8), cuts in proptest::collection::vec(any::<usize>(), 0..10)) {
            let mut wire = Vec::new();
            for m in &msgs { m.encode(&mut wire); }
            let mut cut: Vec<usize> = cuts.iter().map(|c| if wire.is_empty() { 0 } else { c % wire.len() }).collect();
            cut.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for c in cut { chunks.push(&wire[last..c]); last = c; }
            chunks.push(&wire[last..]);
            let got: Vec<ControlMessage> = decode_all(&chunks).into_iter().map(|r| r.unwrap()).collect();
            prop_assert_eq!(got, msgs);
        }

        #[test]
        fn arbitrary_bytes_same_result_whatever_the_split(data in proptest::collection::vec(any::<u8>(), 0..300), split in any::<usize>()) {
            let whole = decode_all(&[&data]);
            let s = if data.is_empty() { 0 } else { split % data.len() };
            let parts = decode_all(&[&data[..s], &data[s..]]);
            prop_assert_eq!(whole, parts);
        }

        #[test]
        fn encoding_is_json_serde_can_read(m in arb_msg()) {
            let bytes = m.to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(v["command"].as_str().unwrap(), m.command.as_str());
        }
    }
}
