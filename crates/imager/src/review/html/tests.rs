//! The page on a report made up here: escaping of hostile paths and content, the side by
//! side rows, the caps, and the same bytes each time. (The browser's view of a real
//! report is tested in imager/tests/review.rs.)

use super::super::fold::Limits;
use super::super::*;
use super::*;
use crate::review::render::tests::side;

fn changed(path: &str, diff: Option<&str>) -> FileChange {
    FileChange {
        path: path.into(),
        change: FileChangeKind::Changed,
        old: Some(side(10)),
        new: Some(side(12)),
        what: vec!["content 10 -> 12 bytes".into()],
        flagged: Vec::new(),
        diff: diff.map(str::to_string),
        view: None,
    }
}

fn report(files: Vec<FileChange>) -> Report {
    let s = |id: char| Side {
        id: id.to_string().repeat(64),
        names: vec![format!("img<{id}>")],
    };
    Report {
        old: s('a'),
        new: s('b'),
        summary: Summary::default(),
        packages: vec![PackageChange {
            name: "tool".into(),
            change: PackageChangeKind::Upgraded,
            old_version: Some("1.0".into()),
            new_version: Some("1.1<b>".into()),
            source: "tool".into(),
            source_version: "1.1".into(),
            changelog: vec![crate::packages::dpkg::ChangelogEntry {
                version: "1.1".into(),
                text: "tool (1.1) bookworm\n\n  * see <https://example.org/x> & \"more\"".into(),
            }],
        }],
        unowned: files,
        by_package: vec![PackageFiles {
            package: "tool".into(),
            files: vec![changed("/usr/bin/tool", None)],
        }],
    }
}

const HOSTILE: &str = "/opt/<script>document.body.dataset.pwned=1</script>\" onmouseover=\"x";

#[test]
fn paths_versions_and_content_are_escaped_everywhere() {
    let diff = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-<img src=x onerror=alert(1)>\n+</table>\x1b[31m\n";
    let page = render(
        &report(vec![changed(HOSTILE, Some(diff))]),
        &Limits::DEFAULT,
    );
    // One script element: the page's own.
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains("</table>\x1b"));
    assert!(page.contains(
        "&lt;script&gt;document.body.dataset.pwned=1&lt;/script&gt;&quot; onmouseover=&quot;x"
    ));
    assert!(
        page.contains("\\x1b[31m"),
        "control characters shown as \\xNN"
    );
    assert!(page.contains("1.1&lt;b&gt;") && page.contains("img&lt;a&gt;"));
    // A link in changelog text is text, never an href or a src.
    assert!(page.contains("&lt;https://example.org/x&gt; &amp; &quot;more&quot;"));
    assert!(!page.contains("href=\"http") && !page.contains("src=\"http"));
}

#[test]
fn a_diff_is_drawn_side_by_side_with_line_numbers() {
    let diff = "--- a/etc/app.conf\n+++ b/etc/app.conf\n@@ -4,4 +4,5 @@\n keep\n-port 80\n-host a\n+port 8080\n+host b\n+extra\n tail\n";
    let mut o = String::new();
    let f = changed("/etc/app.conf", Some(diff));
    let sf = fold::ShownFile {
        file: &f,
        body: fold::body(&f),
        body_omitted: 0,
    };
    sides::body(&mut o, &sf);
    assert!(o.contains("<tr class=\"ctx\"><td class=\"ln\">4</td><td class=\"o\">keep</td><td class=\"ln\">4</td><td class=\"n\">keep</td></tr>"), "{o}");
    assert!(o.contains("<tr class=\"chg\"><td class=\"ln\">5</td><td class=\"o\">port 80</td><td class=\"ln\">5</td><td class=\"n\">port 8080</td></tr>"), "{o}");
    assert!(o.contains("<tr class=\"add\"><td class=\"ln\"></td><td class=\"none\"></td><td class=\"ln\">7</td><td class=\"n\">extra</td></tr>"), "{o}");
    assert!(
        o.contains("<td class=\"ln\">7</td><td class=\"o\">tail</td><td class=\"ln\">8</td>"),
        "{o}"
    );
    assert_eq!(o.matches("<tr class=\"hdr\">").count(), 1);
}

#[test]
fn caps_say_what_they_cut_and_full_lifts_them() {
    let mut d = String::from("--- a/f\n+++ b/f\n@@ -0,0 +1,100 @@\n");
    for i in 0..100 {
        d.push_str(&format!("+line {i}\n"));
    }
    let files: Vec<FileChange> = (0..200)
        .map(|i| changed(&format!("/etc/f{i:03}"), (i == 0).then_some(d.as_str())))
        .collect();
    let r = report(files);
    let page = render(&r, &Limits::DEFAULT);
    let shown = page.matches("<li data-file=\"/etc/f").count();
    assert!(shown < 60, "{shown} files shown");
    assert!(page.contains(&format!("data-folded=\"{}\"", 200 - shown)));
    assert!(page.contains("more lines of this diff"));
    let full = render(&r, &Limits::full());
    assert_eq!(full.matches("<li data-file=\"/etc/f").count(), 200);
    assert!(full.contains("data-folded=\"0\"") && !full.contains("more lines of this"));
    assert!(full.contains("<td class=\"n\">line 99</td>"));
    // The same report, the same bytes.
    assert_eq!(page, render(&r, &Limits::DEFAULT));
}

#[test]
fn the_policy_allows_exactly_the_inline_style_and_script() {
    let page = render(&report(Vec::new()), &Limits::DEFAULT);
    let csp = page
        .split("Content-Security-Policy\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default();
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(csp.contains(&csp_hash(STYLE)) && csp.contains(&csp_hash(SCRIPT)));
    assert!(page.contains(&format!("<style>{STYLE}</style>")));
    assert!(page.contains(&format!("<script>{SCRIPT}</script>")));
}
