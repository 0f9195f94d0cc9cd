//! dpkg's database inside a root: what is installed (the status file) and which paths
//! each package owns (`info/*.list`, with `info/*.md5sums` beside them).

use super::recipe::StripMatcher;
use crate::deb822;
use crate::error::Result;
use crate::fsx;
use std::collections::HashSet;
use std::path::Path;

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Installed {
    /// Binary package name.
    pub name: String,
    /// Installed version.
    pub version: String,
    /// Debian architecture (`amd64`, `all`).
    pub arch: String,
    /// Source package name, without the version (the binary's name when it has no `Source`).
    pub source: String,
}

/// The packages dpkg says are installed under `root`, sorted by name.
pub fn installed(root: &Path) -> Result<Vec<Installed>> {
    let status = root.join("var/lib/dpkg/status");
    let mut out: Vec<Installed> = deb822::parse(&fsx::read_to_string(&status)?)
        .into_iter()
        .filter(|p| p.get("Status").is_some_and(|s| s.ends_with(" installed")))
        .filter_map(|p| {
            let name = p.get("Package")?.to_string();
            // `Source: name (version)` when the binary's version differs.
            let source = p
                .get("Source")
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or(&name)
                .to_string();
            Some(Installed {
                version: p.get("Version")?.to_string(),
                arch: p.get("Architecture")?.to_string(),
                source,
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// dpkg records the files its path-exclude filters kept off the disk. Drops those lines
/// (missing paths the filters strip, nothing else) from `*.list` and `*.md5sums`, so that
/// `dpkg -L`, `dpkg -S` and `dpkg --verify` tell the truth about the image. Returns the
/// number of lines dropped and every path the packages own afterwards.
pub fn align_lists(root: &Path, strip: Option<&StripMatcher>) -> Result<(usize, HashSet<Vec<u8>>)> {
    let gone = |p: &[u8]| {
        strip.is_some_and(|s| s.strips(p)) && fsx::symlink_metadata(fsx::under(root, p)).is_err()
    };
    let info = root.join("var/lib/dpkg/info");
    let mut dropped = 0;
    let mut owned = HashSet::new();
    for e in fsx::read_dir(&info).map_err(|e| e.doing("read directory"))? {
        let path = e.path();
        let is_list = match path.extension().and_then(|x| x.to_str()) {
            Some("list") => true,
            Some("md5sums") => false,
            _ => continue,
        };
        let text = fsx::read(&path)?;
        let mut out = Vec::with_capacity(text.len());
        for line in text.split_inclusive(|&b| b == b'\n') {
            let l = line.strip_suffix(b"\n").unwrap_or(line);
            let p = if is_list {
                l.to_vec()
            } else {
                // `<md5>  <path without the leading slash>`
                let rel = l
                    .windows(2)
                    .position(|w| w == b"  ")
                    .map_or(&l[..0], |i| &l[i + 2..]);
                [b"/".as_slice(), rel].concat()
            };
            if gone(&p) {
                dropped += 1;
                continue;
            }
            out.extend_from_slice(line);
            if is_list {
                owned.insert(p);
            }
        }
        if out.len() != text.len() {
            fsx::write(&path, out)?;
        }
    }
    Ok((dropped, owned))
}

/// mmdebstrap must have installed exactly the locked set.
pub fn check_installed(root: &Path, lk: &super::lock::Lock, manifest: &Path) -> Result<()> {
    use std::collections::BTreeSet;
    let got: BTreeSet<(String, String, String)> = installed(root)?
        .into_iter()
        .map(|p| (p.name, p.version, p.arch))
        .collect();
    let want: BTreeSet<(String, String, String)> = lk
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.arch.clone()))
        .collect();
    if got == want {
        return Ok(());
    }
    let show = |sign: char, s: &mut dyn Iterator<Item = &(String, String, String)>| {
        s.map(|p| format!("{sign}{} {}", p.0, p.1))
            .collect::<Vec<_>>()
            .join(" ")
    };
    Err(crate::error::Error::Build(format!(
        "{}: the chroot's packages differ from the lock: {} {}",
        manifest.display(),
        show('+', &mut got.difference(&want)),
        show('-', &mut want.difference(&got))
    )))
}
