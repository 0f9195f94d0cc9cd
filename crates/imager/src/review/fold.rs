//! The default view of a report: one section per package (files no package owns first),
//! each starting with the package's version change and changelog entries, then its
//! files, the most telling first chosen, each with its diff or content view; what does
//! not fit the section's line budget is folded into counts ("… 214 more files (+1.20
//! MB)"). Computed as data ([`Shaped`], serialisable) so that each renderer (text,
//! Markdown, HTML) shows the same choice; [`Limits::full`] folds nothing.

use super::stat::StatRow;
use super::{FileChange, FileChangeKind, PackageChange, Report, Side, Summary};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// How much of each section is shown; None is no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Lines one section takes as text: its heading, version line, changelog, file lines,
    /// diff and view lines and fold lines.
    pub section_lines: Option<usize>,
    /// Lines of one file's diff or view.
    pub diff_lines: Option<usize>,
    /// Lines of one package's changelog entries.
    pub changelog_lines: Option<usize>,
}

/// A body (diff or view) is shown only if at least this many of its lines fit.
const MIN_BODY: usize = 3;

impl Limits {
    /// The default view's: a section fits a screen.
    pub const DEFAULT: Limits = Limits {
        section_lines: Some(60),
        diff_lines: Some(40),
        changelog_lines: Some(20),
    };

    /// Everything.
    pub fn full() -> Limits {
        Limits {
            section_lines: None,
            diff_lines: None,
            changelog_lines: None,
        }
    }
}

/// A report shaped for reading.
#[derive(Debug, Serialize)]
pub struct Shaped<'a> {
    /// The image compared from.
    pub old: &'a Side,
    /// The image compared to.
    pub new: &'a Side,
    /// Counts over the whole diff.
    pub summary: &'a Summary,
    /// Every package change, by name (the overview).
    pub packages: &'a [PackageChange],
    /// Files no package owns first, then one section per package, by name.
    pub sections: Vec<Section<'a>>,
}

/// One package's part of the report (or the unowned files').
#[derive(Debug, Serialize)]
pub struct Section<'a> {
    /// The package; None for the files no package owns.
    pub package: Option<&'a str>,
    /// Its version change, when it has one.
    pub change: Option<&'a PackageChange>,
    /// Changelog lines shown, newest entry first.
    pub changelog: Vec<&'a str>,
    /// Changelog lines not shown, and how many entries they hold (in part).
    pub changelog_omitted: (usize, usize),
    /// The package whose section shows the same changelog (same source and version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changelog_see: Option<&'a str>,
    /// The files shown, in image order.
    pub files: Vec<ShownFile<'a>>,
    /// The files not shown, counted (`name` is the section's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded: Option<StatRow>,
    /// All the section's files, counted.
    pub total: StatRow,
}

/// A file shown, with as much of its diff or view as fits.
#[derive(Debug, Serialize)]
pub struct ShownFile<'a> {
    /// The file.
    pub file: &'a FileChange,
    /// The lines of its diff or view shown.
    pub body: Vec<String>,
    /// The lines of its diff or view not shown.
    pub body_omitted: usize,
}

/// A file's diff or view as lines.
pub fn body(f: &FileChange) -> Vec<String> {
    match (&f.diff, &f.view) {
        (Some(d), _) => d.lines().map(str::to_string).collect(),
        (None, Some(v)) => v.lines(),
        (None, None) => Vec::new(),
    }
}

/// Which files a reviewer most needs to see: flagged, then changed (with content
/// shown first), removed, added (with content first).
fn rank(f: &FileChange, has_body: bool) -> u8 {
    match (f.flagged.is_empty(), &f.change, has_body) {
        (false, _, _) => 0,
        (_, FileChangeKind::Changed, true) => 1,
        (_, FileChangeKind::Changed, false) => 2,
        (_, FileChangeKind::Removed, _) => 3,
        (_, FileChangeKind::Added, true) => 4,
        (_, FileChangeKind::Added, false) => 5,
    }
}

/// The report in sections under `limits`.
pub fn shape<'a>(r: &'a Report, limits: &Limits) -> Shaped<'a> {
    let mut groups: BTreeMap<&str, (Option<&PackageChange>, &[FileChange])> = BTreeMap::new();
    for p in &r.packages {
        groups.insert(&p.name, (Some(p), &[]));
    }
    for g in &r.by_package {
        groups.entry(&g.package).or_insert((None, &[])).1 = &g.files;
    }
    let mut sections = Vec::new();
    if !r.unowned.is_empty() {
        sections.push(section(None, None, &r.unowned, limits, None));
    }
    // Binary packages of one source share a changelog: shown once, under the first.
    let mut shown_log: HashMap<(&str, &str), &str> = HashMap::new();
    for (name, (change, files)) in groups {
        let log = change.filter(|c| !c.changelog.is_empty());
        if files.is_empty() && log.is_none() {
            continue;
        }
        let see = match (log, limits.section_lines) {
            (Some(c), Some(_)) => {
                let key = (c.source.as_str(), c.source_version.as_str());
                shown_log.get(&key).copied().or_else(|| {
                    shown_log.insert(key, name);
                    None
                })
            }
            _ => None,
        };
        sections.push(section(Some(name), change, files, limits, see));
    }
    Shaped {
        old: &r.old,
        new: &r.new,
        summary: &r.summary,
        packages: &r.packages,
        sections,
    }
}

fn section<'a>(
    package: Option<&'a str>,
    change: Option<&'a PackageChange>,
    files: &'a [FileChange],
    limits: &Limits,
    see: Option<&'a str>,
) -> Section<'a> {
    let budget = limits.section_lines.unwrap_or(usize::MAX);
    let mut s = Section {
        package,
        change,
        changelog: Vec::new(),
        changelog_omitted: (0, 0),
        changelog_see: see,
        files: Vec::new(),
        folded: None,
        total: StatRow::default(),
    };
    s.total.name = package.unwrap_or(super::stat::UNOWNED).to_string();
    files.iter().for_each(|f| s.total.add(f));
    // The heading, and the version line.
    let mut used = 1 + usize::from(change.is_some());
    if see.is_some() {
        used += 1;
    } else if let Some(c) = change {
        used += changelog(&mut s, c, limits, budget.saturating_sub(used) / 3);
    }
    let (shown, folded) = fold_files(files, limits, budget.saturating_sub(used));
    s.files = shown;
    if !folded.is_empty() {
        let mut row = StatRow {
            name: s.total.name.clone(),
            ..StatRow::default()
        };
        folded.iter().for_each(|f| row.add(f));
        s.folded = Some(row);
    }
    s
}

/// Fills in the changelog lines that fit `limits` (and `room`, when there is a section
/// budget); returns the lines the changelog takes, fold line included.
fn changelog<'a>(s: &mut Section<'a>, c: &'a PackageChange, limits: &Limits, room: usize) -> usize {
    let lines: Vec<(usize, &str)> = c
        .changelog
        .iter()
        .enumerate()
        .flat_map(|(i, e)| e.text.lines().map(move |l| (i, l)))
        .collect();
    let mut cap = limits.changelog_lines.unwrap_or(usize::MAX);
    if limits.section_lines.is_some() {
        cap = cap.min(room.max(MIN_BODY));
    }
    if lines.len() <= cap {
        s.changelog = lines.iter().map(|(_, l)| *l).collect();
        return lines.len();
    }
    let keep = cap.saturating_sub(1);
    s.changelog = lines[..keep].iter().map(|(_, l)| *l).collect();
    let first_cut = lines[keep].0;
    let entries = c.changelog.len() - first_cut;
    s.changelog_omitted = (lines.len() - keep, entries);
    cap
}

/// Chooses the files to show within `room` lines (one each, plus their bodies' lines,
/// plus a fold line when some are left out): by [`rank`], at most half the room for file
/// lines when there are bodies to show. Returns the shown (in image order) and the rest.
fn fold_files<'a>(
    files: &'a [FileChange],
    limits: &Limits,
    room: usize,
) -> (Vec<ShownFile<'a>>, Vec<&'a FileChange>) {
    let bodies: Vec<Vec<String>> = files.iter().map(body).collect();
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| rank(&files[i], !bodies[i].is_empty()));
    let any_body = bodies.iter().any(|b| !b.is_empty());
    let mut count = files.len();
    let line_room = if any_body && limits.section_lines.is_some() {
        room / 2
    } else {
        room
    };
    if count > line_room {
        // Room for the fold line too.
        count = line_room.saturating_sub(1);
    }
    let chosen = &order[..count];
    let mut left = room.saturating_sub(count + usize::from(count < files.len()));
    let cap = limits.diff_lines.unwrap_or(usize::MAX);
    let mut shown: BTreeMap<usize, ShownFile> = BTreeMap::new();
    for &i in chosen {
        let total = bodies[i].len();
        let mut n = total.min(cap);
        if n < total || limits.section_lines.is_some() && n > left {
            // A partial body takes a line more: "… N more lines".
            n = n.min(left.saturating_sub(1));
            if n < MIN_BODY.min(total) {
                n = 0;
            }
        }
        left -= n + usize::from(n > 0 && n < total);
        let mut b = bodies[i].clone();
        b.truncate(n);
        shown.insert(
            i,
            ShownFile {
                file: &files[i],
                body: b,
                body_omitted: total - n,
            },
        );
    }
    let rest = (0..files.len())
        .filter(|i| !shown.contains_key(i))
        .map(|i| &files[i])
        .collect();
    (shown.into_values().collect(), rest)
}

/// The lines a section takes as text (what [`Limits::section_lines`] bounds).
pub fn section_lines(s: &Section) -> usize {
    let files: usize = s
        .files
        .iter()
        .map(|f| 1 + f.body.len() + usize::from(!f.body.is_empty() && f.body_omitted > 0))
        .sum();
    1 + usize::from(s.change.is_some())
        + s.changelog.len()
        + usize::from(s.changelog_omitted.0 > 0)
        + usize::from(s.changelog_see.is_some())
        + files
        + usize::from(s.folded.is_some())
}
