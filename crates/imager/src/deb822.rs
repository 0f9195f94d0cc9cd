//! Debian's control-file format (deb822): apt's `Packages` and `Release` indices and
//! dpkg's `status` database are paragraphs of `Field: value` lines separated by blank
//! lines, with continuation lines starting with a space.

/// One paragraph: its fields in file order (names as written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph {
    pub fields: Vec<(String, String)>,
}

impl Paragraph {
    /// A field's value (names compare case-insensitively, as dpkg does).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a deb822 text into paragraphs; `#` lines are comments. Lines that are neither fields nor
/// continuations (a PGP armour line, say) end the paragraph they are in and are skipped.
pub fn parse(text: &str) -> Vec<Paragraph> {
    let mut out = Vec::new();
    let mut cur = Paragraph::default();
    for line in text.lines() {
        if line.starts_with('#') {
            // A comment (apt's .sources files allow them); it does not end a paragraph.
            continue;
        }
        if line.trim().is_empty() {
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, v)) = cur.fields.last_mut() {
                v.push('\n');
                v.push_str(line.trim_start());
            }
        } else if let Some((k, v)) = line.split_once(':').filter(|(k, _)| !k.contains(' ')) {
            cur.fields.push((k.to_string(), v.trim().to_string()));
        } else if !cur.fields.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    out
}

/// Parses the `Date:` of a Release file (RFC 2822, `Sat, 10 May 2025 09:52:11 UTC`) into
/// seconds since the epoch.
pub fn parse_release_date(s: &str) -> Option<i64> {
    let s = s.split_once(',').map_or(s, |(_, rest)| rest).trim();
    let mut it = s.split_whitespace();
    let day: i64 = it.next()?.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| Some(*m) == it.clone().next())? as i64
        + 1;
    it.next();
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    // Out-of-range fields (from a damaged or hostile mirror) are no date, not an
    // arithmetic overflow.
    let in_range = (1..=31).contains(&day)
        && (1..=9999).contains(&year)
        && (0..24).contains(&h)
        && (0..60).contains(&m)
        && (0..=60).contains(&sec);
    if !in_range {
        return None;
    }
    let offset = match it.next() {
        None | Some("UTC") | Some("GMT") | Some("Z") => 0,
        Some(z) if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let v: i64 = z[1..].parse().ok().filter(|v| (0..10000).contains(v))?;
            let secs = (v / 100) * 3600 + (v % 100) * 60;
            if z.starts_with('-') {
                -secs
            } else {
                secs
            }
        }
        Some(_) => return None,
    };
    Some(crate::time::days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_and_continuations() {
        let t = "Package: a\nVersion: 1\nDescription: x\n y\n .\n z\n\nPackage: b\nStatus: install ok installed\n";
        let p = parse(t);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].get("package"), Some("a"));
        assert_eq!(p[0].get("Description"), Some("x\ny\n.\nz"));
        assert_eq!(p[1].get("Status"), Some("install ok installed"));
    }

    #[test]
    fn release_dates() {
        assert_eq!(parse_release_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_release_date("Tue, 14 Nov 2023 22:13:20 UTC"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_release_date("Tue, 14 Nov 2023 23:13:20 +0100"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_release_date("Sat, 29 Feb 2020 12:00:00 UTC"),
            Some(1_582_977_600)
        );
        assert_eq!(parse_release_date("yesterday"), None);
    }

    #[test]
    fn release_dates_out_of_range_are_refused_not_overflowed() {
        // A Release file comes from a mirror (the dpkg_status fuzz target reaches this).
        for d in [
            "Sat, 10 May 9223372036854775807 09:52:11 UTC",
            "Sat, 10 May -9223372036854775807 09:52:11 UTC",
            "Sat, 9223372036854775807 May 2025 09:52:11 UTC",
            "Sat, 10 May 2025 9223372036854775807:00:00 UTC",
            "Sat, 10 May 2025 00:9223372036854775807:00 UTC",
            "Sat, 10 May 2025 00:00:9223372036854775807 UTC",
            "Sat, 10 May 2025 00:00:-9223372036854775807 +9999",
        ] {
            assert_eq!(parse_release_date(d), None, "{d}");
        }
    }
}
