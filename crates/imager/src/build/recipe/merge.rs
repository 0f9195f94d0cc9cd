//! How a manifest and the ones it `extends` become one: scalars from the nearest file
//! that sets them, lists (packages, strip rules, overlays, hooks, triggers, local state)
//! added up from the root of the chain down, so that a child's entries come after its
//! parent's and win where order matters (a package pinned again); every error names the
//! file and line it comes from.

use super::*;

/// A manifest file as read: its canonical path, its text (for line numbers), its content.
pub(super) type Link = (PathBuf, String, File);

fn src_of(f: &File) -> Option<&AptSourceFile> {
    f.source.as_ref()
}

/// A scalar's value: the nearest file that sets it wins (the given file, then its parent...).
fn nearest<'c, T>(chain: &'c [Link], get: impl Fn(&'c File) -> Option<T>) -> Option<T> {
    chain.iter().find_map(|(_, _, f)| get(f))
}

pub(super) fn merge(chain: Vec<Link>) -> Result<Recipe> {
    let files: Vec<PathBuf> = chain.iter().map(|(p, _, _)| p.clone()).collect();
    let first = &chain[0].0;
    let name = nearest(&chain, |f| f.name.clone()).ok_or_else(|| Error::Manifest {
        source_name: first.display().to_string(),
        line: 0,
        reason: "no `name` (set it here or in a manifest this one extends)".into(),
    })?;
    check_name(&name, first)?;
    let source = merge_source(&chain)?;
    let strip_flag = |get: fn(&StripFile) -> Option<bool>| {
        nearest(&chain, |f| f.strip.as_ref().and_then(get)).unwrap_or(false)
    };
    let mut lists = Lists {
        strip: Strip {
            docs: strip_flag(|s| s.docs),
            man: strip_flag(|s| s.man),
            info: strip_flag(|s| s.info),
            ..Strip::default()
        },
        ..Lists::default()
    };
    // Lists: parent first, so a child's settings come after (and win) where order matters.
    for (p, text, f) in chain.iter().rev() {
        let w = Where { file: p, text };
        lists.add_packages(&w, f)?;
        lists.add_strip(&w, f)?;
        lists.add_overlays(&w, f)?;
        lists.add_local_debs(&w, f)?;
        lists.add_hooks(&w, f)?;
        lists.add_triggers(&w, f)?;
        lists.add_local_state(&w, f)?;
    }
    let Lists {
        packages,
        strip,
        overlays,
        local_debs,
        hooks,
        mut triggers,
        local_state,
    } = lists;
    contract::sort_triggers(&mut triggers);
    let local_state = local_state.unwrap_or_else(|| list_lines(DEFAULT_LOCAL_STATE));
    Excludes::new(&local_state)?;
    let owned = match chain
        .iter()
        .find_map(|(p, text, f)| Some((p, text, f.owned.as_ref()?)))
    {
        None => None,
        Some((p, text, o)) => {
            for g in o.get_ref() {
                let bad =
                    |why: String| at(p, text, Some(o.span().start), format!("owned: {g:?} {why}"));
                if !g.starts_with('/') {
                    return Err(bad("must be an absolute path glob".into()));
                }
                Excludes::new(std::slice::from_ref(g)).map_err(|e| bad(e.to_string()))?;
            }
            Some(o.get_ref().clone())
        }
    };
    Ok(Recipe {
        name,
        description: nearest(&chain, |f| f.description.clone()),
        epoch: nearest(&chain, |f| f.epoch),
        files,
        source,
        packages: packages.into_values().collect(),
        strip,
        overlays,
        hooks,
        local_debs,
        triggers,
        local_state,
        owned,
        first_boot: nearest(&chain, |f| f.first_boot).unwrap_or(true),
    })
}

/// The `[source]` table: each field from the nearest file that sets it.
fn merge_source(chain: &[Link]) -> Result<AptSource> {
    let variant = match chain
        .iter()
        .find_map(|(p, text, f)| Some((p, text, src_of(f)?.variant.as_ref()?)))
    {
        None => Variant::Minbase,
        Some((p, text, v)) => Variant::parse(v.get_ref()).ok_or_else(|| {
            at(
                p,
                text,
                Some(v.span().start),
                format!(
                    "source.variant {:?}: expected essential, minbase, required or important",
                    v.get_ref()
                ),
            )
        })?,
    };
    Ok(AptSource {
        suite: nearest(chain, |f| src_of(f)?.suite.clone()).unwrap_or_else(|| "bookworm".into()),
        architecture: nearest(chain, |f| src_of(f)?.architecture.clone())
            .unwrap_or_else(|| "amd64".into()),
        components: nearest(chain, |f| src_of(f)?.components.clone())
            .unwrap_or_else(|| vec!["main".into()]),
        variant,
        mirrors: nearest(chain, |f| {
            Some(src_of(f)?.mirrors.as_ref()?.get_ref().clone())
        })
        .unwrap_or(Mirrors::Host),
        updates: nearest(chain, |f| src_of(f)?.updates).unwrap_or(true),
    })
}

/// One manifest file of the chain, for errors that point into it.
struct Where<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Where<'_> {
    fn at(&self, offset: Option<usize>, reason: String) -> Error {
        at(self.file, self.text, offset, reason)
    }
}

/// The settings that add up along the chain, parent first.
#[derive(Default)]
struct Lists {
    packages: BTreeMap<String, PackageSpec>,
    strip: Strip,
    overlays: Vec<Overlay>,
    local_debs: Vec<PathBuf>,
    hooks: Vec<Hook>,
    triggers: Vec<Trigger>,
    local_state: Option<Vec<String>>,
}

impl Lists {
    fn add_packages(&mut self, w: &Where, f: &File) -> Result<()> {
        for s in &f.packages {
            let spec = parse_package(s.get_ref()).ok_or_else(|| {
                w.at(
                    Some(s.span().start),
                    format!(
                        "packages: {:?} is not a package name or name=version",
                        s.get_ref()
                    ),
                )
            })?;
            self.packages.insert(spec.name.clone(), spec);
        }
        Ok(())
    }

    fn add_strip(&mut self, w: &Where, f: &File) -> Result<()> {
        let Some(st) = &f.strip else {
            return Ok(());
        };
        let strip = &mut self.strip;
        for l in &st.locales {
            if l.is_empty() || l.contains('/') || l.contains('*') {
                return Err(w.at(None, format!("strip.locales: {l:?} is not a locale name")));
            }
            if !strip.locales.contains(l) {
                strip.locales.push(l.clone());
            }
        }
        for (list, out) in [
            (&st.exclude, &mut strip.exclude),
            (&st.keep, &mut strip.keep),
        ] {
            for g in list {
                check_dpkg_glob(g.get_ref()).map_err(|why| {
                    w.at(
                        Some(g.span().start),
                        format!("strip: {:?}: {why}", g.get_ref()),
                    )
                })?;
                out.push(g.get_ref().clone());
            }
        }
        Ok(())
    }

    fn add_overlays(&mut self, w: &Where, f: &File) -> Result<()> {
        let dir = w.file.parent().unwrap_or(Path::new("/"));
        for o in &f.overlay {
            let dest = o.dest.get_ref();
            if !dest.starts_with('/') || dest.split('/').any(|c| c == "..") {
                return Err(w.at(
                    Some(o.dest.span().start),
                    format!("overlay.dest {dest:?}: must be an absolute path without `..`"),
                ));
            }
            let src = dir.join(o.src.get_ref());
            if fsx::symlink_metadata(&src).is_err() {
                return Err(w.at(
                    Some(o.src.span().start),
                    format!("overlay.src {}: no such file or directory", src.display()),
                ));
            }
            for (what, m) in [("mode", o.mode), ("dir_mode", o.dir_mode)] {
                if m.is_some_and(|m| m > 0o7777) {
                    return Err(w.at(
                        Some(o.src.span().start),
                        format!(
                            "overlay.{what}: {m:?} is not a permission mode (write it as 0o644)"
                        ),
                    ));
                }
            }
            self.overlays.push(Overlay {
                src,
                dest: dest.trim_end_matches('/').to_string(),
                owner: o.owner,
                group: o.group,
                mode: o.mode,
                dir_mode: o.dir_mode.unwrap_or(0o755),
            });
        }
        Ok(())
    }

    /// `[[local]]` directories: relative to the file that names them, or absolute; a
    /// `file:` URL (what a `deb file:/srv/apt ...` line names) is taken as its path. Each
    /// directory counts once, however many files of the chain name it.
    fn add_local_debs(&mut self, w: &Where, f: &File) -> Result<()> {
        let base = w.file.parent().unwrap_or(Path::new("/"));
        for l in &f.local {
            let given = l.dir.get_ref();
            let path = given
                .strip_prefix("file://")
                .or_else(|| given.strip_prefix("file:"))
                .unwrap_or(given);
            let bad = |why: String| {
                let shown = base.join(path);
                w.at(
                    Some(l.dir.span().start),
                    format!("local.dir {}: {why}", shown.display()),
                )
            };
            let dir =
                fsx::canonicalize(base.join(path)).map_err(|e| bad(e.into_io().to_string()))?;
            if !fsx::is_dir(&dir).map_err(|e| bad(e.into_io().to_string()))? {
                return Err(bad("not a directory".into()));
            }
            if !self.local_debs.contains(&dir) {
                self.local_debs.push(dir);
            }
        }
        Ok(())
    }

    fn add_hooks(&mut self, w: &Where, f: &File) -> Result<()> {
        for h in &f.hook {
            if self.hooks.iter().any(|x| x.name == h.name) {
                return Err(w.at(None, format!("hook {:?} is defined twice", h.name)));
            }
            self.hooks.push(h.clone());
        }
        Ok(())
    }

    fn add_triggers(&mut self, w: &Where, f: &File) -> Result<()> {
        for t in &f.trigger {
            let tr = t.get_ref();
            tr.check().map_err(|why| w.at(Some(t.span().start), why))?;
            // A child may redefine a parent's trigger by name.
            self.triggers.retain(|x| x.name != tr.name);
            self.triggers.push(tr.clone());
        }
        Ok(())
    }

    fn add_local_state(&mut self, w: &Where, f: &File) -> Result<()> {
        let Some(ls) = &f.local_state else {
            return Ok(());
        };
        let dir = w.file.parent().unwrap_or(Path::new("/"));
        let acc = self.local_state.get_or_insert_with(Vec::new);
        for l in ls {
            let lp = dir.join(l.get_ref());
            let body = fsx::read_to_string(&lp).map_err(|e| {
                w.at(
                    Some(l.span().start),
                    format!("local_state {}: {}", lp.display(), e.into_io()),
                )
            })?;
            acc.extend(list_lines(&body));
        }
        Ok(())
    }
}
