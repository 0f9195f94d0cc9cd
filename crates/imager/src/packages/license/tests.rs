use super::*;

const DEP5: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo
License:
 The header's summary has no name: it is not a licence.

Files: *
Copyright: 2020 Someone
License: GPL-3+

Files: lib/*
 compat/*
Copyright: 2019 Another
License: LGPL-2.1+ or BSD-3-clause, and Expat
 A continuation line is the licence's text, not more of the expression: these names
 are the expression.

Files: debian/*
Copyright: 2021 Packager
License: GPL-3+

Files: contrib/odd.c
Copyright: 1990 Old
License: Weird+Licence with Font exception

Files: contrib/pd.c
Copyright: none
License: public-domain
 Placed in the public domain by its author.

Files: contrib/prose.c
Copyright: 1995 Prose
License: Permission to use, copy, modify, and distribute this software
 is hereby granted.

Files: gnulib/*
Copyright: FSF
License: GPL-2+ with Autoconf exception and Sendmail and GPL-3+

License: Sendmail
 The Sendmail licence's text,
 .
 in two paragraphs.
";

#[test]
fn dep5_paragraphs_become_one_spdx_expression_with_declared_refs() {
    let l = from_copyright(DEP5, "/usr/share/doc/demo/copyright").unwrap();
    let unnamed = l
        .refs
        .iter()
        .find(|r| r.id.starts_with("LicenseRef-unnamed-"))
        .unwrap();
    assert_eq!(unnamed.id.len(), "LicenseRef-unnamed-".len() + 12);
    assert!(unnamed.text.contains("is hereby granted."), "{unnamed:?}");
    assert_eq!(
        l.expression,
        format!(
            "GPL-3.0-or-later AND (LGPL-2.1-or-later OR BSD-3-Clause) AND MIT AND \
             LicenseRef-Weird-Licence-with-Font-exception AND LicenseRef-public-domain AND {} AND \
             GPL-2.0-or-later WITH Autoconf-exception-2.0 AND LicenseRef-Sendmail",
            unnamed.id
        )
    );
    let ids: Vec<&str> = l.refs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "LicenseRef-Weird-Licence-with-Font-exception",
            "LicenseRef-public-domain",
            unnamed.id.as_str(),
            "LicenseRef-Sendmail"
        ]
    );
    let text = |id: &str| l.refs.iter().find(|r| r.id == id).unwrap().text.clone();
    assert_eq!(
        text("LicenseRef-Sendmail"),
        "The Sendmail licence's text,\n\nin two paragraphs."
    );
    assert_eq!(
        text("LicenseRef-public-domain"),
        "Placed in the public domain by its author."
    );
    assert!(
        text("LicenseRef-Weird-Licence-with-Font-exception").contains("without giving its text")
    );
}

#[test]
fn files_star_alone_and_debian_names() {
    let one = "Format: http://dep.debian.net/deps/dep5\n\nFiles: *\nCopyright: x\nLicense: GPL-1+ or Artistic\n";
    let l = from_copyright(one, "c").unwrap();
    assert_eq!(l.expression, "GPL-1.0-or-later OR Artistic-1.0-Perl");
    assert!(l.refs.is_empty());
    for (debian, spdx) in [
        ("GPL-2", "GPL-2.0-only"),
        ("GPLv3+", "GPL-3.0-or-later"),
        ("GPL-2.0+", "GPL-2.0-or-later"),
        ("LGPL-2.1", "LGPL-2.1-only"),
        ("GFDL-NIV-1.3+", "GFDL-1.3-no-invariants-or-later"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("Expat", "MIT"),
        ("zlib", "Zlib"),
        ("Apache-2", "Apache-2.0"),
        ("GPL", "LicenseRef-GPL"),
        ("GPL-4+", "LicenseRef-GPL-4-"),
        (
            "GPL-2 with Linux-syscall-note exception",
            "GPL-2.0-only WITH Linux-syscall-note",
        ),
        (
            "GPL-3+ with Bison exception",
            "GPL-3.0-or-later WITH Bison-exception-2.2",
        ),
        (
            "A or B and C",
            "LicenseRef-A OR (LicenseRef-B AND LicenseRef-C)",
        ),
        ("MIT, or ISC and X11", "MIT OR (ISC AND X11)"),
    ] {
        assert_eq!(parse(debian).unwrap().spdx(), spdx, "{debian}");
    }
    for prose in [
        "Permission is granted",
        "GPL-2+,",
        "MIT with",
        "MIT, but ISC",
    ] {
        assert_eq!(parse(prose), None, "{prose}");
    }
}

#[test]
fn files_that_are_not_dep5_give_no_licence() {
    let prose =
        "This package was debianized by Someone.\n\nCopyright: 1999 Someone\n\nLicense: GPL-2+\n";
    assert_eq!(from_copyright(prose, "c"), None);
    assert_eq!(from_copyright("", "c"), None);
    let no_licence = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: x\n";
    assert_eq!(from_copyright(no_licence, "c"), None);
}
