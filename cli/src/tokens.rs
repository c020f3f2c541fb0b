//! Client tokens of the public server: `ID TOKEN` lines from a file, `ID=TOKEN` entries
//! from the environment.

use std::path::Path;

use h2rev2_tokio::proto::wire::DialerId;

use crate::error::CliError;

/// Parses one entry, `ID TOKEN` or `ID=TOKEN`.
fn entry(s: &str) -> Result<(DialerId, String), String> {
    // `ID TOKEN` when there is white space (an id may itself contain `=`), else
    // `ID=TOKEN`.
    let s = s.trim();
    let (id, token) = if s.contains(char::is_whitespace) {
        s.split_once(char::is_whitespace)
    } else {
        s.split_once('=')
    }
    .ok_or_else(|| "expected `ID TOKEN` or `ID=TOKEN`".to_string())?;
    let (id, token) = (id.trim(), token.trim());
    let id = DialerId::new(id).map_err(|e| format!("bad id {id:?}: {e}"))?;
    if token.is_empty() {
        return Err(format!("empty token for id {id}"));
    }
    if token.contains(char::is_whitespace) {
        return Err(format!("the token for id {id} contains whitespace"));
    }
    Ok((id, token.to_string()))
}

/// Reads a token file: one `ID TOKEN` (or `ID=TOKEN`) per line; blank lines and lines
/// starting with `#` are ignored.
pub fn from_file(path: &Path) -> Result<Vec<(DialerId, String)>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::config(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(
            entry(line)
                .map_err(|e| CliError::config(format!("{} line {}: {e}", path.display(), n + 1)))?,
        );
    }
    Ok(out)
}

/// Parses `H2REV2_TOKENS`: `ID=TOKEN` (or `ID TOKEN`) entries separated by commas or
/// newlines.
pub fn from_env(value: &str) -> Result<Vec<(DialerId, String)>, CliError> {
    value
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| entry(s).map_err(|e| CliError::config(format!("H2REV2_TOKENS: {e}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        let v = from_env("a=x, b y\nc=z=w").unwrap();
        let v: Vec<_> = v.iter().map(|(i, t)| (i.as_str(), t.as_str())).collect();
        assert_eq!(v, [("a", "x"), ("b", "y"), ("c", "z=w")]);
        // An id may contain `=` in the `ID TOKEN` form.
        let v = from_env("k=v t0k").unwrap();
        assert_eq!((v[0].0.as_str(), v[0].1.as_str()), ("k=v", "t0k"));
        assert!(from_env("a").is_err());
        assert!(from_env("a=").is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "# comment\nweb s3cret\n\nssh  t0ken#1\n").unwrap();
        assert_eq!(from_file(&p).unwrap().len(), 2);
        std::fs::write(&p, "web\n").unwrap();
        let e = from_file(&p).unwrap_err();
        assert!(e.message.contains("line 1"), "{e}");
    }
}
