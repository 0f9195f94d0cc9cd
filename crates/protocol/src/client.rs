//! The controller's side of a session, as types: each step sends its message, waits for
//! the answer the protocol allows there, and returns the step that may come next, so a
//! controller that sends out of order (a `Put` before `Stage`, `Commit` twice, a health
//! check in the middle of staging) does not compile. The order is the table in the
//! crate's doc comment:
//!
//! ```text
//! Ready ─status──────────────────────────────▶ Differences
//!       ─target──▶ Targeted::Asked(Identity) ─manifest─▶ (Differences, Planning)
//!                  Targeted::Differs(Differences, Planning)
//! Planning ─signatures*─▶ Planning ─stage─▶ Staging ─fetch? put/pack+data*─▶ commit
//!          ─▶ Committing ─committed─▶ (Committed, Triggering) ─finish─▶ Ready ─health*─▶ …
//! ```
//!
//! Every step borrows the connection; an agent's `Error` message comes back as the error
//! it stands for ([`Error::from_agent`]), any other message out of place as a protocol
//! error that names what was expected. The session's end (`Bye`, the child's exit
//! status) is the transport's.

use crate::error::{Error, Result};
use crate::{
    Committed, Conn, Data, Differences, Fetch, Fetched, Health, Identity, Manifest, ManifestData,
    Msg, Pack, Put, SignatureRequest, Signatures, Stage, Stale, Status, Target, TriggerRun,
};
use std::io::{Read, Write};

/// The error for a message that is not the one the session expects here.
fn unexpected(expected: &str, m: &Msg) -> Error {
    Error::Protocol(format!("expected {expected}, got {}", m.name()))
}

/// The agent's next message; its `Error` message becomes the error it stands for.
fn reply<R: Read, W: Write>(conn: &mut Conn<R, W>) -> Result<Msg> {
    match conn.recv("the agent's reply")? {
        Msg::Error(m) => Err(Error::from_agent(m)),
        m => Ok(m),
    }
}

/// A greeted session between exchanges: a status, a push's target or a health check may
/// start here.
pub struct Ready<'c, R: Read, W: Write>(&'c mut Conn<R, W>);

impl<'c, R: Read, W: Write> Ready<'c, R, W> {
    /// The session over `conn`, after the transport's `Hello`/`Welcome`.
    pub fn new(conn: &'c mut Conn<R, W>) -> Self {
        Ready(conn)
    }

    /// `Status` → `Differences`: how the host differs from the image it records.
    pub fn status(self, s: Status) -> Result<Differences> {
        self.0.send(&Msg::Status(s))?;
        match reply(self.0)? {
            Msg::Differences(d) => Ok(d),
            m => Err(unexpected("Differences", &m)),
        }
    }

    /// `Target` → the host's differences from the image, or, when the target asked for
    /// it (`ManifestData::Ask`), the host's identity first.
    pub fn target(self, t: Target) -> Result<Targeted<'c, R, W>> {
        let asked = t.manifest == ManifestData::Ask;
        self.0.send(&Msg::Target(t))?;
        match (asked, reply(self.0)?) {
            (true, Msg::Identity(i)) => Ok(Targeted::Asked(i, Asked(self.0))),
            (true, m) => Err(unexpected("Identity", &m)),
            (false, Msg::Differences(d)) => Ok(Targeted::Differs(d, Planning(self.0))),
            (false, m) => Err(unexpected("Differences", &m)),
        }
    }

    /// `Health` → `HealthResult`: one run of a health check on the host.
    pub fn health(&mut self, h: Health) -> Result<TriggerRun> {
        self.0.send(&Msg::Health(h))?;
        match reply(self.0)? {
            Msg::HealthResult(run) => Ok(run),
            m => Err(unexpected("HealthResult", &m)),
        }
    }
}

/// What a `Target` got.
pub enum Targeted<'c, R: Read, W: Write> {
    /// The host records no image and said what its tree is: answer with the manifest
    /// ([`Asked::manifest`]).
    Asked(Identity, Asked<'c, R, W>),
    /// How the host differs from the image; the plan comes next.
    Differs(Differences, Planning<'c, R, W>),
}

/// A target whose host said what its tree is, waiting for the image's manifest.
pub struct Asked<'c, R: Read, W: Write>(&'c mut Conn<R, W>);

impl<'c, R: Read, W: Write> Asked<'c, R, W> {
    /// `Manifest` → `Differences`.
    pub fn manifest(self, m: Manifest) -> Result<(Differences, Planning<'c, R, W>)> {
        self.0.send(&Msg::Manifest(m))?;
        match reply(self.0)? {
            Msg::Differences(d) => Ok((d, Planning(self.0))),
            m => Err(unexpected("Differences", &m)),
        }
    }
}

/// A push that has the host's differences and plans what to send; a dry run ends here.
pub struct Planning<'c, R: Read, W: Write>(&'c mut Conn<R, W>);

impl<'c, R: Read, W: Write> Planning<'c, R, W> {
    /// `SignatureRequest` → `Signatures`: the rsync signatures of the host's files.
    pub fn signatures(&mut self, r: SignatureRequest) -> Result<Signatures> {
        self.0.send(&Msg::SignatureRequest(r))?;
        match reply(self.0)? {
            Msg::Signatures(s) => Ok(s),
            m => Err(unexpected("Signatures", &m)),
        }
    }

    /// `Stage`: the content starts.
    pub fn stage(self, s: Stage) -> Result<Staging<'c, R, W>> {
        self.0.send(&Msg::Stage(s))?;
        Ok(Staging(self.0))
    }
}

/// A push sending content: fetches from mirrors, files and packs with their data, and
/// at the end the commit.
pub struct Staging<'c, R: Read, W: Write>(&'c mut Conn<R, W>);

impl<'c, R: Read, W: Write> Staging<'c, R, W> {
    /// `Fetch` → `Fetched`: the agent takes what it can from the mirrors.
    pub fn fetch(&mut self, f: Fetch) -> Result<Fetched> {
        self.0.send(&Msg::Fetch(f))?;
        match reply(self.0)? {
            Msg::Fetched(f) => Ok(f),
            m => Err(unexpected("Fetched", &m)),
        }
    }

    /// `Put`: one file's encoding follows in `Data` frames.
    pub fn put(&mut self, p: Put) -> Result<()> {
        self.0.send(&Msg::Put(p))
    }

    /// `Pack`: a pack's stream follows in `Data` frames.
    pub fn pack(&mut self, p: Pack) -> Result<()> {
        self.0.send(&Msg::Pack(p))
    }

    /// `Data`: the next piece of the current `Put` or `Pack`.
    pub fn data(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.0.send(&Msg::Data(Data { bytes }))
    }

    /// `Commit`, sent at once; [`Committing::committed`] waits for its answer.
    pub fn commit(self) -> Result<Committing<'c, R, W>> {
        self.0.send(&Msg::Commit)?;
        self.0.flush()?;
        Ok(Committing(self.0))
    }
}

/// A commit sent, its `Committed` not yet read.
pub struct Committing<'c, R: Read, W: Write>(&'c mut Conn<R, W>);

impl<'c, R: Read, W: Write> Committing<'c, R, W> {
    /// `Committed`: the host is at the image; its triggers run next.
    pub fn committed(self) -> Result<(Committed, Triggering<'c, R, W>)> {
        match reply(self.0)? {
            Msg::Committed(c) => Ok((c, Triggering(self.0))),
            m => Err(unexpected("Committed", &m)),
        }
    }
}

/// A committed push whose triggers run: their results, then the processes still
/// running replaced files, then `Done`.
pub struct Triggering<'c, R: Read, W: Write>(&'c mut Conn<R, W>);

/// One report of the agent after its commit.
#[derive(Debug)]
pub enum AfterCommit {
    /// A trigger ran (or was skipped).
    Trigger(TriggerRun),
    /// The units whose processes still map replaced files.
    Stale(Stale),
}

impl<'c, R: Read, W: Write> Triggering<'c, R, W> {
    /// `TriggerRan*`, `Stale`, until `Done`, each given to `each` as it arrives (so a
    /// session that fails half-way has reported what came before); then the session is
    /// ready again (for health checks).
    pub fn finish(self, mut each: impl FnMut(AfterCommit)) -> Result<Ready<'c, R, W>> {
        loop {
            match reply(self.0)? {
                Msg::TriggerRan(t) => each(AfterCommit::Trigger(t)),
                Msg::Stale(s) => each(AfterCommit::Stale(s)),
                Msg::Done => return Ok(Ready(self.0)),
                m => return Err(unexpected("TriggerRan, Stale or Done", &m)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorMessage, Previous, ScanStats};
    use imager_core::Hash;

    /// The agent's side of a conversation, as the frames it sends.
    fn agent_says(msgs: &[Msg]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut c = Conn::new(&[][..], &mut wire);
        for m in msgs {
            c.send(m).expect("encode");
        }
        drop(c);
        wire
    }

    /// What the controller sent, in order, by name.
    fn sent(wire: &[u8]) -> Vec<&'static str> {
        let mut c = Conn::new(wire, std::io::sink());
        std::iter::from_fn(|| c.recv_opt().expect("decode").map(|m| m.name())).collect()
    }

    fn target(manifest: ManifestData) -> Target {
        Target {
            image: Hash::of(b"image"),
            manifest,
            local_state: None,
            triggers: Vec::new(),
            verify: false,
            dry_run: false,
            previous: Previous::Keep,
            signatures: Vec::new(),
            owned: None,
            install_triggers: false,
        }
    }

    fn differences() -> Differences {
        Differences {
            image: None,
            changes: Vec::new(),
            have: Vec::new(),
            scan: ScanStats::default(),
            kept: Vec::new(),
            stale: Vec::new(),
            unmanaged: Vec::new(),
        }
    }

    fn run(name: &str) -> TriggerRun {
        TriggerRun {
            name: name.into(),
            status: Some(0),
            timed_out: false,
            seconds: 0.0,
            output: String::new(),
            skipped: None,
        }
    }

    /// A whole push, first install: each step sends its message and takes the answer the
    /// protocol allows there; what went out is the protocol's order.
    #[test]
    fn a_push_goes_in_the_protocols_order() {
        let replies = agent_says(&[
            Msg::Identity(Identity {
                tree: Hash::of(b"host"),
                kept: Vec::new(),
            }),
            Msg::Differences(differences()),
            Msg::Committed(Committed {
                ops: 3,
                ..Default::default()
            }),
            Msg::TriggerRan(run("reload")),
            Msg::Stale(Stale::default()),
            Msg::Done,
            Msg::HealthResult(run("health")),
        ]);
        let mut out = Vec::new();
        let mut conn = Conn::new(&replies[..], &mut out);
        let Targeted::Asked(_, asked) = Ready::new(&mut conn)
            .target(target(ManifestData::Ask))
            .expect("target")
        else {
            panic!("a target that asks gets the host's identity");
        };
        let (_, planning) = asked
            .manifest(Manifest {
                manifest: ManifestData::Recorded,
            })
            .expect("manifest");
        let mut st = planning.stage(Stage { files: 1, bytes: 2 }).expect("stage");
        st.data(b"xy".to_vec()).expect("data");
        let (c, triggering) = st.commit().expect("commit").committed().expect("ok");
        assert_eq!(c.ops, 3);
        let mut after = Vec::new();
        let mut ready = triggering.finish(|e| after.push(e)).expect("done");
        assert!(
            matches!(&after[..], [AfterCommit::Trigger(t), AfterCommit::Stale(_)] if t.name == "reload")
        );
        let check = Health {
            command: "true".into(),
            timeout: 5,
        };
        assert_eq!(ready.health(check).expect("health").name, "health");
        drop(conn);
        assert_eq!(
            sent(&out),
            ["Target", "Manifest", "Stage", "Data", "Commit", "Health"]
        );
    }

    /// An answer out of place is a protocol error naming what was expected; an agent's
    /// `Error` is the error it stands for.
    #[test]
    fn a_reply_out_of_place_is_named_and_an_agents_error_is_its_own() {
        let replies = agent_says(&[Msg::Done]);
        let mut conn = Conn::new(&replies[..], std::io::sink());
        let e = Ready::new(&mut conn)
            .target(target(ManifestData::Recorded))
            .err()
            .expect("refused");
        assert_eq!(
            e.to_string(),
            "protocol error: expected Differences, got Done"
        );

        let replies = agent_says(&[Msg::Differences(differences())]);
        let mut conn = Conn::new(&replies[..], std::io::sink());
        let e = Ready::new(&mut conn)
            .target(target(ManifestData::Ask))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("expected Identity"), "{e}");

        let replies = agent_says(&[Msg::Error(ErrorMessage {
            message: "the host's trust policy refuses it".into(),
            mid_commit: None,
        })]);
        let mut conn = Conn::new(&replies[..], std::io::sink());
        let e = Ready::new(&mut conn)
            .status(Status { verify: false })
            .expect_err("refused");
        assert!(
            matches!(e, Error::Agent(ref m) if m.contains("trust policy")),
            "{e}"
        );
    }
}
