//! A [`Report`] as one HTML page a reviewer opens in a browser: the two images and the
//! counts, the package table with versions and changelog entries, a chart of what changed
//! by package ([`chart`]), then a collapsible section per package (files no package owns
//! first) with its changelog, its files and their diffs side by side ([`sides`]), and a
//! search box that filters sections and files.
//!
//! One self-contained file, so that it can be attached to a ticket and opened anywhere:
//! the style and the few lines of script are inline, the chart is SVG drawn here, fonts
//! are the system's; a Content-Security-Policy allows only that inline style and script
//! (by hash) and `data:` images, so even a mistake in escaping could not fetch anything
//! or run injected script. Everything from the images (paths, versions, changelogs,
//! diffs) goes through [`esc`]. What is shown is the text view's choice ([`fold::shape`]:
//! sections and diffs cut with "N more" lines; [`Limits::full`] shows everything), so the
//! page stays as bounded as the text, and the same report gives the same bytes.
//!
//! The DOM carries what a test (or a script) needs to check it against `--json`: rows
//! `tr[data-package][data-kind]`, sections `[data-section]` with `data-package`,
//! `data-total` and `data-folded` (files counted, files not shown), files `li[data-file]`
//! with `data-change`.

mod chart;
mod sides;

use super::fold::{self, Limits, Section, ShownFile};
use super::render::{change_word, changelog_fold, clean, file_details, folded_line, side_name};
use super::{FileChangeKind, PackageChange, Report};
use crate::units::bytes;
use base64::Engine;
use sha2::Digest;
use std::collections::BTreeSet;
use std::fmt::Write;

/// The page's style (system fonts only).
const STYLE: &str = include_str!("style.css");
/// The search box's script: filters sections, files and package rows, and takes its
/// query from the address (`report.html#q=openssl`) so that a link can carry a search.
const SCRIPT: &str = include_str!("search.js");

/// `s` made safe as HTML text and as a double- or single-quoted attribute value: `&`,
/// `<`, `>`, `"` and `'` as character references, control characters as `\xNN` (as the
/// text view shows them, so a reviewed file cannot hide or reorder lines).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in clean(s).chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A CSP source for inline content: `'sha256-BASE64'`.
fn csp_hash(content: &str) -> String {
    let digest = sha2::Sha256::digest(content.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The report as one HTML page, its sections folded to `limits` as the text view's are.
pub fn render(r: &Report, limits: &Limits) -> String {
    let shaped = fold::shape(r, limits);
    let stat = super::stat::stat(r);
    let mut o = String::with_capacity(256 << 10);
    head(&mut o, r);
    header(&mut o, r, limits);
    o.push_str("<main>\n");
    let with_section: BTreeSet<&str> = shaped.sections.iter().filter_map(|s| s.package).collect();
    packages(&mut o, &r.packages, &with_section);
    chart::charts(&mut o, &stat);
    let _ = writeln!(
        o,
        "<section id=\"files\"><h2>Files <small>({} sections)</small></h2>",
        shaped.sections.len()
    );
    if shaped.sections.is_empty() {
        o.push_str("<p class=\"empty\">No file changed.</p>\n");
    }
    for s in &shaped.sections {
        section(&mut o, s);
    }
    o.push_str("</section>\n</main>\n");
    let _ = write!(o, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    o
}

fn head(o: &mut String, r: &Report) {
    let csp = format!(
        "default-src 'none'; style-src {}; script-src {}; img-src data:; form-action 'none'; base-uri 'none'",
        csp_hash(STYLE),
        csp_hash(SCRIPT)
    );
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"imager diff --html\">\n\
         <title>imager diff: {} → {}</title>\n<link rel=\"icon\" href=\"data:,\">\n\
         <style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&side_name(&r.old)),
        esc(&side_name(&r.new)),
    );
}

/// The images, the counts, what the page leaves out, and the search box.
fn header(o: &mut String, r: &Report, limits: &Limits) {
    let s = &r.summary;
    let side = |label: &str, sd: &super::Side| {
        let names = if sd.names.is_empty() {
            "<span class=\"dim\">(unnamed)</span>".to_string()
        } else {
            esc(&sd.names.join(", "))
        };
        format!(
            "<div class=\"side\" data-side=\"{label}\" data-id=\"{id}\"><span class=\"label\">{label}</span> {names} <code>{id}</code></div>",
            id = esc(&sd.id)
        )
    };
    let _ = write!(
        o,
        "<header>\n<h1>{} → {}</h1>\n{}\n{}\n",
        esc(&side_name(&r.old)),
        esc(&side_name(&r.new)),
        side("old", &r.old),
        side("new", &r.new)
    );
    let _ = write!(
        o,
        "<ul class=\"summary\" data-files-added=\"{}\" data-files-removed=\"{}\" data-files-changed=\"{}\" \
         data-packages-added=\"{}\" data-packages-removed=\"{}\" data-packages-upgraded=\"{}\" data-packages-downgraded=\"{}\">\n\
         <li><b>{}</b> files added</li><li><b>{}</b> removed</li><li><b>{}</b> changed</li>\
         <li>content of those paths <b>{}</b> → <b>{}</b></li>\n\
         <li><b>{}</b> packages added</li><li><b>{}</b> removed</li><li><b>{}</b> upgraded</li><li{}><b>{}</b> downgraded</li>\n</ul>\n",
        s.files_added, s.files_removed, s.files_changed,
        s.packages_added, s.packages_removed, s.packages_upgraded, s.packages_downgraded,
        s.files_added, s.files_removed, s.files_changed, bytes(s.bytes_old), bytes(s.bytes_new),
        s.packages_added, s.packages_removed, s.packages_upgraded,
        if s.packages_downgraded > 0 { " class=\"alarm\"" } else { "" },
        s.packages_downgraded,
    );
    let shown = match (limits.section_lines, limits.diff_lines) {
        (None, None) => "Everything is shown (--full).".to_string(),
        (sec, diff) => format!(
            "As the text view: each section cut to {} lines, each diff or view to {} lines, the rest counted; the search looks at the files shown (imager diff --full shows everything).",
            sec.map_or("any".into(), |n| n.to_string()),
            diff.map_or("any".into(), |n| n.to_string())
        ),
    };
    let _ = write!(
        o,
        "<p class=\"dim\">{}</p>\n<div class=\"search\"><input id=\"q\" type=\"search\" \
         placeholder=\"Filter by package or path\" aria-label=\"Filter by package or path\" autocomplete=\"off\"> \
         <output id=\"shown\" for=\"q\"></output></div>\n</header>\n",
        esc(&shown)
    );
}

/// The package table: name (a link to its section), versions, change, source,
/// changelog entries.
fn packages(o: &mut String, pkgs: &[PackageChange], with_section: &BTreeSet<&str>) {
    let _ = writeln!(
        o,
        "<section id=\"packages\"><h2>Packages <small>({})</small></h2>",
        pkgs.len()
    );
    if pkgs.is_empty() {
        o.push_str("<p class=\"empty\">No package changed.</p></section>\n");
        return;
    }
    o.push_str(
        "<table class=\"packages\"><thead><tr><th>Package</th><th>Old</th><th></th><th>New</th>\
         <th>Change</th><th>Source</th><th>Changelog</th></tr></thead>\n<tbody>\n",
    );
    for p in pkgs {
        let name = esc(&p.name);
        let link = if with_section.contains(p.name.as_str()) {
            format!("<a href=\"#pkg-{name}\">{name}</a>")
        } else {
            name.clone()
        };
        let kind = change_word(&p.change).to_lowercase();
        let log = match p.changelog.as_slice() {
            [] => String::new(),
            entries => {
                let versions: Vec<String> =
                    entries.iter().take(3).map(|e| esc(&e.version)).collect();
                let more = if entries.len() > 3 { ", …" } else { "" };
                format!(
                    "{} {}: {}{more}",
                    entries.len(),
                    if entries.len() == 1 {
                        "entry"
                    } else {
                        "entries"
                    },
                    versions.join(", ")
                )
            }
        };
        let _ = writeln!(
            o,
            "<tr data-package=\"{name}\" data-source=\"{}\" data-kind=\"{kind}\" data-changelog=\"{}\" class=\"k-{kind}\">\
             <td>{link}</td><td class=\"ver\">{}</td><td>→</td><td class=\"ver\">{}</td><td>{}</td><td>{}</td><td>{log}</td></tr>",
            esc(&p.source),
            p.changelog.len(),
            esc(p.old_version.as_deref().unwrap_or("—")),
            esc(p.new_version.as_deref().unwrap_or("—")),
            esc(change_word(&p.change)),
            esc(&p.source),
        );
    }
    o.push_str("</tbody></table>\n</section>\n");
}

/// The counts after a section's heading: `+12 ~3 −1 · +1.20 MB`.
fn counts(s: &Section) -> String {
    let t = &s.total;
    format!(
        "<span class=\"counts\"><span class=\"add\">+{}</span> <span class=\"chg\">~{}</span> \
         <span class=\"del\">−{}</span> · {}</span>",
        t.added,
        t.changed,
        t.removed,
        esc(&t.delta())
    )
}

fn section(o: &mut String, s: &Section) {
    let (kind, name, id) = match s.package {
        Some(p) => ("package", p, format!("pkg-{p}")),
        None => ("unowned", "", "unowned".to_string()),
    };
    let folded = s.folded.as_ref().map_or(0, |f| f.files());
    let _ = writeln!(
        o,
        "<details class=\"sec\" id=\"{}\" data-section=\"{kind}\" data-package=\"{}\" data-total=\"{}\" data-folded=\"{folded}\" open>",
        esc(&id),
        esc(name),
        s.total.files()
    );
    let version = s.change.map_or(String::new(), |c| {
        format!(
            " <span class=\"ver\">{} → {} ({})</span>",
            esc(c.old_version.as_deref().unwrap_or("—")),
            esc(c.new_version.as_deref().unwrap_or("—")),
            esc(change_word(&c.change))
        )
    });
    let _ = writeln!(
        o,
        "<summary><h3>{}</h3>{version} {}</summary>",
        esc(&super::render::heading(s)),
        counts(s)
    );
    changelog(o, s);
    if !s.files.is_empty() {
        o.push_str("<ul class=\"files\">\n");
        for f in &s.files {
            file(o, f);
        }
        o.push_str("</ul>\n");
    }
    if let Some(r) = &s.folded {
        let _ = writeln!(
            o,
            "<p class=\"more\" data-folded-files=\"{}\">{} <span class=\"dim\">(--full shows them)</span></p>",
            r.files(),
            esc(&folded_line(r))
        );
    }
    o.push_str("</details>\n");
}

fn changelog(o: &mut String, s: &Section) {
    if !s.changelog.is_empty() {
        let lines: Vec<String> = s.changelog.iter().map(|l| esc(l)).collect();
        let _ = writeln!(
            o,
            "<details class=\"log\" open><summary>Changelog</summary><pre class=\"changelog\">{}</pre>",
            lines.join("\n")
        );
        if s.changelog_omitted.0 > 0 {
            let _ = write!(o, "<p class=\"more\">{}</p>", esc(&changelog_fold(s)));
        }
        o.push_str("</details>\n");
    }
    if let Some(other) = s.changelog_see {
        let _ = writeln!(
            o,
            "<p class=\"dim\">Changelog: as under <a href=\"#pkg-{0}\">{0}</a>, the same source.</p>",
            esc(other)
        );
    }
}

/// One file: its change, path, what changed and flags; its diff or view under it.
fn file(o: &mut String, sf: &ShownFile) {
    let f = sf.file;
    let (change, mark) = match f.change {
        FileChangeKind::Added => ("added", "+"),
        FileChangeKind::Removed => ("removed", "−"),
        FileChangeKind::Changed => ("changed", "~"),
    };
    let mut line = format!(
        "<span class=\"mark m-{change}\">{mark}</span> <code class=\"path\">{}</code> <span class=\"what\">{}</span>",
        esc(&f.path),
        esc(&file_details(f))
    );
    for fl in &f.flagged {
        let _ = write!(line, " <span class=\"flag\">[!] {}</span>", esc(fl));
    }
    if sf.body.is_empty() && sf.body_omitted > 0 {
        let _ = write!(
            line,
            " <span class=\"dim\">[{}: {} lines folded]</span>",
            super::render::body_word(f),
            sf.body_omitted
        );
    }
    let flagged = if f.flagged.is_empty() {
        ""
    } else {
        " data-flagged=\"1\""
    };
    let _ = write!(
        o,
        "<li data-file=\"{}\" data-change=\"{change}\"{flagged}>",
        esc(&f.path)
    );
    if sf.body.is_empty() {
        let _ = write!(o, "<div class=\"fl\">{line}</div>");
    } else {
        let _ = write!(o, "<details open><summary>{line}</summary>");
        sides::body(o, sf);
        o.push_str("</details>");
    }
    o.push_str("</li>\n");
}

#[cfg(test)]
mod tests;
