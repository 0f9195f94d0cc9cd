//! `status` and `diff`: how a host differs from the image it records ([`status_host`]),
//! and the planned paths as `--dry-run` and `diff` list them.

use super::report::PathChange;
use super::PushOptions;
use crate::error::{Error, Result};
use crate::plan::{self, Item};
use crate::protocol::{Change, ChangeKind, Differences, Kept, StaleUnit, Status, Unmanaged};
use crate::transport::{self, HostSpec};
use imager::store::Store;
use imager::tree::escape::escape;
use serde::Serialize;
use std::collections::HashMap;

pub(super) fn path_changes(
    store: Option<&Store>,
    changes: &[Change],
    items: &[Item],
) -> Vec<PathChange> {
    let by_path: HashMap<&[u8], &Item> = items.iter().map(|i| (i.path.as_slice(), i)).collect();
    changes
        .iter()
        .map(|c| {
            let it = by_path.get(c.path.as_slice());
            PathChange {
                path: escape(&c.path),
                change: c.kind,
                item: crate::protocol::item::letters(c.kind, c.what),
                host_made: c.kind == ChangeKind::Delete
                    && c.what & crate::protocol::item::UNMANAGED != 0,
                via: it.map(|i| i.encoding.label()),
                packed: it.is_some_and(|i| i.packed),
                candidates: it.and_then(|i| i.candidates.clone()),
                class: it
                    .filter(|i| i.candidates.is_some())
                    .zip(store)
                    .map(|(i, s)| plan::class(s, &i.path, &i.hash, i.size)),
            }
        })
        .collect()
}

/// What `status` and `diff` learn about a host.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostStatus {
    /// The host as given (`ssh://...` or `local:...`).
    pub host: String,
    /// Whether the host answered: its agent was reached and compared it with its image
    /// (drift is not a failure here; `drifted` says it).
    pub ok: bool,
    /// Why the host could not be asked (connection, agent, damaged record); absent when
    /// ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The image the host records; `None` when it records none (then nothing is
    /// compared) or was not reached.
    pub image: Option<imager::Hash>,
    /// Names in the controller's store that point at the image now.
    pub names: Vec<String>,
    /// The agent's version, as its welcome said it; `None` when it was not reached.
    pub agent: Option<String>,
    /// The host's trust policy as its agent described it (`None`: it has none).
    pub trust: Option<String>,
    /// The host differs from the image it records (false for one that records none).
    pub drifted: bool,
    /// How many paths differ: added, changed, deleted or with other metadata.
    pub differences: u64,
    /// The unfinished commit (its image) that `abandon-commit` dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<String>,
    /// The host is in the middle of a commit it cannot finish (the error says why).
    pub mid_commit: bool,
    /// Mount points and local-state symlinks, never compared or changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<Kept>,
    /// What the host made outside the image's owned prefixes: kept, and not drift.
    pub unmanaged: Vec<Unmanaged>,
    /// Processes, by unit, that still run replaced files (as a push report's `stale`).
    pub stale: Vec<StaleUnit>,
    /// Each path that differs, as `diff` lists them; empty for `status`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathChange>,
}

/// Asks the host at `spec` how it differs from the image it records (hashing every file
/// with `opts.rehash`), listing the paths with `with_paths`; `store`, when at hand, names
/// the image. Never fails: the status says what went wrong.
pub fn status_host(
    store: Option<&Store>,
    spec: &HostSpec,
    opts: &PushOptions,
    with_paths: bool,
) -> HostStatus {
    let mut st = HostStatus {
        host: spec.to_string(),
        ..Default::default()
    };
    let r = (|| -> Result<()> {
        let mut s = transport::connect(spec, &opts.transport)?;
        st.agent = Some(s.welcome.agent.clone());
        st.trust = s.welcome.trust.as_ref().map(|t| t.describe());
        st.abandoned = s.welcome.abandoned.map(|h| h.to_hex());
        st.image = s.welcome.image;
        if let (Some(store), Some(id)) = (store, s.welcome.image) {
            st.names = store.names_of(&id)?;
        }
        let status = Status {
            verify: opts.rehash, // the wire keeps its name (`push_host` says why)
        };
        let changes = match crate::protocol::client::Ready::new(&mut s.conn).status(status) {
            Ok(Differences {
                changes,
                kept,
                stale,
                unmanaged,
                ..
            }) => {
                st.kept = kept;
                st.stale = stale;
                st.unmanaged = unmanaged;
                changes
            }
            Err(e) => return Err(s.fail(e)),
        };
        s.close();
        st.differences = changes.len() as u64;
        st.drifted = !changes.is_empty();
        if with_paths {
            st.paths = path_changes(None, &changes, &[]);
        }
        Ok(())
    })();
    match r {
        Ok(()) => st.ok = true,
        Err(e) => {
            let m = e.to_string();
            st.mid_commit = matches!(e, Error::MidCommit(..));
            st.error = Some(m);
        }
    }
    st
}
