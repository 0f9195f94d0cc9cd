//! syncer-agent: the host side of a session (`syncer serve --root DIR`; on hosts, the
//! small `syncer-agent` executable `--install-agent` copies, built from this crate
//! alone: no store, no image builder, no clap). It answers what
//! the host has and how it differs from an image, stages what the controller sends, and
//! commits it through a journal; then runs the image's triggers.
//!
//! Before answering anything, an agent finishes a commit an earlier one left half-done
//! ([`commit::roll_forward`]) and clears leftover staging.
//!
//! Here, a session with one handler per message; the handlers that stage content
//! (`Put`, `Pack`, `Fetch`) are in `content.rs`, the checks of the manifest a `Target`
//! sends in `manifest.rs`, the steps of a `Target` in `target.rs`; [`command`] is the
//! executable's command line, [`exe`] how it identifies itself.
//!
//! Below it: `syncer-protocol` (the wire, the encodings, the comparison), `imager-trust`
//! (signatures and the host's trust policy) and `imager-core` (the model and safe
//! filesystem access).

#![warn(missing_docs)]

// The protocol crate's modules, under the names the agent's modules use.
use syncer_protocol as protocol;
use syncer_protocol::{compare, encoding, error, hostfs, ratelimit};

pub mod command;
pub mod commit;
mod content;
pub mod exe;
pub mod fetch;
pub mod fsops;
mod manifest;
pub mod mounts;
mod packs;
pub mod scan;
pub mod stage;
pub mod stale;
pub mod state;
mod target;
pub mod triggers;
pub mod trust;
pub mod written;

/// For the crash tests: with `SYNCER_TEST_STOP_AT=PHASE:N` (`stage:N`, the Nth file
/// staged; `commit:N`, before the Nth journal operation) the agent stops itself with
/// SIGSTOP there, so a test can `kill -9` it at an exact point whatever the machine's
/// speed. Without the variable this is one cached lookup.
pub(crate) fn test_stop_point(phase: &str, n: usize) {
    static AT: std::sync::OnceLock<Option<(String, usize)>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        let v = std::env::var("SYNCER_TEST_STOP_AT").ok()?;
        let (p, n) = v.split_once(':')?;
        Some((p.to_string(), n.parse().ok()?))
    });
    if at.as_ref().is_some_and(|(p, k)| p == phase && *k == n) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP);
    }
}

use crate::compare::{compare, DirMtimes, HostTree, Ownership, Recorded};
use crate::error::{Error, Result};
use crate::protocol::{
    Change, ChangeKind, Conn, Differences, Health, Hello, ManifestData, Msg, Previous, ScanStats,
    SignatureRequest, Signatures, Stage, Status, Target, TriggerRun, Welcome, PROTOCOL_VERSION,
};
use imager_core::safe_dir::Beneath;
use imager_core::tree::escape::escape;
use imager_core::tree::scan::Excludes;
use imager_core::{Entry, Hash, Kind, Tree};
use manifest::checked_manifest;
use stage::Staging;
use state::StateDir;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;
use target::{ask_manifest, image_tree, HostRules};

/// The agent's identity: crate version and its build's identity (ELF build ID, read
/// without reading the executable; see [`crate::exe`]), so a controller can tell an
/// outdated agent from a current one.
pub fn identity() -> (String, Hash) {
    let exe = crate::exe::identity();
    (env!("CARGO_PKG_VERSION").to_string(), exe)
}

/// What the session knows after a `Target`.
struct Pending {
    id: Hash,
    image: Tree,
    manifest: String,
    /// The globs never compared: the image's local state and its triggers' outputs.
    local_state: Vec<String>,
    /// The image's owned-prefix file, recorded for `status`.
    owned: Option<Vec<u8>>,
    triggers: Vec<u8>,
    /// False on a first install not asked to run them: the triggers are skipped.
    run_triggers: bool,
    changes: Vec<Change>,
    /// Paths whose new content may be sent (added, changed or replaced files).
    content: HashSet<Vec<u8>>,
    /// A dry run's target: looked at (signatures included), never staged or committed.
    dry_run: bool,
    previous: Previous,
    /// The anti-rollback record once this image is committed (a host with a policy).
    accepted: Option<imager_trust::freshness::Newest>,
    /// Changed files with an old version on the host (rsync delta bases).
    bases: HashSet<Vec<u8>>,
    host: HostTree,
}

/// How an agent starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Drop an unfinished commit instead of finishing it (`syncer abandon-commit`): for
    /// a host whose roll-forward keeps failing. The host keeps whatever the commit had
    /// done; the next push makes it whole.
    pub abandon_commit: bool,
    /// The controller's store objects (`objects/ab/cdef…`), for an agent on the
    /// controller's machine (a `local:` host): files sent as store copies are read from
    /// there, so nothing is compressed or crosses the pipe. Checked like any content.
    pub objects: Option<std::path::PathBuf>,
}

/// Serves one session on `input`/`output`. Errors are sent to the controller as an
/// `Error` message (when the stream still works) and returned.
pub fn serve(root: &Path, opts: &ServeOptions, input: impl Read, output: impl Write) -> Result<()> {
    let mut conn = Conn::new(input, std::io::BufWriter::with_capacity(1 << 16, output));
    let r = session(root, opts, &mut conn);
    if let Err(e) = &r {
        let _ = conn.send(&Msg::Error(e.to_message()));
    }
    r
}

fn session<R: Read, W: Write>(
    root: &Path,
    opts: &ServeOptions,
    conn: &mut Conn<R, W>,
) -> Result<()> {
    match conn.recv("the controller's Hello")? {
        Msg::Hello(Hello { version }) if version == PROTOCOL_VERSION => {}
        Msg::Hello(Hello { version }) => {
            return Err(Error::Protocol(format!(
                "the controller speaks protocol version {version}; this agent (syncer {}) speaks {PROTOCOL_VERSION}",
                env!("CARGO_PKG_VERSION")
            )))
        }
        m => return Err(Error::Protocol(format!("expected Hello, got {}", m.name()))),
    }
    let b = Beneath::open(root)?;
    lock_root(&b, root)?;
    let st = StateDir::open(root)?;
    let abandoned = if opts.abandon_commit {
        commit::abandon(&st)?
    } else {
        None
    };
    let rolled_forward = commit::roll_forward(&b, &st)?;
    Staging::clear(&b)?;
    let (agent, exe) = identity();
    let trust = trust::HostTrust::load(&b);
    let record = st.record()?;
    conn.send(&Msg::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        agent,
        exe,
        image: record.id(),
        previous: st.previous()?,
        rolled_forward,
        abandoned,
        trust: trust.summary(),
        damaged_record: record.damage(),
    }))?;
    let mut s = Session {
        root,
        b,
        st,
        trust,
        objects: opts.objects.as_deref(),
        pending: None,
        staging: None,
        stage_started: None,
    };
    let result = s.serve(conn);
    if result.is_err() && s.st.read(state::JOURNAL).ok().flatten().is_none() {
        // Nothing was committed: the staged files are of no use.
        let _ = Staging::clear(&s.b);
    }
    result
}

/// One session per root: two pushes interleaving their commits would mix images. The
/// lock dies with the agent, so a killed one never leaves the host locked.
fn lock_root(b: &Beneath, root: &Path) -> Result<()> {
    match rustix::fs::flock(
        b.root_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    ) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Agent(format!(
            "another syncer session is working on {}; try again when it ends",
            root.display()
        ))),
        Err(e) => Err(imager_core::Error::io("lock", root.to_path_buf(), e.into()).into()),
    }
}

/// A session after the greeting: what the host is, and what the controller has said so
/// far. Each message the controller sends has its handler.
struct Session<'a> {
    root: &'a Path,
    b: Beneath,
    st: StateDir,
    /// The host's trust policy, read when the session started.
    trust: trust::HostTrust,
    /// The controller's store objects, when it gave them ([`ServeOptions::objects`]).
    objects: Option<&'a Path>,
    /// The last `Target`, until it is committed.
    pending: Option<Pending>,
    /// The staging directory, from `Stage` to `Commit`.
    staging: Option<Staging>,
    /// When the `Stage` message came: the staging's time counts from it.
    stage_started: Option<Instant>,
}

impl Session<'_> {
    /// Answers messages until `Bye` or the end of the stream.
    fn serve<R: Read, W: Write>(&mut self, conn: &mut Conn<R, W>) -> Result<()> {
        let mut next = conn.recv_opt()?;
        while let Some(msg) = next {
            match msg {
                Msg::Bye => return Ok(()),
                // Packs are staged while the ones after them are read: what follows them
                // comes back.
                Msg::Pack(p) => {
                    next = self.on_packs(conn, p)?;
                    continue;
                }
                Msg::Status(m) => self.on_status(conn, m)?,
                Msg::Target(t) => self.on_target(conn, t)?,
                Msg::SignatureRequest(r) => self.on_signature_request(conn, r)?,
                Msg::Stage(m) => self.on_stage(m)?,
                Msg::Put(p) => self.on_put(conn, p)?,
                Msg::Health(h) => self.on_health(conn, h)?,
                Msg::Fetch(f) => self.on_fetch(conn, f)?,
                Msg::Commit => self.on_commit(conn)?,
                m => {
                    return Err(Error::Protocol(format!(
                        "unexpected {} message from the controller",
                        m.name()
                    )))
                }
            }
            next = conn.recv_opt()?;
        }
        Ok(())
    }

    fn on_status<R: Read, W: Write>(&mut self, conn: &mut Conn<R, W>, m: Status) -> Result<()> {
        let reply = status(self.root, &self.b, &self.st, m.verify)?;
        conn.send(&Msg::Differences(reply))
    }

    /// Scans the host against the target image and says how it differs.
    fn on_target<R: Read, W: Write>(&mut self, conn: &mut Conn<R, W>, t: Target) -> Result<()> {
        // Before anything is written (even the staging area cleared): the ID checked
        // here is the one the manifest must hash to below.
        self.pending = None;
        let accepted = self.trust.check(&t.image, &t.signatures, &self.st)?;
        // A new target: whatever was staged for an earlier one is of no use.
        self.staging = None;
        self.stage_started = None;
        Staging::clear(&self.b)?;
        let rules = HostRules::of(&t)?;
        // Asked who it is, the host scans first and learns the manifest after; else the
        // manifest is checked before anything is written.
        let asked = t.manifest == ManifestData::Ask;
        let text = match asked {
            true => None,
            false => Some(checked_manifest(
                &self.st,
                t.manifest.clone(),
                &t.image,
                None,
            )?),
        };
        // Parsed while the host is scanned, where the scan writes nothing (its state
        // directory is there, or a dry run).
        let overlap = self.st.exists() || t.dry_run;
        let (tree, (host, stats, cache)) =
            target::tree_while_scanning((&t, &rules, text.as_deref()), overlap, || {
                self.scan_host(&rules.local, t.verify, t.dry_run)
            })?;
        let known = tree.zip(text);
        let scanned = (host, stats);
        let image = match known {
            Some(known) => known,
            None => {
                let text = ask_manifest(conn, &self.st, &t.image, &rules.local, &scanned.0)?;
                (image_tree(&t, &rules, &text)?, text)
            }
        };
        let (differences, pending) = self.compared(t, accepted, rules, image, scanned)?;
        conn.send(&Msg::Differences(differences))?;
        self.pending = Some(pending);
        // While the controller plans. Only a shortcut: a cache not saved means hashing
        // again.
        if let Some(cache) = cache {
            let _ = cache.save(&self.st);
        }
        Ok(())
    }

    /// Scans the host for a target: the state dir made before, and the hash cache to
    /// save after unless a dry run.
    fn scan_host(
        &self,
        local: &Excludes,
        verify: bool,
        dry_run: bool,
    ) -> Result<(HostTree, ScanStats, Option<scan::HashCache>)> {
        if !dry_run {
            // Made before the scan, so the parent's mtime it moves is seen (and set back
            // to the image's) by this push, not the next.
            self.st.create()?;
        }
        let mut cache = scan::HashCache::load(&self.st);
        let (host, stats) = scan::scan(self.root, local, &mut cache, verify)?;
        Ok((host, stats, (!dry_run).then_some(cache)))
    }

    /// Compares the host with the target's image: the `Differences` to send, and the
    /// `Pending` to keep.
    fn compared(
        &self,
        t: Target,
        accepted: Option<imager_trust::freshness::Newest>,
        rules: HostRules,
        (tree, text): (Tree, String),
        (mut host, stats): (HostTree, ScanStats),
    ) -> Result<(Differences, Pending)> {
        let HostRules {
            local_state,
            local,
            owned,
            ..
        } = rules;
        host.absent_local = scan::absent_local_state(&self.b, &tree, &local, &host);
        scan::spare_own_executable(self.root, &tree, &mut host);
        let record = self.st.record()?;
        let own = Ownership {
            recorded: record.manifest().map(Recorded::of),
            owned: Excludes::new(&owned)?,
        };
        let (changes, unmanaged) = compare(&tree, &mut host, &local, &own, DirMtimes::Strict);
        drop(own);
        // A first install (a host that records no image and holds nothing of it but
        // directories, such as the /var/lib the syncer's own state made) gets the
        // image's files as built: its triggers run only when asked.
        let first_install = matches!(record, state::Record::None)
            && host
                .entries
                .iter()
                .all(|e| e.kind == Kind::Dir || tree.get(&e.path).is_none());
        // The controller needs the host's entry only to pick a delta base.
        let sent: Vec<Change> = changes
            .iter()
            .map(|c| Change {
                path: c.path.clone(),
                kind: c.kind,
                host: c.host.clone().filter(|_| c.kind == ChangeKind::Content),
                what: c.what,
            })
            .collect();
        let differences = Differences {
            image: record.id(),
            changes: sent,
            have: have_list(&tree, &host, &changes),
            scan: stats,
            kept: host.kept_list(),
            stale: Vec::new(),
            unmanaged,
        };
        let paths = |keep: fn(ChangeKind) -> bool| -> HashSet<Vec<u8>> {
            changes
                .iter()
                .filter(|c| keep(c.kind))
                .map(|c| c.path.clone())
                .collect()
        };
        let pending = Pending {
            id: t.image,
            dry_run: t.dry_run,
            previous: t.previous,
            accepted,
            content: paths(|k| k != ChangeKind::Delete && k != ChangeKind::Meta),
            bases: paths(|k| k == ChangeKind::Content),
            image: tree,
            manifest: text,
            local_state,
            owned: t.owned,
            triggers: t.triggers,
            run_triggers: !first_install || t.install_triggers,
            changes,
            host,
        };
        Ok((differences, pending))
    }

    fn on_signature_request<R: Read, W: Write>(
        &mut self,
        conn: &mut Conn<R, W>,
        r: SignatureRequest,
    ) -> Result<()> {
        let p = self
            .pending
            .as_ref()
            .ok_or_else(|| Error::Protocol("SignatureRequest before Target".into()))?;
        let mut sigs = Vec::with_capacity(r.paths.len());
        for path in r.paths {
            if !p.bases.contains(&path) {
                return Err(Error::Protocol(format!(
                    "signature asked for {}, which is not a changed file",
                    escape(&path)
                )));
            }
            let data = crate::hostfs::read_file(&self.b, &path)?;
            sigs.push((path, crate::encoding::rsync_delta::signature(&data)));
        }
        conn.send(&Msg::Signatures(Signatures { sigs }))
    }

    fn on_stage(&mut self, m: Stage) -> Result<()> {
        let p = match &self.pending {
            None => return Err(Error::Protocol("Stage before Target".into())),
            Some(p) if p.dry_run => {
                return Err(Error::Protocol("Stage after a dry-run Target".into()))
            }
            Some(p) => p,
        };
        self.stage_started = Some(Instant::now());
        let s = Staging::create(&self.b)?;
        // Every new entry is a new inode (files, nodes, directories).
        s.check_room(m.bytes, p.content.len() as u64 + COMMIT_INODES)?;
        self.staging = Some(s.with_new_dirs(&p.changes, &p.image)?);
        Ok(())
    }

    fn on_health<R: Read, W: Write>(&mut self, conn: &mut Conn<R, W>, h: Health) -> Result<()> {
        let (root, st) = (self.root, &self.st);
        let Health { command, timeout } = h;
        // Refused as a failed check (126: "cannot execute"), so the rollout reports it and
        // rolls the host back as for any unhealthy host.
        if let Err(why) = self.trust.allows_health(&command) {
            conn.send(&Msg::HealthResult(TriggerRun {
                name: "health".into(),
                status: Some(126),
                timed_out: false,
                seconds: 0.0,
                output: why,
                skipped: None,
            }))?;
            return Ok(());
        }
        let t = imager_core::contract::Trigger::command("health", command, timeout);
        let image = st.image()?.map(|h| h.to_hex()).unwrap_or_default();
        conn.send(&Msg::HealthResult(triggers::run(root, &image, &t, &[])))?;
        Ok(())
    }

    fn on_commit<R: Read, W: Write>(&mut self, conn: &mut Conn<R, W>) -> Result<()> {
        let p = self
            .pending
            .take()
            .filter(|p| !p.dry_run)
            .ok_or_else(|| Error::Protocol("Commit without a Target to commit".into()))?;
        let s = match self.staging.take() {
            Some(s) => s,
            None => Staging::create(&self.b)?.with_new_dirs(&p.changes, &p.image)?,
        };
        let started = self.stage_started.take().unwrap_or_else(Instant::now);
        let not_run = if p.run_triggers {
            Vec::new()
        } else {
            let paths: Vec<Vec<u8>> = p.changes.iter().map(|c| c.path.clone()).collect();
            triggers::matching(&triggers::parse(&p.triggers)?, &paths)?
        };
        let c = commit_pending(&self.b, &self.st, p, s, started)?;
        conn.send(&Msg::Committed(c))?;
        for (t, _) in not_run {
            conn.send(&Msg::TriggerRan(triggers::skipped(
                &t,
                "a first install: the image's files are as built (push --install-triggers runs them)",
            )))?;
        }
        run_pending_triggers(self.root, &self.st, conn)?;
        // After the triggers, which may have restarted some of it.
        conn.send(&Msg::Stale(crate::protocol::Stale {
            units: stale::list(self.root),
        }))?;
        conn.send(&Msg::Done)
    }
}

/// For content the image needs: one host path that already holds it, per content.
pub fn have_list(tree: &Tree, host: &HostTree, changes: &[Change]) -> Vec<(Hash, Vec<u8>)> {
    let holders = scan::holders(host);
    let mut have = Vec::new();
    let mut seen = HashSet::new();
    for c in changes {
        if let Some(Kind::File { hash, .. }) = tree.get(&c.path).map(|e| &e.kind) {
            if let Some(p) = holders.get(hash) {
                if seen.insert(*hash) {
                    have.push((*hash, p.clone()));
                }
            }
        }
    }
    have
}

/// Inodes the commit needs beyond the staged entries: replacements of the state files
/// (journal, image, previous image, pending triggers, manifest) and a hard link's
/// temporary name, with a margin.
const COMMIT_INODES: u64 = 16;

/// The files a commit makes or sets the metadata of, with the content each holds then
/// (a file's content was checked as it was staged; one whose metadata alone changed
/// holds the image's content already).
fn written_files(p: &Pending) -> Vec<written::Written> {
    p.changes
        .iter()
        .filter(|c| c.kind != ChangeKind::Delete)
        .filter_map(|c| match p.image.get(&c.path) {
            Some(
                e @ Entry {
                    kind: Kind::File { hash, size },
                    ..
                },
            ) => Some(written::Written {
                path: c.path.clone(),
                hash: *hash,
                size: *size,
                mtime: e.mtime,
            }),
            _ => None,
        })
        .collect()
}

fn commit_pending(
    b: &Beneath,
    st: &StateDir,
    p: Pending,
    mut s: Staging,
    started: Instant,
) -> Result<crate::protocol::Committed> {
    // (A record that does not check out is written again, even with nothing to change.)
    if p.changes.is_empty() && st.record()?.id() == Some(p.id) && p.previous == Previous::Keep {
        // Already there: nothing to journal or record (triggers still left from an
        // interrupted push run next).
        return Ok(crate::protocol::Committed::default());
    }
    // Nodes and replacement directories are made here, not sent; meanwhile the content
    // staged so far goes to disk, so the flush after them is short.
    std::thread::scope(|scope| {
        let early = scope.spawn(|| s.dir.sync());
        let made = stage::put_nodes(&mut s.names, &s.dir, &p.changes, &p.image);
        let flushed = early
            .join()
            .unwrap_or_else(|_| Err(Error::Agent("the flush's thread panicked".into())));
        made.and(flushed)
    })?;
    s.sync()?;
    let stage_seconds = started.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut j = commit::plan_ops(p.id, &p.image, &p.changes, &s.names, &p.host.protected)?;
    j.previous = p.previous;
    if !p.run_triggers {
        j.changed.clear();
    }
    let mut ls = p.local_state.join("\n");
    ls.push('\n');
    let journal = j.text();
    // Everything written from here to the end of the commit fits, or the push stops
    // while the host is untouched: the target files, the journal, the queue of changed
    // paths for the triggers (at most the journal's size), the state files'
    // replacements and a hard link's temporary name.
    let owned_len = p.owned.as_ref().map_or(0, Vec::len);
    let bytes = p.manifest.len() + ls.len() + owned_len + p.triggers.len() + 2 * journal.len();
    s.check_room(bytes as u64, COMMIT_INODES)?;
    // The files the journal's commit finishes with: all on disk (one flush) before it.
    st.write_unsynced(state::TARGET, p.manifest.as_bytes())?;
    st.write_unsynced(state::TARGET_LOCAL_STATE, ls.as_bytes())?;
    st.write_unsynced(state::TARGET_TRIGGERS, &p.triggers)?;
    // Empty when the image has none (an image's own file is never empty: it starts
    // with a comment), so that every commit replaces the recorded one.
    st.write_unsynced(state::TARGET_OWNED, p.owned.as_deref().unwrap_or_default())?;
    trust::stage_record(st, p.accepted.as_ref())?;
    st.sync()?;
    // The commit point: from here on, any agent finishes this commit.
    st.write(state::JOURNAL, journal.as_bytes())?;
    if std::env::var_os("SYNCER_TEST_CRASH_AFTER_JOURNAL").is_some() {
        std::process::abort();
    }
    commit::apply(b, &s.dir.fd, &p.image, &j).map_err(|e| commit::stuck(b, &j, e))?;
    // The renames reach the disk before the state says the host runs the new image.
    s.sync()
        .and_then(|_| commit::finish(st, &j))
        .map_err(|e| commit::stuck(b, &j, commit::OpFailed::recording(e)))?;
    Staging::clear(b)?;
    // Only a shortcut for the next scan: a list not written means hashing again.
    let _ = written::record_written(st, &written_files(&p), written::now_ns());
    Ok(crate::protocol::Committed {
        ops: j.ops.len() as u64,
        stage_seconds,
        commit_seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Runs the triggers queued by commits (this one and any an interrupted agent left).
fn run_pending_triggers<R: Read, W: Write>(
    root: &Path,
    st: &StateDir,
    conn: &mut Conn<R, W>,
) -> Result<()> {
    let Some(pending) = st.read_text(state::PENDING_TRIGGERS)? else {
        return Ok(());
    };
    let changed: Vec<Vec<u8>> = pending
        .lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| imager_core::tree::escape::unescape(l).ok())
        .collect();
    let defs = triggers::parse(&st.read(state::TRIGGERS)?.unwrap_or_default())?;
    let image = st.image()?.map(|h| h.to_hex()).unwrap_or_default();
    for (t, paths) in triggers::matching(&defs, &changed)? {
        let r = triggers::run(root, &image, &t, &paths);
        conn.send(&Msg::TriggerRan(r))?;
    }
    st.remove(state::PENDING_TRIGGERS)
}

/// Status: how the host differs from the image it was last synced to.
fn status(root: &Path, b: &Beneath, st: &StateDir, verify: bool) -> Result<Differences> {
    let record = st.record()?;
    // Drift is never computed from a record that does not check out.
    if let Some(why) = record.damage() {
        return Err(Error::Agent(why));
    }
    let image = record.id();
    let Some(text) = record.manifest() else {
        return Ok(Differences {
            image,
            changes: Vec::new(),
            have: Vec::new(),
            scan: Default::default(),
            kept: Vec::new(),
            stale: stale::list(root),
            unmanaged: Vec::new(),
        });
    };
    let tree = imager_core::tree::text::parse(text, "the host's recorded image manifest")?;
    let globs =
        imager_core::tree::scan::list_lines(&st.read_text(state::LOCAL_STATE)?.unwrap_or_default());
    let local = scan::local_excludes(&globs)?;
    // The recorded image is the one compared: what the host has beyond it is drift only
    // under the prefixes it owns.
    let owned_file = st.read(state::OWNED)?.filter(|f| !f.is_empty());
    let own = Ownership::owned(&imager_core::contract::owned_of(owned_file.as_deref()))?;
    let mut cache = scan::HashCache::load(st);
    let (mut host, stats) = scan::scan(root, &local, &mut cache, verify)?;
    host.absent_local = scan::absent_local_state(b, &tree, &local, &host);
    scan::spare_own_executable(root, &tree, &mut host);
    cache.save(st)?;
    let (changes, unmanaged) = compare(&tree, &mut host, &local, &own, DirMtimes::Lenient);
    Ok(Differences {
        image,
        changes,
        have: Vec::new(),
        scan: stats,
        kept: host.kept_list(),
        stale: stale::list(root),
        unmanaged,
    })
}
