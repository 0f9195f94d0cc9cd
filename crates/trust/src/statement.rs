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
//! version 42                       (optional: a number the signer raises per name)
//! rollback-until 2026-12-20T00:00:00Z   (optional: approves going back to this image)
//! ```
//!
//! The two optional lines are anti-rollback ([`super::freshness`]). A statement
//! without them is printed and parsed exactly as before they existed, so signatures
//! made earlier keep verifying over the same bytes.

use crate::tree::Hash;

/// The first line of every statement.
const HEADER: &str = "imager-image-signature 1";

/// What a signature says about an image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Statement {
    /// The image ID: the blake3 of its canonical manifest text (serialised as hex).
    #[serde(serialize_with = "hex_hash")]
    pub image: Hash,
    /// The name the image is approved under (a store name: letters, digits, `-_.`).
    pub name: String,
    /// Free text on one line, possibly empty ("approved for prod").
    pub note: String,
    /// When it was signed, in seconds since the epoch (what the signer's clock said).
    pub time: i64,
    /// A number the signer raises with each release of a name: when two statements
    /// both have one, it orders them instead of their times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The signer approves this image replacing a newer one of its name on a host,
    /// until then (seconds since the epoch): an explicit, expiring rollback approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_until: Option<i64>,
}

fn hex_hash<S: serde::Serializer>(h: &Hash, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&h.to_hex())
}

impl Statement {
    /// The statement's text, exactly the bytes that are signed.
    pub fn print(&self) -> String {
        let mut s = format!(
            "{HEADER}\nimage {}\nname {}\nnote {}\ntime {}\n",
            self.image.to_hex(),
            self.name,
            self.note,
            crate::time::utc(self.time)
        );
        if let Some(v) = self.version {
            s += &format!("version {v}\n");
        }
        if let Some(t) = self.rollback_until {
            s += &format!("rollback-until {}\n", crate::time::utc(t));
        }
        s
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
        // The optional lines, each at most once and in this order (so that a statement
        // has one text: the one `print` makes).
        let mut rest = lines.peekable();
        let mut optional = |key: &str| {
            rest.next_if(|l| l.starts_with(key))
                .map(|l| l[key.len()..].to_string())
        };
        let version = match optional("version ") {
            None => None,
            Some(v)
                if v == "0" || (!v.starts_with('0') && v.bytes().all(|c| c.is_ascii_digit())) =>
            {
                Some(v.parse().map_err(|_| format!("bad version {v:?}"))?)
            }
            Some(v) => {
                return Err(format!(
                    "bad version {v:?}: a whole number, no leading zeros"
                ))
            }
        };
        let rollback_until = match optional("rollback-until ") {
            None => None,
            Some(t) => Some(parse_utc(&t).ok_or_else(|| format!("bad rollback-until time {t:?}"))?),
        };
        if let Some(line) = rest.next() {
            return Err(format!(
                "the statement has lines after \"time\" that are not \"version\" then \"rollback-until\": {line:?}"
            ));
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
            version,
            rollback_until,
        })
    }
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (what [`parse_utc`] reads).
pub fn format_utc(t: i64) -> String {
    crate::time::utc(t)
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
    ok.then(|| crate::time::days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s)
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
            version: None,
            rollback_until: None,
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
            Ok(empty_note.clone())
        );
        let both = Statement {
            version: Some(7),
            rollback_until: Some(1_796_300_000),
            ..empty_note
        };
        let text = both.print();
        assert!(
            text.ends_with("\nversion 7\nrollback-until 2026-12-03T12:13:20Z\n"),
            "{text}"
        );
        assert_eq!(Statement::parse(text.as_bytes()), Ok(both));
    }

    /// Statements signed before `version` and `rollback-until` existed are the same
    /// bytes when read and printed again: their signatures stay valid.
    #[test]
    fn a_statement_without_the_optional_lines_prints_as_before() {
        let old = "imager-image-signature 1\nimage ".to_string()
            + &Hash::of(b"x").to_hex()
            + "\nname base\nnote approved for prod\ntime 2026-12-02T14:18:01Z\n";
        let s = Statement::parse(old.as_bytes()).unwrap();
        assert_eq!((s.version, s.rollback_until), (None, None));
        assert_eq!(s.print(), old);
    }

    #[test]
    fn damaged_statements_say_what_is_wrong() {
        let good = Statement {
            image: Hash::of(b"x"),
            name: "base".into(),
            note: String::new(),
            time: 0,
            version: None,
            rollback_until: None,
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
            (good.clone() + "version 01\n", "bad version"),
            (good.clone() + "version -1\n", "bad version"),
            (
                good.clone() + "version 99999999999999999999\n",
                "bad version",
            ),
            (good.clone() + "rollback-until soon\n", "bad rollback-until"),
            (
                good.clone() + "rollback-until 2026-01-01T00:00:00Z\nversion 2\n",
                "lines after",
            ),
            (good.clone() + "version 1\nversion 2\n", "lines after"),
            (good.trim_end().to_string(), "newline"),
        ] {
            let e = Statement::parse(text.as_bytes()).unwrap_err();
            assert!(e.contains(says), "{e} (wanted {says})");
        }
        assert_eq!(parse_utc("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_utc("1970-01-01T00:00:01Z"), Some(1));
    }
}
