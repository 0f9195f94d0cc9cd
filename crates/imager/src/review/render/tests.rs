//! The folding, the caps and the Markdown on a report made up here.

use super::super::fold::{self, section_lines, Limits};
use super::super::*;
use super::*;
use crate::packages::dpkg;

/// A regular file of `size` bytes, mode 0644, owned by root (also the HTML tests').
pub(in crate::review) fn side(size: u64) -> FileSide {
    FileSide {
        kind: "file",
        size: Some(size),
        blake3: Some("0".repeat(64)),
        mode: "0644".into(),
        uid: 0,
        gid: 0,
        target: None,
        device: None,
        capability: None,
        mtime: 0,
    }
}

fn file(path: &str, change: FileChangeKind, diff_lines: usize) -> FileChange {
    let diff = (diff_lines > 0).then(|| {
        let mut d = format!("--- a{path}\n+++ b{path}\n@@ -1 +1 @@\n");
        for i in 0..diff_lines.saturating_sub(3) {
            d.push_str(&format!("+line {i}\n"));
        }
        d
    });
    FileChange {
        path: path.into(),
        old: (change != FileChangeKind::Added).then(|| side(10)),
        new: (change != FileChangeKind::Removed).then(|| side(1000)),
        change,
        what: Vec::new(),
        flagged: Vec::new(),
        diff,
        view: None,
    }
}

/// One big added package (300 files, 20 with 100-line diffs), one upgraded package with
/// a long changelog and a changed file with a diff that holds a newline-free control
/// character, and a few unowned files.
fn report() -> Report {
    let mut big = Vec::new();
    for i in 0..300 {
        let lines = if i % 15 == 0 { 100 } else { 0 };
        big.push(file(
            &format!("/usr/share/big/f{i:03}"),
            FileChangeKind::Added,
            lines,
        ));
    }
    let entry = |v: &str| {
        dpkg::ChangelogEntry {
        version: v.into(),
        text: format!("lib ({v}) bookworm; urgency=medium\n\n  * fix\n  * fix more\n\n -- Someone  Mon, 20 May 2024 13:04:05 +0000"),
    }
    };
    let pkg = |name: &str, change: PackageChangeKind, log: usize| PackageChange {
        name: name.into(),
        change,
        old_version: Some("1".into()),
        new_version: Some("2".into()),
        source: "lib".into(),
        source_version: "2".into(),
        changelog: (0..log).map(|i| entry(&format!("2.{i}"))).collect(),
    };
    let mut upd = file("/usr/lib/libx.so", FileChangeKind::Changed, 5);
    upd.diff = Some("--- a\n+++ b\n@@ -1 +1 @@\n-old\x1b[2J\n+new\n".into());
    upd.flagged
        .push("setuid/setgid bits: mode 0644 -> 4755".into());
    Report {
        old: Side {
            id: "a".repeat(64),
            names: vec!["base".into()],
        },
        new: Side {
            id: "b".repeat(64),
            names: vec![],
        },
        summary: Summary::default(),
        packages: vec![
            pkg("big", PackageChangeKind::Added, 0),
            pkg("libx", PackageChangeKind::Upgraded, 12),
            pkg("libx-dev", PackageChangeKind::Upgraded, 12),
        ],
        unowned: vec![
            file("/etc/a", FileChangeKind::Changed, 8),
            file("/etc/b", FileChangeKind::Removed, 0),
        ],
        by_package: vec![
            PackageFiles {
                package: "big".into(),
                files: big,
            },
            PackageFiles {
                package: "libx".into(),
                files: vec![upd],
            },
        ],
    }
}

#[test]
fn sections_fit_their_budget_and_the_folds_count_the_rest() {
    let r = report();
    let s = fold::shape(&r, &Limits::DEFAULT);
    assert_eq!(s.sections.len(), 4, "unowned, big, libx, libx-dev");
    for sec in &s.sections {
        assert!(
            section_lines(sec) <= 60,
            "{:?} takes {}",
            sec.package,
            section_lines(sec)
        );
        let shown = sec.files.len() as u64;
        let folded = sec.folded.as_ref().map_or(0, |f| f.files());
        assert_eq!(shown + folded, sec.total.files(), "{:?}", sec.package);
        for f in &sec.files {
            assert!(f.body.len() <= 40);
            assert_eq!(f.body.len() + f.body_omitted, fold::body(f.file).len());
        }
    }
    let big = &s.sections[1];
    let folded = big.folded.as_ref().expect("big is folded");
    assert_eq!(folded.added + big.files.len() as u64, 300);
    assert_eq!(folded.bytes_new, folded.added * 1000);
    // The diffs shown come first: the 20 files with diffs outrank the rest.
    assert!(big.files.iter().any(|f| !f.body.is_empty()));
    // A shared changelog is shown once; the long one folded with its count.
    let libx = &s.sections[2];
    assert!(libx.changelog.len() <= 20 && libx.changelog_omitted.0 > 0);
    assert_eq!(libx.changelog.len() + libx.changelog_omitted.0, 12 * 6);
    assert_eq!(s.sections[3].changelog_see, Some("libx"));
    // The text agrees with the section counts.
    let t = text(&s, false);
    assert!(t.contains(&folded_line(folded)), "{t}");
    assert!(t.contains("… 300") || t.contains(&format!("… {} more files (+", folded.files())));
    for block in t.split("\n\n").skip(2) {
        assert!(block.lines().count() <= 60, "{block}");
    }
}

#[test]
fn full_shows_everything() {
    let r = report();
    let s = fold::shape(&r, &Limits::full());
    let big = &s.sections[1];
    assert!(big.folded.is_none() && big.files.len() == 300);
    assert!(big.files.iter().all(|f| f.body_omitted == 0));
    assert_eq!(s.sections[2].changelog.len(), 12 * 6);
    assert_eq!(s.sections[3].changelog_see, None);
}

#[test]
fn max_diff_lines_caps_each_body_and_says_so() {
    let r = report();
    let limits = Limits {
        diff_lines: Some(7),
        ..Limits::full()
    };
    let t = text(&fold::shape(&r, &limits), false);
    assert!(t.contains("… 93 more lines of this diff"), "{t}");
}

#[test]
fn max_lines_cuts_and_names_what_it_left_out() {
    let r = report();
    let opts = Options {
        level: Level::Sections,
        markdown: false,
        colour: false,
        limits: Limits::full(),
        max_lines: Some(30),
    };
    let t = render(&r, &opts);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 30);
    let last = lines[29];
    assert!(
        last.starts_with("… ") && last.contains("more lines not shown (--max-lines 30)"),
        "{last}"
    );
    assert!(last.contains("Files of libx"), "{last}");
    // Markdown: a fence open at the cut is closed.
    let md = render(
        &r,
        &Options {
            markdown: true,
            max_lines: Some(40),
            ..opts
        },
    );
    let fences = md
        .lines()
        .filter(|l| l.trim_start().starts_with("```"))
        .count();
    assert_eq!(fences % 2, 0, "{md}");
    assert_eq!(md.lines().count(), 40);
    // Short output is left alone.
    assert_eq!(cap_lines("a\nb\n", 2, false), "a\nb\n");
}

#[test]
fn markdown_has_fenced_diffs_tables_and_no_escaped_newlines() {
    let r = report();
    let md = markdown(&fold::shape(&r, &Limits::DEFAULT));
    assert!(!md.contains("\\x0a"), "{md}");
    assert!(md.contains("\n  ```diff\n  --- a/etc/a\n"), "{md}");
    assert!(
        md.contains("| Package | Old | New | Change | Source |\n|---|"),
        "{md}"
    );
    assert!(
        md.contains("\\x1b[2J"),
        "control characters are shown, not sent"
    );
    assert!(md.contains("## Files of `libx`"));
    assert_eq!(md_code("a`b|c"), "`` a`b\\|c ``");
}

#[test]
fn content_cannot_reach_the_terminal_or_break_a_fence() {
    assert_eq!(clean("a\x1b[2Jb\rc\td"), "a\\x1b[2Jb\\x0dc\td");
    assert_eq!(fence("x ```` y"), "`````");
    assert_eq!(fence("plain"), "```");
}

#[test]
fn times_read_as_utc_dates() {
    assert_eq!(
        super::super::compare::date(1_716_210_245),
        "2024-05-20 13:04:05 UTC"
    );
    assert_eq!(super::super::compare::date(0), "1970-01-01 00:00:00 UTC");
}
