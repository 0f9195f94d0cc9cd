//! `imager diff --stat`: how much changed where, as git's `--stat` shows it. One row per
//! package (with its version change) and per top directory, each counting the listed
//! files added, changed and removed and their bytes; a totals line. Counted over the
//! files the report lists (after `--path`, `--exclude`, `--package`), so the rows add up
//! to the report's JSON.

use super::{FileChange, FileChangeKind, PackageChange, PackageChangeKind, Report, Summary};
use crate::units::bytes;
use serde::Serialize;
use std::collections::BTreeMap;

/// What the `(no package)` row is called.
pub const UNOWNED: &str = "(no package)";

/// Counts for one package, one directory or the total.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StatRow {
    /// The package's name, the directory (`/etc`, `/usr/share`), or `total`.
    pub name: String,
    /// The package's version change (`added 1.6-2.1`, `3.0.11 -> 3.0.13`); None for a
    /// package at the same version, a directory or the total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Listed paths only the new image has.
    pub added: u64,
    /// Listed paths both images have, with a difference.
    pub changed: u64,
    /// Listed paths only the old image has.
    pub removed: u64,
    /// Bytes of the regular files among them, in the old image.
    pub bytes_old: u64,
    /// Bytes of the regular files among them, in the new image.
    pub bytes_new: u64,
}

impl StatRow {
    fn named(name: &str) -> StatRow {
        StatRow {
            name: name.to_string(),
            ..StatRow::default()
        }
    }

    /// Counts one file in.
    pub fn add(&mut self, f: &FileChange) {
        match f.change {
            FileChangeKind::Added => self.added += 1,
            FileChangeKind::Changed => self.changed += 1,
            FileChangeKind::Removed => self.removed += 1,
        }
        self.bytes_old += f.old.as_ref().and_then(|s| s.size).unwrap_or(0);
        self.bytes_new += f.new.as_ref().and_then(|s| s.size).unwrap_or(0);
    }

    /// Files counted.
    pub fn files(&self) -> u64 {
        self.added + self.changed + self.removed
    }

    /// The change in bytes, signed: `+1.20 MB`, `-512 B`, `±0 B`.
    pub fn delta(&self) -> String {
        match self.bytes_new.cmp(&self.bytes_old) {
            std::cmp::Ordering::Greater => format!("+{}", bytes(self.bytes_new - self.bytes_old)),
            std::cmp::Ordering::Less => format!("-{}", bytes(self.bytes_old - self.bytes_new)),
            std::cmp::Ordering::Equal => "±0 B".into(),
        }
    }
}

/// The `--stat` report: rows per package and per top directory, and the totals.
#[derive(Clone, Debug, Serialize)]
pub struct Stat {
    /// One row per package with listed files or a version change, by name; the files no
    /// package owns last, as [`UNOWNED`].
    pub packages: Vec<StatRow>,
    /// One row per top directory ([`top_dir`]), by path.
    pub dirs: Vec<StatRow>,
    /// All listed files.
    pub total: StatRow,
    /// The report's summary (over the whole diff, whatever the filter).
    pub summary: Summary,
}

/// The directory a path is counted under: its first component (`/etc`), or its first
/// two under `/usr` (`/usr/share`), where the merged /usr keeps nearly everything.
pub fn top_dir(path: &str) -> String {
    let mut parts = path.trim_start_matches('/').split('/');
    let first = parts.next().unwrap_or("");
    match (first, parts.next()) {
        ("usr", Some(second)) => format!("/usr/{second}"),
        _ => format!("/{first}"),
    }
}

/// A package's version change, as the stat shows it.
pub fn version_note(p: &PackageChange) -> String {
    let (o, n) = (
        p.old_version.as_deref().unwrap_or("-"),
        p.new_version.as_deref().unwrap_or("-"),
    );
    match p.change {
        PackageChangeKind::Added => format!("added {n}"),
        PackageChangeKind::Removed => format!("removed {o}"),
        PackageChangeKind::Upgraded => format!("{o} -> {n}"),
        PackageChangeKind::Downgraded => format!("DOWNGRADED {o} -> {n}"),
    }
}

/// The stat of a report.
pub fn stat(r: &Report) -> Stat {
    let versions: BTreeMap<&str, &PackageChange> =
        r.packages.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut packages: BTreeMap<String, StatRow> = BTreeMap::new();
    for p in &r.packages {
        packages.insert(p.name.clone(), StatRow::named(&p.name));
    }
    let mut dirs: BTreeMap<String, StatRow> = BTreeMap::new();
    let mut total = StatRow::named("total");
    let groups = r.by_package.iter().map(|g| (g.package.as_str(), &g.files));
    for (name, files) in groups {
        let row = packages
            .entry(name.to_string())
            .or_insert_with(|| StatRow::named(name));
        files.iter().for_each(|f| row.add(f));
    }
    let mut unowned = StatRow::named(UNOWNED);
    r.unowned.iter().for_each(|f| unowned.add(f));
    let all = r
        .unowned
        .iter()
        .chain(r.by_package.iter().flat_map(|g| &g.files));
    for f in all {
        total.add(f);
        let d = top_dir(&f.path);
        dirs.entry(d.clone())
            .or_insert_with(|| StatRow::named(&d))
            .add(f);
    }
    let mut packages: Vec<StatRow> = packages
        .into_values()
        .map(|mut row| {
            row.version = versions.get(row.name.as_str()).map(|p| version_note(p));
            row
        })
        .collect();
    if unowned.files() > 0 {
        packages.push(unowned);
    }
    Stat {
        packages,
        dirs: dirs.into_values().collect(),
        total,
        summary: r.summary.clone(),
    }
}

impl Stat {
    /// The totals line: `1234 files: 1200 added, 30 changed, 4 removed; 12.3 MB -> 45.6
    /// MB (+33.3 MB); packages: 14 added, 0 removed, 1 upgraded, 0 downgraded`.
    pub fn totals_line(&self) -> String {
        let (t, s) = (&self.total, &self.summary);
        format!(
            "{} files: {} added, {} changed, {} removed; {} -> {} ({}); packages: {} added, {} removed, {} upgraded, {} downgraded",
            t.files(), t.added, t.changed, t.removed, bytes(t.bytes_old), bytes(t.bytes_new),
            t.delta(), s.packages_added, s.packages_removed, s.packages_upgraded,
            s.packages_downgraded
        )
    }

    /// As aligned text columns: the package table, the directory table, the totals.
    pub fn text(&self) -> String {
        let mut o = String::new();
        for (title, rows) in [("package", &self.packages), ("directory", &self.dirs)] {
            let w = rows
                .iter()
                .map(|r| r.name.len() + r.version.as_ref().map_or(0, |v| v.len() + 3))
                .chain([title.len()])
                .max()
                .unwrap_or(0);
            o.push_str(&format!(
                " {title:<w$}  {:>7} {:>7} {:>7}  {:>10}\n",
                "added", "changed", "removed", "size"
            ));
            for r in rows.iter() {
                let name = match &r.version {
                    Some(v) => format!("{} ({v})", r.name),
                    None => r.name.clone(),
                };
                o.push_str(&format!(
                    " {name:<w$}  {:>7} {:>7} {:>7}  {:>10}\n",
                    r.added,
                    r.changed,
                    r.removed,
                    r.delta()
                ));
            }
            o.push('\n');
        }
        o.push_str(&format!(" {}\n", self.totals_line()));
        o
    }

    /// As two Markdown tables and the totals.
    pub fn markdown(&self) -> String {
        let mut o = String::new();
        for (title, rows) in [("Package", &self.packages), ("Directory", &self.dirs)] {
            o.push_str(&format!(
                "| {title} | Version | Added | Changed | Removed | Size |\n|---|---|--:|--:|--:|--:|\n"
            ));
            for r in rows.iter() {
                o.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    super::render::md_code(&r.name),
                    r.version
                        .as_deref()
                        .map(super::render::md_code)
                        .unwrap_or_default(),
                    r.added,
                    r.changed,
                    r.removed,
                    r.delta()
                ));
            }
            o.push('\n');
        }
        o.push_str(&format!("**Total:** {}\n", self.totals_line()));
        o
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn top_directories_split_the_merged_usr() {
        assert_eq!(super::top_dir("/usr/share/man/man1/jq.1.gz"), "/usr/share");
        assert_eq!(super::top_dir("/etc/passwd"), "/etc");
        assert_eq!(super::top_dir("/usr"), "/usr");
        assert_eq!(super::top_dir("/vmlinuz"), "/vmlinuz");
    }
}
