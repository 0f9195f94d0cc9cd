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
    pub host: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub image: Option<imager::Hash>,
    /// Names in the controller's store that point at the image now.
    pub names: Vec<String>,
    pub agent: Option<String>,
    /// The host's trust policy as its agent described it (`None`: it has none).
    pub trust: Option<String>,
    pub drifted: bool,
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
    /// Processes, by unit, that still run replaced files (see [`HostReport::stale`]).
    pub stale: Vec<StaleUnit>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathChange>,
}

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
            verify: opts.verify,
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
