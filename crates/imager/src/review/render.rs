//! A [`Report`] as text (coloured on a terminal) or Markdown, at one of four levels: the
//! summary, the stat ([`super::stat`]), the default view (sections folded to fit a
//! screen, [`super::fold`]) and everything; then cut to `--max-lines` if asked. Stable
//! order throughout (packages by name, files in image order), so a report can itself be
//! reviewed as a diff. JSON is the report's serde form.

use super::fold::{self, Limits, Section, Shaped, ShownFile};
use super::stat::StatRow;
use super::{FileChange, PackageChangeKind, Report};
use std::fmt::Write;

/// How much of the report to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The counts only.
    Summary,
    /// Counts per package and per top directory.
    Stat,
    /// Sections per package, folded to [`Options::limits`].
    Sections,
}

/// What [`render`] makes.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// How much to show.
    pub level: Level,
    /// Markdown rather than text.
    pub markdown: bool,
    /// ANSI colours (text only).
    pub colour: bool,
    /// How the sections fold ([`Limits::DEFAULT`], or [`Limits::full`] for everything).
    pub limits: Limits,
    /// Cut the whole output at this many lines, the last saying what was left out.
    pub max_lines: Option<usize>,
}

/// Content from an image made safe for a terminal: control characters (escape
/// sequences, carriage returns) shown as `\xNN` so a reviewed file cannot hide lines.
/// For one line: a newline is a control character too.
pub(super) fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A code fence longer than any run of backticks in `body`.
fn fence(body: &str) -> String {
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

/// `s` as a Markdown code span that survives any backticks in it and a table cell.
pub fn md_code(s: &str) -> String {
    let s = clean(s).replace('|', "\\|");
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let ticks = "`".repeat(longest + 1);
    if longest > 0 {
        format!("{ticks} {s} {ticks}")
    } else {
        format!("{ticks}{s}{ticks}")
    }
}

/// ANSI colours when `on`, nothing otherwise.
struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn red(&self, s: &str) -> String {
        self.wrap("31", s)
    }
    fn green(&self, s: &str) -> String {
        self.wrap("32", s)
    }
    fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
    fn alarm(&self, s: &str) -> String {
        self.wrap("1;31", s)
    }
}

pub(super) fn side_name(s: &super::Side) -> String {
    if s.names.is_empty() {
        s.id[..12].to_string()
    } else {
        format!("{} ({})", &s.id[..12], s.names.join(", "))
    }
}

fn summary_lines(s: &super::Summary) -> Vec<String> {
    vec![
        format!(
            "files: {} added, {} removed, {} changed; content of those paths {} -> {} bytes",
            s.files_added, s.files_removed, s.files_changed, s.bytes_old, s.bytes_new
        ),
        format!(
            "packages: {} added, {} removed, {} upgraded, {} downgraded",
            s.packages_added, s.packages_removed, s.packages_upgraded, s.packages_downgraded
        ),
    ]
}

pub(super) fn change_word(k: &PackageChangeKind) -> &'static str {
    match k {
        PackageChangeKind::Added => "added",
        PackageChangeKind::Removed => "removed",
        PackageChangeKind::Upgraded => "upgraded",
        PackageChangeKind::Downgraded => "DOWNGRADED",
    }
}

fn version_line(p: &super::PackageChange) -> String {
    format!(
        "{} {} -> {} ({}; source {})",
        p.name,
        p.old_version.as_deref().unwrap_or("-"),
        p.new_version.as_deref().unwrap_or("-"),
        change_word(&p.change),
        p.source
    )
}

/// What changed about a file, after its path: the phrases, else its type and mode.
pub(super) fn file_details(f: &FileChange) -> String {
    if !f.what.is_empty() {
        f.what.join("; ")
    } else if let Some(side) = f.new.as_ref().or(f.old.as_ref()) {
        format!("{} {} {}:{}", side.kind, side.mode, side.uid, side.gid)
    } else {
        String::new()
    }
}

fn mark(f: &FileChange) -> &'static str {
    match f.change {
        super::FileChangeKind::Added => "+",
        super::FileChangeKind::Removed => "-",
        super::FileChangeKind::Changed => "~",
    }
}

/// `diff` or `view`, for what a file's body is.
pub(super) fn body_word(f: &FileChange) -> &'static str {
    if f.diff.is_some() {
        "diff"
    } else {
        "view"
    }
}

/// `… 214 more files (+1.20 MB): 210 added, 4 changed`.
pub fn folded_line(r: &StatRow) -> String {
    let kinds: Vec<String> = [
        (r.added, "added"),
        (r.changed, "changed"),
        (r.removed, "removed"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, w)| format!("{n} {w}"))
    .collect();
    format!(
        "… {} more files ({}): {}",
        r.files(),
        r.delta(),
        kinds.join(", ")
    )
}

/// `… 3 more changelog lines (2 entries)`.
pub(super) fn changelog_fold(s: &Section) -> String {
    let (lines, entries) = s.changelog_omitted;
    format!("… {lines} more changelog lines ({entries} entries)")
}

/// The section's heading: `Files no package owns`, `Files of NAME`.
pub fn heading(s: &Section) -> String {
    match s.package {
        Some(p) => format!("Files of {p}"),
        None => "Files no package owns".into(),
    }
}

/// The report at `o`'s level, as text or Markdown.
pub fn render(r: &Report, o: &Options) -> String {
    let out = match (o.level, o.markdown) {
        (Level::Summary, false) => text_head(r, &Paint { on: o.colour }),
        (Level::Summary, true) => md_head(r),
        (Level::Stat, false) => {
            text_head(r, &Paint { on: o.colour }) + "\n" + &super::stat::stat(r).text()
        }
        (Level::Stat, true) => md_head(r) + "\n" + &super::stat::stat(r).markdown(),
        (Level::Sections, false) => text(&fold::shape(r, &o.limits), o.colour),
        (Level::Sections, true) => markdown(&fold::shape(r, &o.limits)),
    };
    match o.max_lines {
        Some(n) => cap_lines(&out, n, o.markdown),
        None => out,
    }
}

fn text_head(r: &Report, p: &Paint) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}",
        p.bold(&format!("{} -> {}", side_name(&r.old), side_name(&r.new)))
    );
    for l in summary_lines(&r.summary) {
        let _ = writeln!(o, "{l}");
    }
    o
}

fn md_head(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# {} → {}\n", side_name(&r.old), side_name(&r.new));
    for l in summary_lines(&r.summary) {
        let _ = writeln!(o, "- {l}");
    }
    o
}

/// The sections as text.
pub fn text(s: &Shaped, colour: bool) -> String {
    let p = Paint { on: colour };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}",
        p.bold(&format!("{} -> {}", side_name(s.old), side_name(s.new)))
    );
    for l in summary_lines(s.summary) {
        let _ = writeln!(o, "{l}");
    }
    if !s.packages.is_empty() {
        let _ = writeln!(o, "\n{}", p.bold("Packages"));
        for pk in s.packages {
            let _ = writeln!(o, "  {}", version_line(pk));
        }
    }
    for sec in &s.sections {
        let _ = writeln!(o, "\n{}", p.bold(&heading(sec)));
        if let Some(c) = sec.change {
            let _ = writeln!(o, "  {}", version_line(c));
        }
        for l in &sec.changelog {
            let _ = writeln!(o, "    | {}", clean(l));
        }
        if sec.changelog_omitted.0 > 0 {
            let _ = writeln!(o, "    {}", p.dim(&changelog_fold(sec)));
        }
        if let Some(other) = sec.changelog_see {
            let _ = writeln!(
                o,
                "    {}",
                p.dim(&format!("(changelog: as under {other}, the same source)"))
            );
        }
        for f in &sec.files {
            text_file(&mut o, f, &p);
        }
        if let Some(r) = &sec.folded {
            let _ = writeln!(o, "  {}", p.dim(&folded_line(r)));
        }
    }
    o
}

fn text_file(o: &mut String, sf: &ShownFile, p: &Paint) {
    let f = sf.file;
    let m = match f.change {
        super::FileChangeKind::Added => p.green("+"),
        super::FileChangeKind::Removed => p.red("-"),
        super::FileChangeKind::Changed => "~".into(),
    };
    let mut line = format!("  {m} {}  ({})", f.path, file_details(f));
    for fl in &f.flagged {
        line.push_str(&format!("  {}", p.alarm(&format!("[!] {fl}"))));
    }
    if sf.body.is_empty() && sf.body_omitted > 0 {
        let folded = format!("[{}: {} lines folded]", body_word(f), sf.body_omitted);
        line.push_str(&format!("  {}", p.dim(&folded)));
    }
    let _ = writeln!(o, "{line}");
    for l in &sf.body {
        let l = &clean(l);
        let l = match l.as_bytes().first() {
            Some(b'+') if !l.starts_with("+++") => p.green(l),
            Some(b'-') if !l.starts_with("---") => p.red(l),
            _ => l.to_string(),
        };
        let _ = writeln!(o, "      {l}");
    }
    if !sf.body.is_empty() && sf.body_omitted > 0 {
        let more = format!("… {} more lines of this {}", sf.body_omitted, body_word(f));
        let _ = writeln!(o, "      {}", p.dim(&more));
    }
}

/// The sections as Markdown, for a merge request or a ticket: a package table, each
/// section's changelog and diffs in fenced blocks.
pub fn markdown(s: &Shaped) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# {} → {}\n", side_name(s.old), side_name(s.new));
    for l in summary_lines(s.summary) {
        let _ = writeln!(o, "- {l}");
    }
    if !s.packages.is_empty() {
        let _ = writeln!(o, "\n## Packages\n");
        let _ = writeln!(
            o,
            "| Package | Old | New | Change | Source |\n|---|---|---|---|---|"
        );
        for p in s.packages {
            let v = |v: &Option<String>| v.as_deref().map(md_code).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                md_code(&p.name),
                v(&p.old_version),
                v(&p.new_version),
                change_word(&p.change),
                md_code(&p.source)
            );
        }
    }
    for sec in &s.sections {
        md_section(&mut o, sec);
    }
    o
}

/// A fenced block (`info` after the opening fence) of `lines`, indented by `indent`.
fn md_block(o: &mut String, info: &str, lines: &[String], indent: &str) {
    let body: Vec<String> = lines.iter().map(|l| clean(l)).collect();
    let f = fence(&body.join("\n"));
    let _ = writeln!(o, "\n{indent}{f}{info}");
    for l in &body {
        let _ = writeln!(o, "{indent}{l}");
    }
    let _ = writeln!(o, "{indent}{f}\n");
}

fn md_section(o: &mut String, sec: &Section) {
    match sec.package {
        Some(p) => {
            let _ = writeln!(o, "\n## Files of {}\n", md_code(p));
        }
        None => {
            let _ = writeln!(o, "\n## Files no package owns\n");
        }
    }
    if let Some(c) = sec.change {
        let _ = writeln!(o, "{}\n", md_code(&version_line(c)));
    }
    if !sec.changelog.is_empty() {
        let lines: Vec<String> = sec.changelog.iter().map(|l| l.to_string()).collect();
        md_block(o, "text", &lines, "");
    }
    if sec.changelog_omitted.0 > 0 {
        let _ = writeln!(o, "*{}*\n", changelog_fold(sec));
    }
    if let Some(other) = sec.changelog_see {
        let _ = writeln!(
            o,
            "*(changelog: as under {}, the same source)*\n",
            md_code(other)
        );
    }
    for sf in &sec.files {
        let f = sf.file;
        let mut line = format!(
            "- {} {} — {}",
            mark(f),
            md_code(&f.path),
            md_code(&file_details(f))
        );
        for fl in &f.flagged {
            line.push_str(&format!(" **[!] {}**", clean(fl).replace('*', "\\*")));
        }
        if sf.body.is_empty() && sf.body_omitted > 0 {
            line.push_str(&format!(
                " *[{}: {} lines folded]*",
                body_word(f),
                sf.body_omitted
            ));
        }
        let _ = writeln!(o, "{line}");
        if !sf.body.is_empty() {
            let info = if f.diff.is_some() || f.view.as_ref().is_some_and(|v| v.diff.is_some()) {
                "diff"
            } else {
                "text"
            };
            md_block(o, info, &sf.body, "  ");
            if sf.body_omitted > 0 {
                let _ = writeln!(
                    o,
                    "  *… {} more lines of this {}*\n",
                    sf.body_omitted,
                    body_word(f)
                );
            }
        }
    }
    if let Some(r) = &sec.folded {
        let _ = writeln!(o, "- *{}*", folded_line(r));
    }
}

/// `out` cut to `max` lines, the last of them saying how many lines were left out and
/// from which sections; a Markdown fence open at the cut is closed.
pub fn cap_lines(out: &str, max: usize, markdown: bool) -> String {
    let lines: Vec<&str> = out.lines().collect();
    if lines.len() <= max {
        return out.to_string();
    }
    let mut keep = max.saturating_sub(1);
    let open_fence = |n: usize| -> Option<String> {
        let mut open: Option<String> = None;
        for l in &lines[..n] {
            let t = l.trim_start();
            if t.starts_with("```") {
                let ticks: String = t.chars().take_while(|&c| c == '`').collect();
                match &open {
                    Some(f) if *f == ticks && t.trim_end() == ticks => open = None,
                    None => open = Some(ticks),
                    _ => {}
                }
            }
        }
        open
    };
    let close = if markdown { open_fence(keep) } else { None };
    if close.is_some() {
        keep = keep.saturating_sub(1);
    }
    let cut = &lines[keep..];
    let sections: Vec<&str> = cut
        .iter()
        .filter_map(|l| {
            let l = l.trim_start_matches("## ");
            let plain = l.trim_start_matches("\x1b[1m").trim_end_matches("\x1b[0m");
            (plain.starts_with("Files of ") || plain == "Files no package owns").then_some(plain)
        })
        .collect();
    let mut o: String = lines[..keep].iter().flat_map(|l| [*l, "\n"]).collect();
    if let Some(f) = close {
        o.push_str(&f);
        o.push('\n');
    }
    let mut last = format!("… {} more lines not shown (--max-lines {max})", cut.len());
    if !sections.is_empty() {
        let names: Vec<&str> = sections.iter().take(5).copied().collect();
        last.push_str(&format!(
            ", {} sections not shown: {}",
            sections.len(),
            names.join("; ")
        ));
        if sections.len() > 5 {
            last.push_str("; …");
        }
    }
    o.push_str(&last);
    o.push('\n');
    o
}

#[cfg(test)]
pub(super) mod tests;
