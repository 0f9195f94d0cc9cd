//! Anti-rollback and freshness: what TUF and Uptane call rollback and freeze attacks.
//! A signature says "this image, approved as this name, at this time": without a memory
//! a host would take any image ever approved, the known-vulnerable ones included, from
//! a controller limited to the protocol. So a host remembers, per name, the newest
//! statement it accepted ([`Newest`], in the agent's state directory) and refuses an
//! image whose statements are all older, unless a signer approved that rollback
//! explicitly (a statement with `rollback-until`, which expires); and a policy's
//! `max_age` refuses statements signed too long ago (a frozen controller that keeps
//! offering old approvals).
//!
//! Ordering: two statements that both carry a `version` are ordered by it (the signer's
//! own monotonic counter, immune to a wrong clock); otherwise by their times. A
//! statement with `rollback-until` is an approval to go back, not a release: it never
//! counts as newer, and never moves the record.

use super::Verified;
use crate::time::utc;
use crate::tree::Hash;
use std::collections::{BTreeMap, BTreeSet};

/// The first line of the record.
const HEADER: &str = "# syncer anti-rollback record: the newest signed statement accepted per name";

/// The newest statement a host accepted for one name, and the image it was for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// When the statement was signed, seconds since the epoch (the signer's clock).
    pub time: i64,
    /// The statement's `version`, if it had one.
    pub version: Option<u64>,
    /// The image the statement approved.
    pub image: Hash,
}

impl Mark {
    fn describe(&self) -> String {
        format!("signed {}{}", utc(self.time), version_text(self.version))
    }
}

fn version_text(v: Option<u64>) -> String {
    v.map(|v| format!(" (version {v})")).unwrap_or_default()
}

/// Whether a statement of `time` and `version` is older than `mark`: by version when
/// both have one and they differ, else by time.
pub fn is_older(time: i64, version: Option<u64>, mark: &Mark) -> bool {
    match (version, mark.version) {
        (Some(a), Some(b)) if a != b => a < b,
        _ => time < mark.time,
    }
}

/// What a host remembers: the newest accepted statement per name, and the image it ran
/// before its last commit (the one a rollback goes back to, taken again without a
/// rollback approval: see [`Newest::after`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Newest {
    /// Per name, the newest statement accepted for it (rollback approvals never count).
    pub names: BTreeMap<String, Mark>,
    /// The image the host ran before its last commit (`None` before any, or when it ran
    /// none).
    pub way_back: Option<Hash>,
}

impl Newest {
    /// The record's text: a comment, then `newest NAME TIME VERSION|- IMAGE` per name
    /// and `way-back IMAGE`.
    pub fn print(&self) -> String {
        let mut s = format!("{HEADER}\n");
        for (name, m) in &self.names {
            let v = m.version.map_or("-".to_string(), |v| v.to_string());
            s += &format!("newest {name} {} {v} {}\n", utc(m.time), m.image);
        }
        if let Some(w) = self.way_back {
            s += &format!("way-back {w}\n");
        }
        s
    }

    /// Reads what [`Newest::print`] writes (comments and blank lines skipped); the error
    /// names the line it cannot read.
    pub fn parse(text: &str) -> std::result::Result<Newest, String> {
        let mut n = Newest::default();
        for (i, line) in text.lines().enumerate() {
            let bad = || format!("line {}: cannot read {line:?}", i + 1);
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                [] | [""] => {}
                [c, ..] if c.starts_with('#') => {}
                ["newest", name, time, version, image] => {
                    let mark = Mark {
                        time: super::statement::parse_utc(time).ok_or_else(bad)?,
                        version: match *version {
                            "-" => None,
                            v => Some(v.parse().map_err(|_| bad())?),
                        },
                        image: Hash::from_hex(image).ok_or_else(bad)?,
                    };
                    n.names.insert(name.to_string(), mark);
                }
                ["way-back", image] => n.way_back = Some(Hash::from_hex(image).ok_or_else(bad)?),
                _ => return Err(bad()),
            }
        }
        Ok(n)
    }

    /// Why `image` is refused as a rollback (`None`: it is not one). `accepted` are its
    /// statements that count (valid, each meeting a requirement of the policy). It is a
    /// rollback when, for every name they approve it under, this record holds a newer
    /// statement than all of them and none approves the rollback until after `now`.
    /// `origin` is the record's path, for the message.
    pub fn refusal(
        &self,
        image: &Hash,
        accepted: &[Verified],
        now: i64,
        origin: &str,
    ) -> Option<String> {
        let names: BTreeSet<&str> = accepted.iter().map(|v| v.statement.name.as_str()).collect();
        let mut why = Vec::new();
        for name in names {
            // A name this host never accepted: no rollback.
            let mark = self.names.get(name)?;
            let of_name = || accepted.iter().filter(|v| v.statement.name == name);
            let releases: Vec<&Verified> = of_name()
                .filter(|v| v.statement.rollback_until.is_none())
                .collect();
            let approvals: Vec<&Verified> = of_name()
                .filter(|v| v.statement.rollback_until.is_some())
                .collect();
            if releases
                .iter()
                .any(|v| !is_older(v.statement.time, v.statement.version, mark))
                || approvals
                    .iter()
                    .any(|v| v.statement.rollback_until.is_some_and(|u| u > now))
            {
                return None;
            }
            let newest = releases
                .iter()
                .max_by_key(|v| (v.statement.version, v.statement.time));
            let mut s = match newest {
                Some(v) => format!(
                    "for {name:?} its newest statement is signed {}{}",
                    utc(v.statement.time),
                    version_text(v.statement.version)
                ),
                None => format!("for {name:?} it has only rollback approvals"),
            };
            s += &format!(
                " and this host has accepted image {} {} ({origin})",
                mark.image,
                mark.describe()
            );
            for a in approvals {
                s += &format!(
                    "; its rollback approval by {} ({}) expired {}",
                    a.principals.join(","),
                    a.origin,
                    utc(a.statement.rollback_until.unwrap_or_default())
                );
            }
            why.push(s);
        }
        if why.is_empty() {
            return None;
        }
        Some(format!(
            "image {image} is older than what this host has accepted: {}; going back needs a \
             signer's rollback approval (`imager sign --allow-rollback-until`)",
            why.join("; and ")
        ))
    }

    /// The record once `image`, approved by `accepted`, is committed on a host that ran
    /// `before`: each name's mark moves to the image's newest statement when that is
    /// newer (never back), and the way back becomes `before` (unchanged when the commit
    /// put the same image back, such as a repair of drift).
    pub fn after(&self, image: &Hash, accepted: &[Verified], before: Option<Hash>) -> Newest {
        let mut n = self.clone();
        for v in accepted
            .iter()
            .filter(|v| v.statement.rollback_until.is_none())
        {
            let s = &v.statement;
            let mark = Mark {
                time: s.time,
                version: s.version,
                image: *image,
            };
            match n.names.get(&s.name) {
                Some(m) if !is_older(m.time, m.version, &mark) => {}
                _ => {
                    n.names.insert(s.name.clone(), mark);
                }
            }
        }
        if before != Some(*image) {
            n.way_back = before;
        }
        n
    }
}

/// A policy's `max_age`: `30d`, `12h`, `1w2d`: whole numbers each followed by a unit,
/// `s`econds, `m`inutes, `h`ours, `d`ays or `w`eeks, added up. Returns seconds.
pub fn parse_duration(text: &str) -> std::result::Result<i64, String> {
    let bad =
        |why: &str| format!("bad duration {text:?}: {why} (such as \"30d\", \"12h\", \"1w2d\")");
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            _ => return Err(bad(&format!("{c:?} is not a unit"))),
        };
        if digits.is_empty() {
            return Err(bad("a unit without a number"));
        }
        let n: i64 = digits.parse().map_err(|_| bad("too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| bad("too large"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad("a number without a unit"));
    }
    if total == 0 {
        return Err(bad("it must be more than zero"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Statement;

    fn verified(name: &str, time: i64, version: Option<u64>, until: Option<i64>) -> Verified {
        Verified {
            fingerprint: "SHA256:x".into(),
            principals: vec!["release@example.com".into()],
            statement: Statement {
                image: Hash::of(b"i"),
                name: name.into(),
                note: String::new(),
                time,
                version,
                rollback_until: until,
            },
            origin: "signature 1".into(),
        }
    }

    #[test]
    fn durations_read_as_documented() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86400));
        assert_eq!(parse_duration("1w2d3h4m5s"), Ok(9 * 86400 + 3 * 3600 + 245));
        for bad in [
            "",
            "30",
            "d",
            "3x",
            "0d",
            "99999999999999999999d",
            "-1d",
            "1 d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_record_reads_back_as_printed() {
        let n = Newest::default().after(
            &Hash::of(b"a"),
            &[
                verified("base", 1000, Some(3), None),
                verified("web", 2000, None, None),
            ],
            Some(Hash::of(b"z")),
        );
        assert_eq!(Newest::parse(&n.print()), Ok(n.clone()));
        assert_eq!(n.way_back, Some(Hash::of(b"z")));
        assert!(Newest::parse("newest base soon - x\n").is_err());
    }

    /// Older is refused (by version when both have one, else by time), newer and equal
    /// are not; an unexpired rollback approval lets an older one through; the record
    /// never moves back, nor for an approval.
    #[test]
    fn older_statements_are_rollbacks_unless_approved() {
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        let n = Newest::default().after(&a, &[verified("base", 1000, Some(5), None)], None);
        let refused = |v: &[Verified]| n.refusal(&b, v, 1500, "accepted");
        assert_eq!(refused(&[verified("base", 2000, Some(6), None)]), None);
        // A later time does not beat a lower version.
        let e = refused(&[verified("base", 2000, Some(4), None)]).unwrap();
        assert!(
            e.contains(&format!("image {b} is older"))
                && e.contains("signed 1970-01-01T00:33:20Z (version 4)")
                && e.contains(&format!(
                    "accepted image {a} signed 1970-01-01T00:16:40Z (version 5)"
                )),
            "{e}"
        );
        // Without versions on both sides, time orders them.
        assert_eq!(refused(&[verified("base", 1000, None, None)]), None);
        assert!(refused(&[verified("base", 999, None, None)]).is_some());
        // Approved until after now: taken; expired: refused, saying so.
        let old = verified("base", 10, Some(1), None);
        assert_eq!(
            refused(&[old.clone(), verified("base", 1400, None, Some(1501))]),
            None
        );
        let e = refused(&[old.clone(), verified("base", 1400, None, Some(1500))]).unwrap();
        assert!(
            e.contains("rollback approval by release@example.com"),
            "{e}"
        );
        // A name the host never accepted is not a rollback.
        assert_eq!(refused(&[verified("other", 1, None, None)]), None);
        // The record keeps the newest; an approval does not move it.
        let m = n.after(
            &b,
            &[old, verified("base", 1400, None, Some(1501))],
            Some(a),
        );
        assert_eq!(m.names["base"].image, a);
        assert_eq!(m.way_back, Some(a));
        assert_eq!(m.after(&b, &[], Some(b)).way_back, Some(a));
    }
}
