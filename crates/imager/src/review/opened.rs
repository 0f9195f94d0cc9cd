//! An image opened for review: its tree, its dpkg status, which package owns each path,
//! and its files' content on demand.

use crate::error::Result;
use crate::packages::dpkg::{self, ChangelogEntry, Package};
use crate::store::Store;
use crate::tree::{Kind, Tree};
use crate::Hash;
use std::collections::{BTreeMap, HashMap};

/// An image opened for review: its tree and what dpkg says about it.
pub(super) struct Opened<'s> {
    pub store: &'s Store,
    pub tree: Tree,
    pub packages: BTreeMap<String, Package>,
    owners: HashMap<Vec<u8>, Vec<String>>,
}

impl<'s> Opened<'s> {
    pub fn open(store: &'s Store, id: &Hash) -> Result<Opened<'s>> {
        let tree = store.read_image(id)?;
        let mut o = Opened {
            store,
            tree,
            packages: BTreeMap::new(),
            owners: HashMap::new(),
        };
        if let Some(status) = o.text(b"/var/lib/dpkg/status")? {
            o.packages = dpkg::installed(&status);
        }
        let lists: Vec<(String, Hash)> = o
            .tree
            .entries()
            .iter()
            .filter_map(|e| match (&e.kind, dpkg::list_owner(&e.path)) {
                (Kind::File { hash, .. }, Some(p)) => Some((p, *hash)),
                _ => None,
            })
            .collect();
        for (pkg, h) in lists {
            let data = store.read_object(&h)?;
            for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let p = if line == b"/." {
                    b"/".to_vec()
                } else {
                    line.to_vec()
                };
                o.owners.entry(p).or_default().push(pkg.clone());
            }
        }
        Ok(o)
    }

    /// The packages that own a path. Debian 12's file lists still name the paths before
    /// the /usr merge (`/lib/x` for what the tree holds at `/usr/lib/x`), so those are
    /// tried too.
    pub fn owners_of(&self, path: &[u8]) -> impl Iterator<Item = &String> {
        let alias = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"]
            .iter()
            .find_map(|d| {
                let prefix = format!("/usr/{d}/");
                path.starts_with(prefix.as_bytes())
                    .then(|| path[4..].to_vec())
            });
        self.owners
            .get(path)
            .into_iter()
            .chain(alias.and_then(|a| self.owners.get(&a)))
            .flatten()
    }

    /// The content of a regular file of the image.
    pub fn bytes(&self, path: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.tree.get(path).map(|e| &e.kind) {
            Some(Kind::File { hash, .. }) => Ok(Some(self.store.read_object(hash)?)),
            _ => Ok(None),
        }
    }

    pub fn text(&self, path: &[u8]) -> Result<Option<String>> {
        Ok(self
            .bytes(path)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    pub fn changelog(&self, pkg: &Package) -> Result<Vec<ChangelogEntry>> {
        // Native packages (apt, ca-certificates) have only changelog.gz.
        for (name, file) in [
            (&pkg.name, "changelog.Debian.gz"),
            (&pkg.source, "changelog.Debian.gz"),
            (&pkg.name, "changelog.gz"),
            (&pkg.source, "changelog.gz"),
        ] {
            let p = format!("/usr/share/doc/{name}/{file}");
            if let Some(gz) = self.bytes(p.as_bytes())? {
                // Bounded: a package under review may carry a gzip bomb.
                let mut raw = Vec::new();
                let d = flate2::read::MultiGzDecoder::new(&gz[..]);
                if std::io::Read::read_to_end(&mut std::io::Read::take(d, 16 << 20), &mut raw)
                    .is_ok()
                {
                    return Ok(dpkg::changelog_entries(&String::from_utf8_lossy(&raw)));
                }
            }
        }
        Ok(Vec::new())
    }
}
