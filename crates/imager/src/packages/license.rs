//! A package's licence as an SPDX licence expression, read from its
//! `/usr/share/doc/PKG/copyright`, for the SBOMs: scanners and licence reviews read the
//! expression, and Debian ships nothing else that names a package's licence.
//!
//! Only machine-readable copyright files (DEP-5, "copyright-format 1.0": a first
//! paragraph with `Format:`) are read; any other file gives `None` (the SBOMs say
//! `NOASSERTION`), since guessing licences from prose would be worse than saying nothing.
//!
//! The expression is the conjunction (`AND`) of the `License:` expressions of the
//! header paragraph and of every `Files:` paragraph, in file order (so `Files: *`'s
//! first), each distinct term once. A copyright file describes the source package and does not say which of its
//! files a binary package carries, so any of those licences may apply: all of them is
//! the declared licence that does not under-state. Standalone `License:` paragraphs only
//! give the texts of the names used.
//!
//! Debian's short names become SPDX identifiers where the two differ and the meaning is
//! certain (`GPL-2+` → `GPL-2.0-or-later`, `Expat` → `MIT`, `BSD-3-clause` →
//! `BSD-3-Clause`, `Artistic` → `Artistic-1.0-Perl`, the text in common-licenses); any
//! other name becomes `LicenseRef-NAME` (sanitised to SPDX's `[A-Za-z0-9.-]`), with the
//! copyright file's text of it, which SPDX requires a document to declare. A `License:`
//! whose first line is not an expression (some files put the licence's prose there)
//! becomes `LicenseRef-unnamed-` and the first 12 hex digits of its text's SHA-256.

use crate::deb822;
use sha2::Digest;

/// A package's licensing as its copyright file gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Licensing {
    /// The SPDX licence expression (compound expressions of a paragraph parenthesised).
    pub expression: String,
    /// The `LicenseRef-` identifiers the expression uses, with the text the file gives.
    pub refs: Vec<Extracted>,
}

/// A licence that is not on SPDX's list: what SPDX calls extracted licensing info.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    /// `LicenseRef-...`.
    pub id: String,
    /// The name the copyright file uses (or a description, for an unnamed licence).
    pub name: String,
    /// The licence's text from the copyright file; never empty.
    pub text: String,
}

/// A parsed licence expression.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    /// One licence: an SPDX id, `ID WITH EXCEPTION` or a `LicenseRef-`.
    One(String),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    fn spdx(&self) -> String {
        let join = |v: &[Expr], op: &str| {
            v.iter()
                .map(|e| match e {
                    Expr::One(s) => s.clone(),
                    e => format!("({})", e.spdx()),
                })
                .collect::<Vec<_>>()
                .join(op)
        };
        match self {
            Expr::One(s) => s.clone(),
            Expr::And(v) => join(v, " AND "),
            Expr::Or(v) => join(v, " OR "),
        }
    }
}

/// The licensing a copyright file declares; `None` when it is not machine-readable
/// (DEP-5) or names no licence. `shown` names the file in the description of an
/// unnamed licence.
pub fn from_copyright(text: &str, shown: &str) -> Option<Licensing> {
    let paras = deb822::parse(text);
    let format = paras.first()?.get("Format")?.to_ascii_lowercase();
    if !(format.contains("copyright-format") || format.contains("dep5")) {
        return None;
    }
    let mut exprs: Vec<Expr> = Vec::new();
    let mut refs: Vec<Extracted> = Vec::new();
    for (i, p) in paras.iter().enumerate() {
        if i > 0 && p.get("Files").is_none() {
            continue; // a standalone licence text
        }
        let Some(field) = p.get("License") else {
            continue;
        };
        let (first, body) = field.split_once('\n').unwrap_or((field, ""));
        if first.trim().is_empty() {
            continue; // the header's prose summary, no name
        }
        let e = match parse(first) {
            Some(e) => e,
            None => {
                let id = format!("LicenseRef-unnamed-{}", &hex(field)[..12]);
                let text = body_text(field);
                add_ref(
                    &mut refs,
                    &id,
                    &format!("an unnamed licence in {shown}"),
                    text,
                );
                Expr::One(id)
            }
        };
        for name in names(&e) {
            if name.starts_with("LicenseRef-") {
                let debian = debian_name(&paras, &name);
                let text = licence_text(&paras, first, body, &name, &debian);
                add_ref(&mut refs, &name, &debian, text);
            }
        }
        // AND is associative and idempotent: one flat list of distinct terms.
        let terms = match e {
            Expr::And(v) => v,
            e => vec![e],
        };
        for t in terms {
            if !exprs.contains(&t) {
                exprs.push(t);
            }
        }
    }
    let e = match exprs.len() {
        0 => return None,
        1 => exprs.remove(0),
        _ => Expr::And(exprs),
    };
    Some(Licensing {
        expression: e.spdx(),
        refs,
    })
}

fn hex(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn add_ref(refs: &mut Vec<Extracted>, id: &str, name: &str, text: String) {
    if !refs.iter().any(|r| r.id == id) {
        refs.push(Extracted {
            id: id.to_string(),
            name: name.to_string(),
            text,
        });
    }
}

/// A field's text as written: continuation lines, `.` for an empty line.
fn body_text(field: &str) -> String {
    field
        .lines()
        .map(|l| if l == "." { "" } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The licence names of an expression (the `LicenseRef-`s among them).
fn names(e: &Expr) -> Vec<String> {
    match e {
        Expr::One(s) => s
            .split(" WITH ")
            .next()
            .map(str::to_string)
            .into_iter()
            .collect(),
        Expr::And(v) | Expr::Or(v) => v.iter().flat_map(names).collect(),
    }
}

/// The Debian name a `LicenseRef-` was made from (the first `License:` whose name
/// sanitises to it), else the id itself.
fn debian_name(paras: &[deb822::Paragraph], id: &str) -> String {
    for p in paras {
        let Some(first) = p.get("License").and_then(|f| f.lines().next()) else {
            continue;
        };
        for word in first.split([' ', ',']) {
            if licence_ref(word) == id {
                return word.to_string();
            }
        }
    }
    id.to_string()
}

/// The text of licence `id` (a `LicenseRef-`): a standalone `License:` paragraph of
/// that name, else this paragraph's own text when it names only one licence, else a
/// sentence saying the file names it (`debian`) without its text: the same for every
/// file, so that one name is one `LicenseRef-` across a document.
fn licence_text(
    paras: &[deb822::Paragraph],
    first: &str,
    body: &str,
    id: &str,
    debian: &str,
) -> String {
    for p in paras.iter().skip(1).filter(|p| p.get("Files").is_none()) {
        if let Some((name, text)) = p.get("License").and_then(|f| f.split_once('\n')) {
            if licence_ref(name.trim()) == id && !text.trim().is_empty() {
                return body_text(text);
            }
        }
    }
    if !body.trim().is_empty() && licence_ref(first.trim()) == id {
        return body_text(body);
    }
    format!("The licence a Debian copyright file names {debian:?} without giving its text.")
}

/// A Debian licence expression (`A or B, and C with X exception`) as SPDX, or None
/// when the text is not one. Commas separate groups joined left to right by the word
/// after them; within a group `and` binds tighter than `or`, as in SPDX.
fn parse(text: &str) -> Option<Expr> {
    let spaced = text.replace(',', " , ");
    let toks: Vec<&str> = spaced.split_whitespace().collect();
    let mut groups = toks.split(|t| *t == ",");
    let mut acc = group(groups.next()?)?;
    for g in groups {
        let (op, rest) = g.split_first()?;
        let next = group(rest)?;
        acc = match op.to_ascii_lowercase().as_str() {
            "and" => combine(acc, next, true),
            "or" => combine(acc, next, false),
            _ => return None,
        };
    }
    Some(acc)
}

fn combine(a: Expr, b: Expr, and: bool) -> Expr {
    match (a, and) {
        (Expr::And(mut v), true) => {
            v.push(b);
            Expr::And(v)
        }
        (Expr::Or(mut v), false) => {
            v.push(b);
            Expr::Or(v)
        }
        (a, true) => Expr::And(vec![a, b]),
        (a, false) => Expr::Or(vec![a, b]),
    }
}

/// `conj (or conj)*`, each `conj` being `atom (and atom)*`.
fn group(toks: &[&str]) -> Option<Expr> {
    let is = |t: &str, w: &str| t.eq_ignore_ascii_case(w);
    let mut alts = Vec::new();
    for alt in toks.split(|t| is(t, "or")) {
        let mut conj = Vec::new();
        for atom_toks in alt.split(|t| is(t, "and")) {
            conj.push(Expr::One(atom(atom_toks)?));
        }
        alts.push(if conj.len() == 1 {
            conj.remove(0)
        } else {
            Expr::And(conj)
        });
    }
    Some(if alts.len() == 1 {
        alts.remove(0)
    } else {
        Expr::Or(alts)
    })
}

/// `NAME` or `NAME with WORDS exception`.
fn atom(toks: &[&str]) -> Option<String> {
    let (name, rest) = toks.split_first()?;
    let name_like = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-/'".contains(&b))
    };
    if !name_like(name) {
        return None;
    }
    if rest.is_empty() {
        return Some(spdx_id(name).unwrap_or_else(|| licence_ref(name)));
    }
    let (with, words) = rest.split_first()?;
    let (last, words) = words.split_last()?;
    if !with.eq_ignore_ascii_case("with")
        || !last.eq_ignore_ascii_case("exception")
        || words.is_empty()
        || !words.iter().all(|w| name_like(w))
    {
        return None;
    }
    let exc = words.join(" ");
    match spdx_id(name).and_then(|id| Some((exception(&id, &exc)?, id))) {
        Some((e, id)) => Some(format!("{id} WITH {e}")),
        None => Some(licence_ref(&format!("{name}-with-{exc}-exception"))),
    }
}

/// `LicenseRef-` and the name with every character SPDX does not allow in an id as `-`.
fn licence_ref(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if ["public-domain", "pd", "public_domain", "publicdomain"].contains(&lower.as_str()) {
        return "LicenseRef-public-domain".to_string();
    }
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("LicenseRef-{s}")
}

/// The SPDX exception for Debian's `with WORDS exception` on licence `id`, when certain.
fn exception(id: &str, words: &str) -> Option<&'static str> {
    Some(match words.to_ascii_lowercase().as_str() {
        "bison" => "Bison-exception-2.2",
        "libtool" => "Libtool-exception",
        "linux-syscall-note" => "Linux-syscall-note",
        "classpath" => "Classpath-exception-2.0",
        "font" => "Font-exception-2.0",
        "texinfo" => "Texinfo-exception",
        "gcc-3.1" | "gcc runtime library" => "GCC-exception-3.1",
        "autoconf" if id.starts_with("GPL-2.0") => "Autoconf-exception-2.0",
        "autoconf" if id.starts_with("GPL-3.0") => "Autoconf-exception-3.0",
        _ => return None,
    })
}

/// SPDX ids matched case-insensitively as they are.
const SPDX_IDS: &[&str] = &[
    "0BSD",
    "Apache-1.0",
    "Apache-1.1",
    "Apache-2.0",
    "Artistic-1.0",
    "Artistic-1.0-Perl",
    "Artistic-2.0",
    "Beerware",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSD-4-Clause",
    "BSD-4-Clause-UC",
    "BSL-1.0",
    "bzip2-1.0.6",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "CC0-1.0",
    "CDDL-1.0",
    "curl",
    "EPL-1.0",
    "EPL-2.0",
    "FSFAP",
    "FSFUL",
    "FSFULLR",
    "HPND",
    "ICU",
    "IJG",
    "ISC",
    "Latex2e",
    "libtiff",
    "LPPL-1.3c",
    "MIT",
    "MIT-0",
    "MPL-1.1",
    "MPL-2.0",
    "Ms-PL",
    "NTP",
    "OFL-1.1",
    "OLDAP-2.8",
    "OpenSSL",
    "PSF-2.0",
    "Python-2.0",
    "Ruby",
    "Sleepycat",
    "TCL",
    "Unicode-DFS-2016",
    "Unlicense",
    "UPL-1.0",
    "Vim",
    "W3C",
    "WTFPL",
    "X11",
    "Zlib",
    "zlib-acknowledgement",
];

/// Debian's names that differ from SPDX's (lower case) and what they mean.
const ALIASES: &[(&str, &str)] = &[
    ("expat", "MIT"),
    ("apache-2", "Apache-2.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-2", "Artistic-2.0"),
    ("cc0", "CC0-1.0"),
    ("openldap-2.8", "OLDAP-2.8"),
    ("psf-2", "PSF-2.0"),
    ("mpl-2", "MPL-2.0"),
    ("boost-1.0", "BSL-1.0"),
];

/// The SPDX id of a Debian licence name, when there is a certain one.
fn spdx_id(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if let Some(id) = SPDX_IDS.iter().find(|i| i.eq_ignore_ascii_case(name)) {
        return Some(id.to_string());
    }
    if let Some((_, id)) = ALIASES.iter().find(|(d, _)| *d == lower) {
        return Some(id.to_string());
    }
    gnu(&lower)
}

/// The GNU licences by version: `GPL-2`, `GPL-2+`, `GPLv3+`, `LGPL-2.1+`,
/// `GPL-2.0-or-later`, `GFDL-NIV-1.3+`; versions SPDX does not list, and unversioned
/// names (no certain version), are None.
fn gnu(lower: &str) -> Option<String> {
    let (family, rest) = [
        ("gfdl-niv", "GFDL"),
        ("agpl", "AGPL"),
        ("lgpl", "LGPL"),
        ("gfdl", "GFDL"),
        ("gpl", "GPL"),
    ]
    .into_iter()
    .find_map(|(p, f)| lower.strip_prefix(p).map(|r| ((p, f), r)))?;
    let rest = rest.strip_prefix(['-', 'v']).unwrap_or(rest);
    let (version, later) = if let Some(v) = rest.strip_suffix("-or-later") {
        (v, true)
    } else if let Some(v) = rest.strip_suffix("-only") {
        (v, false)
    } else if let Some(v) = rest.strip_suffix('+') {
        (v, true)
    } else {
        (rest, false)
    };
    let version = match version {
        "1" | "1.0" => "1.0",
        "1.1" => "1.1",
        "1.2" => "1.2",
        "1.3" => "1.3",
        "2" | "2.0" => "2.0",
        "2.1" => "2.1",
        "3" | "3.0" => "3.0",
        _ => return None,
    };
    let known: &[&str] = match family.1 {
        "GPL" => &["1.0", "2.0", "3.0"],
        "LGPL" => &["2.0", "2.1", "3.0"],
        "AGPL" => &["1.0", "3.0"],
        _ => &["1.1", "1.2", "1.3"],
    };
    if !known.contains(&version) {
        return None;
    }
    let niv = if family.0 == "gfdl-niv" {
        "-no-invariants"
    } else {
        ""
    };
    let tail = if later { "or-later" } else { "only" };
    Some(format!("{}-{version}{niv}-{tail}", family.1))
}

#[cfg(test)]
mod tests;
