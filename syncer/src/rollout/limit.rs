//! `--limit`: a rollout over part of its colos' hosts, as Ansible's `--limit` does. A
//! pattern selects a host when it is the host's spec (however it is spelled: `ssh://H:22`
//! is `ssh://h`), the name of its colo, or a glob (`*`, `?`, `[...]`, `{a,b}`) matching
//! its spec as the inventory writes it. The canary and waves are made of the selected
//! hosts of each colo; the others are left alone.

use super::inventory::{Colo, Host};
use crate::error::{Error, Result};
use crate::transport::HostSpec;

/// The patterns of a `--limit`, compiled; none selects every host.
#[derive(Debug, Clone, Default)]
pub struct Limit {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    /// The root the pattern names, when it reads as a host spec.
    identity: Option<String>,
    glob: Option<globset::GlobMatcher>,
}

impl Pattern {
    fn selects(&self, colo: &Colo, h: &Host) -> bool {
        let spec = h.spec.to_string();
        self.text == colo.name
            || self.text == spec
            || self.identity.as_ref() == Some(&h.spec.identity())
            || self.glob.as_ref().is_some_and(|g| g.is_match(&spec))
    }
}

impl Limit {
    /// Compiles `patterns` and checks that each selects a host of `colos`: a pattern that
    /// selects none is an error naming it (a typo would otherwise roll nothing, or
    /// everything but what was meant).
    pub fn new(patterns: &[String], colos: &[&Colo]) -> Result<Limit> {
        let mut out = Limit::default();
        for p in patterns {
            let glob = if p.contains(['*', '?', '[', '{']) {
                let g = globset::Glob::new(p)
                    .map_err(|e| Error::Inventory(format!("--limit {p:?}: {e}")))?;
                Some(g.compile_matcher())
            } else {
                None
            };
            let pattern = Pattern {
                text: p.clone(),
                identity: HostSpec::parse(p).ok().map(|s| s.identity()),
                glob,
            };
            if !colos
                .iter()
                .any(|c| c.hosts.iter().any(|h| pattern.selects(c, h)))
            {
                return Err(Error::Inventory(format!(
                    "--limit {p:?} matches no host, colo or host glob of the colos rolled"
                )));
            }
            out.patterns.push(pattern);
        }
        Ok(out)
    }

    /// The patterns as given (a rollout's state keeps them, for `--resume`).
    pub fn patterns(&self) -> Vec<String> {
        self.patterns.iter().map(|p| p.text.clone()).collect()
    }

    /// Whether the host of `colo` is selected.
    pub fn selects(&self, colo: &Colo, h: &Host) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.selects(colo, h))
    }

    /// `colo` with only its selected hosts, and the specs of those left out.
    pub fn apply(&self, colo: &Colo) -> (Colo, Vec<String>) {
        let (hosts, left): (Vec<Host>, Vec<Host>) = colo
            .hosts
            .iter()
            .cloned()
            .partition(|h| self.selects(colo, h));
        let left = left.iter().map(|h| h.spec.to_string()).collect();
        (
            Colo {
                hosts,
                ..colo.clone()
            },
            left,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::inventory::Inventory;
    use super::*;
    use std::path::Path;

    fn inventory() -> Inventory {
        let text = "[[colo]]\nname = \"test\"\nhosts = [\"ssh://test1\", \"local:/srv/t2\"]\n\
                    [[colo]]\nname = \"ams\"\nhosts = [\"ssh://ams-web1\", \"ssh://ams-web2\", \
                    \"ssh://root@ams-db1:2222\"]\n";
        Inventory::parse(text, Path::new("fleet.toml")).unwrap()
    }

    fn selected(patterns: &[&str]) -> Vec<String> {
        let inv = inventory();
        let colos: Vec<&Colo> = inv.colos.iter().collect();
        let p: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        let l = Limit::new(&p, &colos).unwrap();
        colos
            .iter()
            .flat_map(|c| l.apply(c).0.hosts)
            .map(|h| h.spec.to_string())
            .collect()
    }

    #[test]
    fn limits_select_by_spec_colo_and_glob() {
        assert_eq!(selected(&[]).len(), 5);
        assert_eq!(selected(&["test"]), ["ssh://test1", "local:/srv/t2"]);
        assert_eq!(
            selected(&["ssh://*-web*"]),
            ["ssh://ams-web1", "ssh://ams-web2"]
        );
        // A spec however it is spelled, and patterns adding up.
        assert_eq!(
            selected(&["ssh://root@AMS-DB1:2222/", "local:/srv/t2"]),
            ["local:/srv/t2", "ssh://root@ams-db1:2222"]
        );
        // A name that is not a pattern matches exactly, not as a prefix.
        let inv = inventory();
        let colos: Vec<&Colo> = inv.colos.iter().collect();
        for p in ["ssh://ams-web", "am", "ssh://nowhere*"] {
            let e = Limit::new(&[p.to_string()], &colos)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("--limit {p:?} matches no host")), "{e}");
        }
        let e = Limit::new(&["ssh://[".to_string()], &colos)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--limit \"ssh://[\""), "{e}");
    }
}
