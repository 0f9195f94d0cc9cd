//! The record's transactions: a new rollout and its reservations, a run's start, a
//! host's claim and its result, the rollout's own fields, and forgetting a rollout.
//! Each reads, decides, and writes compared against what it read, again on a conflict.

use super::{etcd_err, json, meta_of, parse, settled, Claim, Fleet, RESERVED};
use crate::error::{Error, Result};
use crate::progress::Observer;
use crate::rollout::etcd::{Cmp, Op};
use crate::rollout::state::{HostResult, RolloutState};

impl Fleet {
    /// Records a new rollout `st` over `hosts`, reserving each of them first; refused when
    /// a rollout is recorded at this prefix already or another one holds a host.
    pub fn create(&self, st: &RolloutState, hosts: &[String], obs: &dyn Observer) -> Result<()> {
        if let Some((old, _)) = self.load()? {
            return Err(Error::RolloutState(format!(
                "a rollout is recorded at {} already: {}; --join or --resume it, or drop its record with `syncer rollout --forget {}`",
                self.url,
                describe(&old),
                self.url
            )));
        }
        self.reserve(hosts, obs)?;
        let meta = self.key("meta");
        let v = meta_of(st);
        let (ok, _) = self
            .client
            .txn(
                &[Cmp::Absent(&meta)],
                &[Op::Put(&meta, &v, 0)],
                &[],
                "record the rollout",
            )
            .map_err(etcd_err)?;
        if !ok {
            self.release(hosts)?;
            return Err(Error::RolloutState(format!(
                "another controller recorded a rollout at {} first",
                self.url
            )));
        }
        Ok(())
    }

    /// Reserves every host for this rollout (those it holds already included); when one
    /// is another rollout's, gives back those it took and refuses, naming that rollout.
    pub fn reserve(&self, hosts: &[String], obs: &dyn Observer) -> Result<()> {
        let mut taken = Vec::new();
        for h in hosts {
            let key = format!("{RESERVED}{h}");
            let mine = self.prefix.as_bytes();
            let (ok, read) = self
                .retry(obs, &format!("reserve {h}"), &|| false, || {
                    self.client.txn(
                        &[Cmp::Absent(&key)],
                        &[Op::Put(&key, mine, 0)],
                        &[Op::Get(&key)],
                        &format!("reserve {h}"),
                    )
                })?
                .unwrap_or_default();
            if ok {
                taken.push(h.clone());
                continue;
            }
            let holder = read
                .first()
                .map(|k| String::from_utf8_lossy(&k.value).into_owned())
                .unwrap_or_default();
            if holder != self.prefix {
                self.release(&taken)?;
                return Err(Error::RolloutState(self.refusal(h, &holder)));
            }
        }
        Ok(())
    }

    /// "host H is held by the rollout at PREFIX: image X, run by Y".
    fn refusal(&self, host: &str, other: &str) -> String {
        let them = Fleet::reader(&format!("etcd://{}{other}", self.client.members()));
        let what = match them.and_then(|f| f.load()) {
            Ok(Some((st, _))) => describe(&st),
            Ok(None) => "its record is gone (`syncer rollout --forget` it)".into(),
            Err(e) => format!("its record cannot be read: {e}"),
        };
        format!("refused: host {host} is held by the rollout at {other}: {what}")
    }

    /// Gives back the reservations of `hosts` that are this rollout's.
    pub fn release(&self, hosts: &[String]) -> Result<()> {
        for h in hosts {
            let key = format!("{RESERVED}{h}");
            self.client
                .txn(
                    &[Cmp::Value(&key, self.prefix.as_bytes())],
                    &[Op::Delete(&key)],
                    &[],
                    &format!("release {h}"),
                )
                .map_err(etcd_err)?;
        }
        Ok(())
    }

    /// Changes the rollout's own fields with `f`, compared against the record's
    /// revision (again on a conflict): the rollout as written.
    pub fn update(
        &self,
        obs: &dyn Observer,
        what: &str,
        f: &dyn Fn(&mut RolloutState),
    ) -> Result<RolloutState> {
        let meta = self.key("meta");
        loop {
            let kv = self
                .retry(obs, what, &|| false, || self.client.get(&meta))?
                .flatten()
                .ok_or_else(|| {
                    Error::RolloutState(format!("no rollout is recorded at {}", self.url))
                })?;
            let mut st: RolloutState = parse(&kv)?;
            f(&mut st);
            let v = meta_of(&st);
            let ok = self
                .retry(obs, what, &|| false, || {
                    self.client.txn(
                        &[Cmp::ModRev(&meta, kv.mod_revision)],
                        &[Op::Put(&meta, &v, 0)],
                        &[],
                        what,
                    )
                })?
                .is_some_and(|(ok, _)| ok);
            if ok {
                return Ok(st);
            }
        }
    }

    /// Claims `host` (of `colo`) for this controller in run `run`, unless it is settled already or
    /// another controller holds it; `None` when `abort` said to give up while etcd was
    /// out of reach (no new host starts then).
    pub fn claim(
        &self,
        host: &str,
        colo: &str,
        run: u64,
        obs: &dyn Observer,
        abort: &dyn Fn() -> bool,
    ) -> Result<Option<Claim>> {
        let (result, claim, inflight, reserved) = (
            self.key(&format!("hosts/{colo}/{host}")),
            self.key(&format!("claims/{host}")),
            self.key(&format!("inflight/{host}")),
            format!("{RESERVED}{host}"),
        );
        let what = format!("claim {host}");
        loop {
            let Some(prev) = self.retry(obs, &what, abort, || self.client.get(&result))? else {
                return Ok(None);
            };
            let unchanged = match &prev {
                Some(kv) if settled(&parse::<HostResult>(kv)?, run) => {
                    return Ok(Some(Claim::Done))
                }
                Some(kv) => Cmp::ModRev(&result, kv.mod_revision),
                None => Cmp::Absent(&result),
            };
            let me = self.claim_value();
            let cmp = [
                Cmp::Absent(&claim),
                Cmp::Value(&reserved, self.prefix.as_bytes()),
                unchanged,
            ];
            let ops = [
                Op::Get(&inflight),
                Op::Put(&claim, &me, self.lease()),
                Op::Put(&inflight, &me, 0),
            ];
            let Some((ok, read)) = self.retry(obs, &what, abort, || {
                self.client
                    .txn(&cmp, &ops, &[Op::Get(&claim), Op::Get(&reserved)], &what)
            })?
            else {
                return Ok(None);
            };
            if ok {
                let before = read
                    .first()
                    .map(|k| String::from_utf8_lossy(&k.value).into_owned());
                return Ok(Some(Claim::Mine(before)));
            }
            if let Some(c) = read.iter().find(|k| k.key == claim) {
                return Ok(Some(Claim::Held(
                    String::from_utf8_lossy(&c.value).into_owned(),
                )));
            }
            let holder = read.iter().find(|k| k.key == reserved);
            if holder.is_none_or(|k| k.value != self.prefix.as_bytes()) {
                let other = holder.map(|k| String::from_utf8_lossy(&k.value).into_owned());
                return Err(Error::RolloutState(match other {
                    Some(o) => self.refusal(host, &o),
                    None => format!(
                        "host {host} is no longer reserved for {} (forgotten?)",
                        self.url
                    ),
                }));
            }
            // The host's result changed between the read and the claim: read again.
        }
    }

    /// Records `res` (of a host this controller claimed) with the rollout's counters in
    /// one transaction, ending the claim; waits for etcd as long as it takes, since a
    /// result is never dropped. The rollout as written (a spent fleet budget stops it).
    pub fn record(&self, res: &HostResult, obs: &dyn Observer) -> Result<RolloutState> {
        let (meta, result, claim, inflight) = (
            self.key("meta"),
            self.key(&format!("hosts/{}/{}", res.colo, res.host)),
            self.key(&format!("claims/{}", res.host)),
            self.key(&format!("inflight/{}", res.host)),
        );
        let what = format!("record {}'s outcome", res.host);
        let value = json(res);
        loop {
            let kv = self
                .retry(obs, &what, &|| false, || self.client.get(&meta))?
                .flatten()
                .ok_or_else(|| {
                    Error::RolloutState(format!("no rollout is recorded at {}", self.url))
                })?;
            let mut st: RolloutState = parse(&kv)?;
            count(&mut st, res);
            let m = meta_of(&st);
            let me = self.claim_value();
            let cmp = [Cmp::ModRev(&meta, kv.mod_revision), Cmp::Value(&claim, &me)];
            let ops = [
                Op::Put(&result, &value, 0),
                Op::Put(&meta, &m, 0),
                Op::Delete(&claim),
                Op::Delete(&inflight),
            ];
            let (ok, _) = self
                .retry(obs, &what, &|| false, || {
                    self.client.txn(&cmp, &ops, &[], &what)
                })?
                .unwrap_or_default();
            if ok {
                return Ok(st);
            }
            // Our claim may have gone with a lease that expired while etcd was out of
            // reach: the result is still this host's latest, so it is written; the claim
            // and marker, if another controller's now, are left to it.
            let still_ours = self
                .client
                .get(&claim)
                .map_err(etcd_err)?
                .is_some_and(|k| k.value == me);
            if !still_ours {
                obs.note(&format!("{}: this controller's claim was lost (lease expired); recording its outcome anyway", res.host));
                let ops = [Op::Put(&result, &value, 0), Op::Put(&meta, &m, 0)];
                let (ok, _) = self
                    .retry(obs, &what, &|| false, || {
                        self.client
                            .txn(&[Cmp::ModRev(&meta, kv.mod_revision)], &ops, &[], &what)
                    })?
                    .unwrap_or_default();
                if ok {
                    return Ok(st);
                }
            }
        }
    }

    /// Drops a rollout's record and gives back its reservations: how many keys went.
    pub fn forget(&self) -> Result<i64> {
        let (kvs, _) = self.client.range(RESERVED).map_err(etcd_err)?;
        let mine: Vec<String> = kvs
            .iter()
            .filter(|k| k.value == self.prefix.as_bytes())
            .map(|k| k.key[RESERVED.len()..].to_string())
            .collect();
        self.release(&mine)?;
        let n = self
            .client
            .delete_prefix(&format!("{}/", self.prefix))
            .map_err(etcd_err)?;
        Ok(n + mine.len() as i64)
    }
}

/// Counts a result in the rollout's fleet counters, and stops the rollout when the
/// fleet's failure budget is spent.
fn count(st: &mut RolloutState, res: &HostResult) {
    let Some(f) = st.fleet.as_mut() else { return };
    if res.ok() {
        return;
    }
    f.failed += 1;
    if let Some(b) = f.failure_budget {
        if f.failed as usize > b && st.stopped.is_none() {
            st.stopped = Some(format!(
                "the fleet's failure budget is spent: {} host(s) failed, the budget is {b}",
                f.failed
            ));
        }
    }
}

/// "image X, started by Y, run N, stopped: why; controllers now: A, B".
pub fn describe(st: &RolloutState) -> String {
    let mut s = format!("image {}", st.image);
    if let Some(f) = &st.fleet {
        s.push_str(&format!(", started by {}, run {}", f.started_by, f.run));
        if f.controllers.is_empty() {
            s.push_str(", no controller running now");
        } else {
            s.push_str(&format!(", run by {}", f.controllers.join(", ")));
        }
    }
    match (&st.stopped, st.finished) {
        (Some(why), _) => s.push_str(&format!(", stopped: {why}")),
        (None, true) => s.push_str(", finished"),
        (None, false) => {}
    }
    s
}
