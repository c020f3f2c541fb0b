//! Control-line decoder: split invariance, a line-by-line reference, and the encoder's
//! round trip.

use arbitrary::Arbitrary;
use h2rev2_proto::ProtocolError;
use h2rev2_proto::wire::{Command, ControlMessage, Decoder, MAX_CONTROL_LINE};

/// Bytes, and where to cut them.
#[derive(Debug, Clone, Arbitrary)]
pub struct Input {
    /// Cut points (taken modulo the length).
    pub cuts: Vec<u16>,
    /// Repeat the bytes this many more times (modulo 32), so lines over the 64 KiB
    /// bound are reachable from short inputs.
    pub repeat: u8,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Input {
    /// Parses the target's input format (see `control_decoder` in lib.rs).
    pub fn from_bytes(data: &[u8]) -> Input {
        let repeat = data.first().copied().unwrap_or(0);
        let n = data.get(1).copied().unwrap_or(0) as usize;
        let rest = data.get(2..).unwrap_or(&[]);
        let n = n.min(rest.len() / 2);
        let cuts = rest[..2 * n]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Input {
            cuts,
            repeat,
            data: rest[2 * n..].to_vec(),
        }
    }
}

type Outcome = Vec<Result<ControlMessage, ProtocolError>>;

/// Feeds `chunks` in order, draining after each, up to the first error.
pub fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Outcome, usize) {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.push(c);
        while let Some(m) = d.next_message() {
            let stop = m.is_err();
            out.push(m);
            if stop {
                return (out, d.buffered());
            }
        }
        assert!(
            d.buffered() <= MAX_CONTROL_LINE,
            "the decoder holds {} bytes without complaining",
            d.buffered()
        );
    }
    (out, d.buffered())
}

/// What the decoder must produce, computed line by line.
pub fn reference(data: &[u8]) -> Outcome {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        let Some(pos) = rest.iter().position(|b| *b == b'\n') else {
            if rest.len() > MAX_CONTROL_LINE {
                out.push(Err(ProtocolError::LineTooLong {
                    limit: MAX_CONTROL_LINE,
                }));
            }
            return out;
        };
        let line = &rest[..pos];
        rest = &rest[pos + 1..];
        if line.len() > MAX_CONTROL_LINE {
            out.push(Err(ProtocolError::LineTooLong {
                limit: MAX_CONTROL_LINE,
            }));
            return out;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let r = parse_line(line);
        let stop = r.is_err();
        out.push(r);
        if stop {
            return out;
        }
    }
}

fn parse_line(line: &[u8]) -> Result<ControlMessage, ProtocolError> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| ProtocolError::InvalidJson(e.to_string()))?;
    let serde_json::Value::Object(map) = v else {
        return Err(ProtocolError::NotAnObject);
    };
    let field = |name: &'static str| match map.get(name) {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ProtocolError::BadField(name)),
    };
    let command = match field("command")?.as_str() {
        "conn-ready" => Command::ConnReady,
        "keep-alive" => Command::KeepAlive,
        "pickup-failed" => Command::PickupFailed,
        "going-away" => Command::GoingAway,
        other => Command::Unknown(other.to_string()),
    };
    Ok(ControlMessage {
        command,
        conn_path: field("connPath")?,
        err: field("err")?,
    })
}

/// The checks.
pub fn check(input: &Input) {
    let mut data = input.data.clone();
    for _ in 0..input.repeat % 32 {
        data.extend_from_slice(&input.data);
    }
    let (whole, _) = decode_chunks([data.as_slice()]);
    assert_eq!(
        whole,
        reference(&data),
        "decoder and line reference disagree"
    );

    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|c| {
            if data.is_empty() {
                0
            } else {
                *c as usize % (data.len() + 1)
            }
        })
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut last = 0;
    for c in cuts {
        chunks.push(&data[last..c]);
        last = c;
    }
    chunks.push(&data[last..]);
    let (split, _) = decode_chunks(chunks);
    assert_eq!(
        whole, split,
        "the result depends on where the bytes were cut"
    );

    if data.len() <= 2048 {
        let (bytewise, _) = decode_chunks(data.chunks(1));
        assert_eq!(whole, bytewise, "byte-by-byte decoding differs");
    }

    for m in whole.iter().flatten() {
        let enc = m.to_bytes();
        assert_eq!(enc.last(), Some(&b'\n'));
        assert!(
            !enc[..enc.len() - 1].contains(&b'\n'),
            "an encoded message spans lines"
        );
        assert!(
            !enc.iter().any(|b| matches!(b, b'<' | b'>' | b'&')),
            "Go escapes <, > and & in JSON strings"
        );
        let (again, rest) = decode_chunks([enc.as_slice()]);
        assert_eq!(rest, 0);
        if enc.len() - 1 <= MAX_CONTROL_LINE {
            assert_eq!(again, vec![Ok(m.clone())], "encode/decode round trip");
        }
    }
}
