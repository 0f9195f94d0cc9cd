//! The steps of a `Target` outside the session: what it says about the host's own
//! state, the image's tree from a manifest text (the side files sent checked to be the
//! image's), and the round trip that learns the manifest after the scan.

use super::manifest::{checked_manifest, image_file_is};
use super::scan;
use super::state::StateDir;
use crate::compare::HostTree;
use crate::error::{Error, Result};
use crate::protocol::{Conn, Identity, Msg, Target};
use imager_core::tree::scan::Excludes;
use imager_core::{Hash, Tree};
use std::io::{Read, Write};

/// What a `Target` says about the host's own state, before its side files are checked
/// to be the image's.
pub(super) struct HostRules {
    /// The globs never compared: the image's local state and its triggers' outputs.
    pub(super) local_state: Vec<String>,
    /// Why the triggers file sent does not parse: refused once it is known to be the
    /// image's.
    pub(super) bad_triggers: Option<String>,
    /// `local_state` with the syncer's own paths, as the scan's excludes.
    pub(super) local: Excludes,
    /// The prefixes the image owns completely.
    pub(super) owned: Vec<String>,
}

impl HostRules {
    /// Reads the local-state, triggers and owned files a target sent.
    pub(super) fn of(t: &Target) -> Result<HostRules> {
        // The triggers' outputs are local state too; a triggers file that does not parse
        // is refused only once it is known to be the image's (else the refusal says it
        // is not the image's, as for any forged file).
        let (local_state, bad_triggers) =
            match imager_core::contract::host_local_globs(t.local_state.as_deref(), &t.triggers) {
                Ok(g) => (g, None),
                Err(e) => (
                    imager_core::contract::local_state_of(t.local_state.as_deref()),
                    Some(e),
                ),
            };
        let local = scan::local_excludes(&local_state)?;
        let owned = imager_core::contract::owned_of(t.owned.as_deref());
        Ok(HostRules {
            local_state,
            bad_triggers,
            local,
            owned,
        })
    }
}

/// The image's tree from a manifest text, with the side files the target sent checked
/// to be the image's.
pub(super) fn image_tree(t: &Target, rules: &HostRules, text: &str) -> Result<Tree> {
    // What the controller sent beside the manifest must be the image's own (a
    // signed image with forged triggers would run them as root; a forged
    // local-state list would keep old paths): checked as soon as the manifest is.
    let tree = imager_core::tree::text::parse(text, &format!("image {}", t.image))?;
    image_file_is(
        &tree,
        imager_core::contract::LOCAL_STATE_FILE,
        t.local_state.as_deref(),
    )?;
    image_file_is(&tree, imager_core::contract::OWNED_FILE, t.owned.as_deref())?;
    // Empty: the image has no triggers file, or an empty one.
    let has = tree
        .get(imager_core::contract::TRIGGERS_FILE.as_bytes())
        .is_some();
    let triggers = (has || !t.triggers.is_empty()).then_some(t.triggers.as_slice());
    image_file_is(&tree, imager_core::contract::TRIGGERS_FILE, triggers)?;
    if let Some(e) = &rules.bad_triggers {
        return Err(Error::Agent(e.clone()));
    }
    Ok(tree)
}

/// The image's tree from the manifest text the target sent (none: asked) and what
/// `scan` returns. With `overlap`, the tree is parsed and the side files checked on a
/// thread of their own while `scan` runs, which must then write nothing: what the target
/// sent is always checked before anything is written. A bad tree is the error told
/// first.
pub(super) fn tree_while_scanning<S>(
    (t, rules, text): (&Target, &HostRules, Option<&str>),
    overlap: bool,
    scan: impl FnOnce() -> Result<S>,
) -> Result<(Option<Tree>, S)> {
    let parse = |text: &str| image_tree(t, rules, text);
    let early = match (text, overlap) {
        (Some(text), false) => Some(parse(text)?),
        _ => None,
    };
    let (late, scanned) = std::thread::scope(|s| {
        let late = match (text, overlap) {
            (Some(text), true) => Some(s.spawn(move || parse(text))),
            _ => None,
        };
        let scanned = scan();
        let late = late.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::Agent("parsing the manifest panicked".into())))
        });
        (late, scanned)
    });
    let tree = match (early, late) {
        (Some(tree), _) => Some(tree),
        (None, Some(tree)) => Some(tree?),
        (None, None) => None,
    };
    Ok((tree, scanned?))
}

/// The "asked" round trip: sends the host's own identity, returns the manifest text the
/// controller answers with, checked to be image `image`'s.
pub(super) fn ask_manifest<R: Read, W: Write>(
    conn: &mut Conn<R, W>,
    st: &StateDir,
    image: &Hash,
    local: &Excludes,
    host: &HostTree,
) -> Result<String> {
    let kept: Vec<Vec<u8>> = host.kept.keys().cloned().collect();
    let own = crate::compare::host_view(host.entries.iter(), local, &kept)
        .map_err(|e| Error::Agent(format!("the host's own tree: {e}")))?;
    conn.send(&Msg::Identity(Identity {
        tree: imager_core::tree::text::id_of(&own),
        kept,
    }))?;
    match conn.recv("the manifest")? {
        Msg::Manifest(m) => checked_manifest(st, m.manifest, image, Some(&own)),
        m => Err(Error::Protocol(format!(
            "expected Manifest, got {}",
            m.name()
        ))),
    }
}
