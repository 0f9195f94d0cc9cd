//! What dpkg knows inside an image: installed packages (`/var/lib/dpkg/status`), which
//! package owns which path (`/var/lib/dpkg/info/*.list`), Debian version order, and the
//! entries of a package's `changelog.Debian.gz`.

use crate::deb822;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// An installed package, as the status file describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    /// Binary package name.
    pub name: String,
    /// Installed version.
    pub version: String,
    /// Debian architecture (`amd64`, `all`); empty when the status gives none.
    pub architecture: String,
    /// The source package (the binary's name when the status has no `Source:`).
    pub source: String,
    /// The source package's version: the one in `Source: name (version)`, else the
    /// binary's.
    pub source_version: String,
    /// The `Maintainer` field (`Name <address>`), for the SBOMs' supplier; not in
    /// `imager packages --json`, which lists what identifies a package.
    #[serde(skip)]
    pub maintainer: Option<String>,
}

/// Installed packages by name (`name:arch` for multi-arch `same` packages seen twice).
pub fn installed(status: &str) -> BTreeMap<String, Package> {
    let mut out = BTreeMap::new();
    for p in deb822::parse(status) {
        let (Some(name), Some(version)) = (p.get("Package"), p.get("Version")) else {
            continue;
        };
        if !p.get("Status").is_some_and(|s| s.ends_with(" installed")) {
            continue;
        }
        let arch = p.get("Architecture").unwrap_or("").to_string();
        // `Source: name (version)` when the source version differs.
        let (source, source_version) = match p.get("Source") {
            Some(s) => match s.split_once(" (") {
                Some((n, v)) => (n.to_string(), v.trim_end_matches(')').to_string()),
                None => (s.to_string(), version.to_string()),
            },
            None => (name.to_string(), version.to_string()),
        };
        let key = if out.contains_key(name) {
            format!("{name}:{arch}")
        } else {
            name.to_string()
        };
        out.insert(
            key,
            Package {
                name: name.to_string(),
                version: version.to_string(),
                architecture: arch,
                source,
                source_version,
                maintainer: p.get("Maintainer").map(str::to_string),
            },
        );
    }
    out
}

/// The package named by a `/var/lib/dpkg/info/NAME[:ARCH].list` path.
pub fn list_owner(path: &[u8]) -> Option<String> {
    let name = path.strip_prefix(b"/var/lib/dpkg/info/")?;
    let name = std::str::from_utf8(name.strip_suffix(b".list")?).ok()?;
    Some(name.split(':').next().unwrap_or(name).to_string())
}

/// dpkg's version order (`dpkg --compare-versions`): epoch, then upstream version, then
/// Debian revision, each compared as alternating non-digit and digit runs, `~` sorting
/// before everything, even the end.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.bytes().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((u, r)) => (epoch, u, r),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(b'~') => -1,
            Some(c) => c as i32 + 256,
        }
    }
    fn part(a: &[u8], b: &[u8]) -> Ordering {
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit())
            {
                let (x, y) = (order(a.get(i).copied()), order(b.get(j).copied()));
                if x != y {
                    return x.cmp(&y);
                }
                i += 1;
                j += 1;
            }
            while i < a.len() && a[i] == b'0' {
                i += 1;
            }
            while j < b.len() && b[j] == b'0' {
                j += 1;
            }
            let mut first = Ordering::Equal;
            while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
                if first == Ordering::Equal {
                    first = a[i].cmp(&b[j]);
                }
                i += 1;
                j += 1;
            }
            if i < a.len() && a[i].is_ascii_digit() {
                return Ordering::Greater;
            }
            if j < b.len() && b[j].is_ascii_digit() {
                return Ordering::Less;
            }
            if first != Ordering::Equal {
                return first;
            }
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| part(ra.as_bytes(), rb.as_bytes()))
}

/// One entry of a Debian changelog: its version and its whole text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChangelogEntry {
    /// The version in the entry's first line, as the changelog gives it.
    pub version: String,
    /// The whole entry, its header line up to the next entry's, trailing whitespace
    /// trimmed.
    pub text: String,
}

/// The entries of a changelog, newest first.
pub fn changelog_entries(text: &str) -> Vec<ChangelogEntry> {
    let mut out: Vec<ChangelogEntry> = Vec::new();
    for line in text.lines() {
        let header = !line.starts_with(' ')
            && !line.is_empty()
            && line.contains(" (")
            && line.contains(") ")
            && line.contains("urgency=");
        if header {
            let version = line
                .split_once(" (")
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(v, _)| v.to_string())
                .unwrap_or_default();
            out.push(ChangelogEntry {
                version,
                text: format!("{line}\n"),
            });
        } else if let Some(e) = out.last_mut() {
            e.text.push_str(line);
            e.text.push('\n');
        }
    }
    for e in &mut out {
        let t = e.text.trim_end().to_string();
        e.text = t;
    }
    out
}

/// The entries newer than `old` and not newer than `new`.
pub fn entries_between(entries: &[ChangelogEntry], old: &str, new: &str) -> Vec<ChangelogEntry> {
    entries
        .iter()
        .filter(|e| {
            compare_versions(&e.version, old) == Ordering::Greater
                && compare_versions(&e.version, new) != Ordering::Greater
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_dpkg_sorts_them() {
        let ordered = [
            "1.0~rc1",
            "1.0",
            "1.0-1",
            "1.0-1+deb12u1",
            "1.0-2",
            "1.0.1",
            "1.10",
            "1:0.1",
            "1:9.2p1-2+deb12u3",
            "1:9.2p1-2+deb12u5",
        ];
        for w in ordered.windows(2) {
            assert_eq!(
                compare_versions(w[0], w[1]),
                Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
            assert_eq!(compare_versions(w[1], w[0]), Ordering::Greater);
        }
        assert_eq!(compare_versions("1.0-01", "1.0-1"), Ordering::Equal);
    }

    #[test]
    fn changelog_entries_between_two_versions() {
        let text = "openssh (1:9.2p1-2+deb12u5) bookworm-security; urgency=medium\n\n  * Fix CVE-2025-1.\n\n -- A <a@b>  Mon, 1 Jan 2025 00:00:00 +0000\n\nopenssh (1:9.2p1-2+deb12u4) bookworm; urgency=medium\n\n  * Fix CVE-2024-2.\n\n -- A <a@b>  Mon, 1 Jan 2024 00:00:00 +0000\n\nopenssh (1:9.2p1-2+deb12u3) bookworm; urgency=medium\n\n  * Old.\n";
        let e = changelog_entries(text);
        assert_eq!(e.len(), 3);
        let b = entries_between(&e, "1:9.2p1-2+deb12u3", "1:9.2p1-2+deb12u5");
        let v: Vec<&str> = b.iter().map(|e| e.version.as_str()).collect();
        assert_eq!(v, ["1:9.2p1-2+deb12u5", "1:9.2p1-2+deb12u4"]);
        assert!(b[0].text.contains("CVE-2025-1") && b[0].text.ends_with("+0000"));
    }
}
