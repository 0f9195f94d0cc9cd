//! The text an image signature signs: the image ID and what the signer approved it for
//! (a name, a note, a time). A short, line-based text, so that a person who verifies a
//! signature with `ssh-keygen -Y verify` can read what they verified.
//!
//! ```text
//! imager-image-signature 1
//! image 5c1f…(64 hex digits: the blake3 of the canonical manifest)
//! name base
//! note approved for prod
//! time 2026-12-02T18:40:00Z
//! ```

use crate::tree::Hash;

/// The first line of every statement.
const HEADER: &str = "imager-image-signature 1";

/// What a signature says about an image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Statement {
    #[serde(serialize_with = "hex_hash")]
    pub image: Hash,
    /// The name the image is approved under (a store name: letters, digits, `-_.`).
    pub name: String,
    /// Free text on one line, possibly empty ("approved for prod").
    pub note: String,
    /// When it was signed, in seconds since the epoch (what the signer's clock said).
    pub time: i64,
}

fn hex_hash<S: serde::Serializer>(h: &Hash, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&h.to_hex())
}

impl Statement {
    /// The statement's text, exactly the bytes that are signed.
    pub fn print(&self) -> String {
        format!(
            "{HEADER}\nimage {}\nname {}\nnote {}\ntime {}\n",
            self.image.to_hex(),
            self.name,
            self.note,
            crate::review::packages::chrono_free_utc(self.time)
        )
    }

    /// Checks what [`Statement::print`] can print: one line each, no control characters.
    pub fn check_fields(name: &str, note: &str) -> std::result::Result<(), String> {
        let bad = |s: &str| s.chars().any(|c| c.is_control());
        if name.is_empty() || bad(name) || name.contains(' ') {
            return Err(format!("bad name {name:?}: one word without spaces"));
        }
        if bad(note) {
            return Err(format!("bad note {note:?}: one line of text"));
        }
        Ok(())
    }

    /// Parses a statement; the reason says which line is wrong.
    pub fn parse(text: &[u8]) -> std::result::Result<Statement, String> {
        let text = std::str::from_utf8(text).map_err(|_| "the statement is not UTF-8")?;
        let mut lines = text.split_terminator('\n');
        if lines.next() != Some(HEADER) {
            return Err(format!("the statement does not start with {HEADER:?}"));
        }
        let mut field = |key: &str| -> std::result::Result<String, String> {
            let line = lines
                .next()
                .ok_or_else(|| format!("the statement has no {key:?} line"))?;
            line.strip_prefix(key)
                .and_then(|r| r.strip_prefix(' ').or((r.is_empty()).then_some("")))
                .map(String::from)
                .ok_or_else(|| format!("expected a {key:?} line, found {line:?}"))
        };
        let image = field("image")?;
        let image = Hash::from_hex(&image).ok_or_else(|| format!("bad image ID {image:?}"))?;
        let name = field("name")?;
        let note = field("note")?;
        let time = field("time")?;
        let time = parse_utc(&time).ok_or_else(|| format!("bad time {time:?}"))?;
        if lines.next().is_some() {
            return Err("the statement has lines after \"time\"".into());
        }
        if !text.ends_with('\n') {
            return Err("the statement does not end with a newline".into());
        }
        Statement::check_fields(&name, &note)?;
        Ok(Statement {
            image,
            name,
            note,
            time,
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` to seconds since the epoch.
pub fn parse_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    civil_seconds(
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    )
}

/// Seconds since the epoch of a UTC date and time, if every field is in range.
pub(crate) fn civil_seconds(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    let ok = (1..=9999).contains(&y)
        && (1..=12).contains(&mo)
        && (1..=31).contains(&d)
        && (0..24).contains(&h)
        && (0..60).contains(&mi)
        && (0..=60).contains(&s);
    ok.then(|| crate::deb822::days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_reads_back_as_printed() {
        let s = Statement {
            image: Hash::of(b"x"),
            name: "base".into(),
            note: "approved for prod".into(),
            time: 1_796_221_081,
        };
        let text = s.print();
        assert!(text.ends_with("\ntime 2026-12-02T14:18:01Z\n"), "{text}");
        assert_eq!(Statement::parse(text.as_bytes()), Ok(s.clone()));
        let empty_note = Statement {
            note: String::new(),
            ..s
        };
        assert_eq!(
            Statement::parse(empty_note.print().as_bytes()),
            Ok(empty_note)
        );
    }

    #[test]
    fn damaged_statements_say_what_is_wrong() {
        let good = Statement {
            image: Hash::of(b"x"),
            name: "base".into(),
            note: String::new(),
            time: 0,
        }
        .print();
        for (text, says) in [
            (
                good.replace("imager-image-signature 1", "other"),
                "does not start",
            ),
            (good.replace("name base", "name"), "bad name"),
            (
                good.replace("\nnote ", "\nnotes "),
                "expected a \"note\" line",
            ),
            (good.replace("1970", "19x0"), "bad time"),
            (good.clone() + "extra\n", "lines after"),
            (good.trim_end().to_string(), "newline"),
        ] {
            let e = Statement::parse(text.as_bytes()).unwrap_err();
            assert!(e.contains(says), "{e} (wanted {says})");
        }
        assert_eq!(parse_utc("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_utc("1970-01-01T00:00:01Z"), Some(1));
    }
}
