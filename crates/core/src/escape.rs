//! The escaping used for paths, link targets and xattr names in the manifest text.
//!
//! A manifest line is split on spaces and `=`, and must stay one line, so every byte
//! outside printable ASCII (0x21..=0x7e), and the backslash itself, is written as `\xHH`
//! with two lowercase hex digits. Xattr names also escape `=`. Everything else is
//! literal, so ordinary paths read as themselves. Escaping is a bijection: any byte string
//! (non-UTF-8, spaces, newlines) round-trips, and there is exactly one escaped form of
//! each, which the image ID relies on.

/// Escapes `bytes` for a path or link target.
pub fn escape(bytes: &[u8]) -> String {
    escape_with(bytes, b"")
}

/// Escapes `bytes`, also escaping every byte listed in `extra`.
pub fn escape_with(bytes: &[u8], extra: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x21..=0x7e).contains(&b) && b != b'\\' && !extra.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Makes text from outside (an error message of a parser, which may quote the bytes it
/// choked on) safe for a terminal: every control character (C0, DEL, C1) becomes `\xHH`,
/// the rest, spaces and backslashes included, stays as it is. Not reversible, and not
/// meant to be: it is for messages, not names.
pub fn escape_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Reverses [`escape_with`]; rejects anything that `escape_with` would not have produced
/// (so a manifest has one spelling only), returning a reason.
pub fn unescape_with(text: &str, extra: &[u8]) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' {
            let hex = bytes
                .get(i + 1..i + 4)
                .filter(|h| h[0] == b'x')
                .ok_or_else(|| format!("bad escape at byte {i} of {text:?}"))?;
            let v = parse_hex_byte(&hex[1..])
                .ok_or_else(|| format!("bad escape at byte {i} of {text:?}"))?;
            if (0x21..=0x7e).contains(&v) && v != b'\\' && !extra.contains(&v) {
                return Err(format!(
                    "needless escape \\x{v:02x} at byte {i} of {text:?} (not canonical)"
                ));
            }
            out.push(v);
            i += 4;
        } else if (0x21..=0x7e).contains(&b) && !extra.contains(&b) {
            out.push(b);
            i += 1;
        } else {
            return Err(format!("unescaped byte 0x{b:02x} at byte {i} of {text:?}"));
        }
    }
    Ok(out)
}

/// Reverses [`escape`]; rejects anything that `escape` would not have produced, returning
/// a reason.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    unescape_with(text, b"")
}

fn parse_hex_byte(h: &[u8]) -> Option<u8> {
    // Lowercase only: one spelling per byte.
    let d = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(d(*h.first()?)? << 4 | d(*h.get(1)?)?)
}

/// `text` as one word of a POSIX shell command line (single-quoted): for commands that
/// another program runs with `sh -c` (ssh's remote command, mmdebstrap's hooks).
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255u8).collect();
        let e = escape(&all);
        assert!(!e.contains(' ') && !e.contains('\n'));
        assert_eq!(unescape(&e).unwrap(), all);
    }

    #[test]
    fn ordinary_paths_stay_readable() {
        assert_eq!(
            escape(b"/usr/lib/x86_64-linux-gnu/libc.so.6"),
            "/usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(escape(b"/a b\n\\"), "/a\\x20b\\x0a\\x5c");
        assert_eq!(escape_with(b"a=b", b"="), "a\\x3db");
    }

    #[test]
    fn messages_lose_their_control_characters_only() {
        assert_eq!(
            escape_message("bad \u{1b}[2J field \\ \u{9b}31m é\n"),
            "bad \\x1b[2J field \\ \\x9b31m é\\x0a"
        );
    }

    #[test]
    fn non_canonical_spellings_are_rejected() {
        assert!(unescape("\\x41").is_err());
        assert!(unescape("\\x0A").is_err());
        assert!(unescape("\\x0").is_err());
        assert!(unescape_with("a=b", b"=").is_err());
    }
}
