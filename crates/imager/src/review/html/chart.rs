//! The report's chart: what changed by package, in files (added, changed, removed,
//! stacked) and in bytes (old and new side by side), as two horizontal bar charts in
//! inline SVG drawn here. No chart library and no script: the page stays one small file
//! that shows the same in any browser, and the bars come from the stat's rows
//! ([`crate::review::stat`]), so they add up to `--stat`. The largest [`ROWS`] packages
//! are drawn, the rest counted under the chart.

use super::esc;
use crate::review::stat::{Stat, StatRow};
use crate::units::bytes;
use std::fmt::Write;

/// Bars per chart.
pub const ROWS: usize = 15;
/// Width of the label column, of the bars, and the whole chart, in pixels.
const LABEL: u64 = 180;
const BAR: u64 = 260;
const WIDTH: u64 = 560;
/// Height of one bar's row.
const ROW_H: u64 = 20;
/// Labels longer than this many characters are cut, with `…`.
const LABEL_CHARS: usize = 28;

/// Both charts, in a section of their own (nothing when no file changed).
pub(super) fn charts(o: &mut String, st: &Stat) {
    let rows: Vec<&StatRow> = st.packages.iter().filter(|r| r.files() > 0).collect();
    if rows.is_empty() {
        return;
    }
    o.push_str("<section id=\"chart\"><h2>What changed where</h2><div class=\"charts\">\n");
    let mut by_files = rows.clone();
    by_files.sort_by(|a, b| b.files().cmp(&a.files()).then(a.name.cmp(&b.name)));
    files_chart(o, &by_files);
    let mut by_bytes = rows;
    let big = |r: &StatRow| r.bytes_old.max(r.bytes_new);
    by_bytes.sort_by(|a, b| big(b).cmp(&big(a)).then(a.name.cmp(&b.name)));
    bytes_chart(o, &by_bytes);
    o.push_str("</div></section>\n");
}

/// A chart's frame: its heading and the `<svg>` opening for `n` rows.
fn open(o: &mut String, id: &str, title: &str, n: usize) {
    let h = n as u64 * ROW_H + 4;
    let _ = write!(
        o,
        "<figure class=\"chart\" data-chart=\"{id}\"><figcaption>{title}</figcaption>\
         <svg width=\"{WIDTH}\" height=\"{h}\" viewBox=\"0 0 {WIDTH} {h}\" role=\"img\" aria-label=\"{title}\">"
    );
}

/// Closes the chart, counting the packages it left out.
fn close(o: &mut String, total: usize) {
    o.push_str("</svg>");
    if total > ROWS {
        let _ = write!(
            o,
            "<p class=\"more\">… {} more packages (the stat lists every one)</p>",
            total - ROWS
        );
    }
    o.push_str("</figure>\n");
}

/// The row's label at the left, cut to [`LABEL_CHARS`], its full name as a tooltip.
fn label(o: &mut String, i: usize, name: &str) {
    let y = i as u64 * ROW_H + 14;
    let shown: String = if name.chars().count() > LABEL_CHARS {
        name.chars().take(LABEL_CHARS - 1).chain(['…']).collect()
    } else {
        name.to_string()
    };
    let _ = write!(
        o,
        "<text x=\"{}\" y=\"{y}\" text-anchor=\"end\"><title>{}</title>{}</text>",
        LABEL - 6,
        esc(name),
        esc(&shown)
    );
}

/// `v` of `max` as a bar length; a non-zero value gets at least one pixel.
fn scale(v: u64, max: u64) -> u64 {
    if v == 0 || max == 0 {
        return 0;
    }
    ((v as u128 * BAR as u128 / max as u128) as u64).max(1)
}

fn rect(o: &mut String, x: u64, y: u64, w: u64, h: u64, class: &str, tip: &str) {
    if w > 0 {
        let _ = write!(
            o,
            "<rect class=\"{class}\" x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\"><title>{}</title></rect>",
            esc(tip)
        );
    }
}

/// Files added, changed and removed per package, stacked.
fn files_chart(o: &mut String, rows: &[&StatRow]) {
    let shown = &rows[..rows.len().min(ROWS)];
    let max = shown.iter().map(|r| r.files()).max().unwrap_or(0);
    open(o, "files", "Files by package", shown.len());
    for (i, r) in shown.iter().enumerate() {
        label(o, i, &r.name);
        let y = i as u64 * ROW_H + 3;
        let mut x = LABEL;
        for (n, class, word) in [
            (r.added, "b-add", "added"),
            (r.changed, "b-chg", "changed"),
            (r.removed, "b-del", "removed"),
        ] {
            let w = scale(n, max);
            rect(
                o,
                x,
                y,
                w,
                ROW_H - 6,
                class,
                &format!("{}: {n} {word}", r.name),
            );
            x += w;
        }
        let _ = write!(
            o,
            "<text x=\"{}\" y=\"{}\">{} files</text>",
            x + 6,
            y + 11,
            r.files()
        );
    }
    close(o, rows.len());
}

/// Bytes per package, old (upper bar) and new (lower bar), with the change.
fn bytes_chart(o: &mut String, rows: &[&StatRow]) {
    let shown = &rows[..rows.len().min(ROWS)];
    let max = shown
        .iter()
        .map(|r| r.bytes_old.max(r.bytes_new))
        .max()
        .unwrap_or(0);
    open(o, "bytes", "Size by package (old, new)", shown.len());
    for (i, r) in shown.iter().enumerate() {
        label(o, i, &r.name);
        let y = i as u64 * ROW_H + 3;
        let (wo, wn) = (scale(r.bytes_old, max), scale(r.bytes_new, max));
        let h = (ROW_H - 6) / 2;
        rect(
            o,
            LABEL,
            y,
            wo,
            h,
            "b-old",
            &format!("{}: {} before", r.name, bytes(r.bytes_old)),
        );
        rect(
            o,
            LABEL,
            y + h,
            wn,
            h,
            "b-new",
            &format!("{}: {} after", r.name, bytes(r.bytes_new)),
        );
        let _ = write!(
            o,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            LABEL + wo.max(wn) + 6,
            y + 11,
            esc(&r.delta())
        );
    }
    close(o, rows.len());
}
