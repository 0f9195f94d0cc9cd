//! A [`Report`] as text (coloured on a terminal) or Markdown. Stable order throughout
//! (packages by name, files in image order), so a report can itself be reviewed as a
//! diff. JSON is the report's serde form.

use super::{FileChange, PackageChangeKind, Report};
use std::fmt::Write;

/// Content from an image made safe for a terminal: control characters (escape
/// sequences, carriage returns) shown as `\xNN` so a reviewed file cannot hide lines.
fn clean(s: &str) -> String {
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
    fn alarm(&self, s: &str) -> String {
        self.wrap("1;31", s)
    }
}

fn side_name(s: &super::Side) -> String {
    if s.names.is_empty() {
        s.id[..12].to_string()
    } else {
        format!("{} ({})", &s.id[..12], s.names.join(", "))
    }
}

fn summary_lines(r: &Report) -> Vec<String> {
    let s = &r.summary;
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

fn version_line(p: &super::PackageChange) -> String {
    let kind = match p.change {
        PackageChangeKind::Added => "added",
        PackageChangeKind::Removed => "removed",
        PackageChangeKind::Upgraded => "upgraded",
        PackageChangeKind::Downgraded => "DOWNGRADED",
    };
    format!(
        "{} {} -> {} ({kind}; source {})",
        p.name,
        p.old_version.as_deref().unwrap_or("-"),
        p.new_version.as_deref().unwrap_or("-"),
        p.source
    )
}

fn file_line(f: &FileChange, paint: &Paint) -> String {
    let mark = match f.change {
        super::FileChangeKind::Added => paint.green("+"),
        super::FileChangeKind::Removed => paint.red("-"),
        super::FileChangeKind::Changed => "~".to_string(),
    };
    let mut s = format!("{mark} {}", f.path);
    if !f.what.is_empty() {
        s.push_str(&format!("  ({})", f.what.join("; ")));
    } else if let Some(side) = f.new.as_ref().or(f.old.as_ref()) {
        s.push_str(&format!(
            "  ({} {} {}:{})",
            side.kind, side.mode, side.uid, side.gid
        ));
    }
    for fl in &f.flagged {
        s.push_str(&format!("  {}", paint.alarm(&format!("[!] {fl}"))));
    }
    s
}

/// Plain or coloured text; `summary_only` stops after the summary.
pub fn text(r: &Report, colour: bool, summary_only: bool) -> String {
    let p = Paint { on: colour };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}",
        p.bold(&format!("{} -> {}", side_name(&r.old), side_name(&r.new)))
    );
    for l in summary_lines(r) {
        let _ = writeln!(o, "{l}");
    }
    if summary_only {
        return o;
    }
    if !r.packages.is_empty() {
        let _ = writeln!(o, "\n{}", p.bold("Packages"));
        for pk in &r.packages {
            let _ = writeln!(o, "  {}", version_line(pk));
            for e in &pk.changelog {
                for l in e.text.lines() {
                    let _ = writeln!(o, "    | {}", clean(l));
                }
            }
        }
    }
    let files = |o: &mut String, list: &[FileChange]| {
        for f in list {
            let _ = writeln!(o, "  {}", file_line(f, &p));
            if let Some(d) = &f.diff {
                for l in d.lines() {
                    let l = &clean(l);
                    let l = match l.as_bytes().first() {
                        Some(b'+') if !l.starts_with("+++") => p.green(l),
                        Some(b'-') if !l.starts_with("---") => p.red(l),
                        _ => l.to_string(),
                    };
                    let _ = writeln!(o, "      {l}");
                }
            }
        }
    };
    if !r.unowned.is_empty() {
        let _ = writeln!(o, "\n{}", p.bold("Files no package owns"));
        files(&mut o, &r.unowned);
    }
    for g in &r.by_package {
        let _ = writeln!(o, "\n{}", p.bold(&format!("Files of {}", g.package)));
        files(&mut o, &g.files);
    }
    o
}

/// Markdown, for a merge request or a ticket (changed files' diffs in code fences);
/// `summary_only` stops after the summary.
pub fn markdown(r: &Report, summary_only: bool) -> String {
    let p = Paint { on: false };
    let mut o = String::new();
    let _ = writeln!(o, "# {} → {}\n", side_name(&r.old), side_name(&r.new));
    for l in summary_lines(r) {
        let _ = writeln!(o, "- {l}");
    }
    if summary_only {
        return o;
    }
    if !r.packages.is_empty() {
        let _ = writeln!(o, "\n## Packages\n");
        for pk in &r.packages {
            let _ = writeln!(o, "- `{}`", version_line(pk));
            if !pk.changelog.is_empty() {
                let body: String = pk.changelog.iter().map(|e| clean(&e.text) + "\n").collect();
                let f = fence(&body);
                let _ = writeln!(o, "\n  {f}");
                for l in body.lines() {
                    let _ = writeln!(o, "  {l}");
                }
                let _ = writeln!(o, "  {f}\n");
            }
        }
    }
    let files = |o: &mut String, list: &[FileChange]| {
        for f in list {
            let _ = writeln!(o, "- `{}`", file_line(f, &p));
            if let Some(d) = &f.diff {
                let body = clean(d);
                let f = fence(&body);
                let _ = writeln!(o, "\n  {f}diff");
                for l in body.lines() {
                    let _ = writeln!(o, "  {l}");
                }
                let _ = writeln!(o, "  {f}\n");
            }
        }
    };
    if !r.unowned.is_empty() {
        let _ = writeln!(o, "\n## Files no package owns\n");
        files(&mut o, &r.unowned);
    }
    for g in &r.by_package {
        let _ = writeln!(o, "\n## Files of `{}`\n", g.package);
        files(&mut o, &g.files);
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_cannot_reach_the_terminal_or_break_a_fence() {
        assert_eq!(super::clean("a\x1b[2Jb\rc\td"), "a\\x1b[2Jb\\x0dc\td");
        assert_eq!(super::fence("x ```` y"), "`````");
        assert_eq!(super::fence("plain"), "```");
    }
}
