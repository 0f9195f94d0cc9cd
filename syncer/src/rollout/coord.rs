//! A rollout recorded in etcd ([`super::fleet`]), seen from one of its controllers: how
//! it starts, resumes or joins the rollout; takes the hosts of a wave that no controller
//! holds, claiming each one first; waits for the hosts other controllers push before it
//! goes on to the next wave (the canary rule holds across controllers); takes over the
//! hosts of a controller that died, asking each host its state first; and reads the
//! record back whole at its end.

use super::fleet::{self, Claim, Fleet};
use super::inventory::{Colo, Host, Inventory};
use super::state::{HostResult, RolloutState};
use super::{lock, RolloutOptions, Run};
use crate::error::{Error, Result};
use crate::push::{self, Observer, PushOptions};
use imager::Hash;
use std::sync::atomic::{AtomicBool, Ordering};

/// Starts the rollout's record (reserving its hosts), or with `resume` starts its next
/// run, or with `opts.join` checks it may be joined; then lists this controller as
/// working on it. The record as it is then.
#[allow(clippy::too_many_arguments)]
pub(super) fn begin(
    f: &Fleet,
    image: Hash,
    inv: &Inventory,
    opts: &RolloutOptions,
    colos: &[Colo],
    not_selected: Vec<String>,
    resume: bool,
    obs: &dyn Observer,
) -> Result<RolloutState> {
    let hosts: Vec<String> = colos
        .iter()
        .flat_map(|c| c.hosts.iter().map(|h| h.spec.to_string()))
        .collect();
    let budget = match &inv.fleet.failure_budget {
        Some(b) => Some(b.of(hosts.len())?),
        None => None,
    };
    if opts.join || resume {
        let (st, _) = f
            .load()?
            .ok_or_else(|| Error::RolloutState(format!("no rollout is recorded at {}", f.url)))?;
        check(f, &st, image, inv)?;
        if opts.join {
            if let Some(why) = &st.stopped {
                return Err(Error::RolloutState(format!(
                    "the rollout at {} stopped ({why}): --resume it to go on",
                    f.url
                )));
            }
        } else {
            f.reserve(&hosts, obs)?;
            f.update(obs, "start the rollout's next run", &|s| {
                s.stopped = None;
                s.finished = false;
                if let Some(fi) = s.fleet.as_mut() {
                    fi.run += 1;
                    fi.failed = 0;
                    fi.failure_budget = budget;
                }
            })?;
        }
    } else {
        let mut st = RolloutState::new(image, inv, &inv.select(&opts.colos)?);
        st.limit = opts.limit.patterns();
        st.not_selected = not_selected;
        let mut fi = fleet::fleet_info(&f.url, 1, inv.digest.clone(), budget);
        if opts.yes {
            fi.continued = st.colos.clone();
        }
        st.fleet = Some(fi);
        f.create(&st, &hosts, obs)?;
    }
    f.register(obs)?;
    let (st, _) = f
        .load()?
        .ok_or_else(|| Error::RolloutState(format!("the record at {} is gone", f.url)))?;
    Ok(st)
}

/// A controller joins or resumes only the rollout it was started for: the same image,
/// and an inventory with the same content (its path may differ between machines).
fn check(f: &Fleet, st: &RolloutState, image: Hash, inv: &Inventory) -> Result<()> {
    if st.image != image {
        return Err(Error::RolloutState(format!(
            "the rollout at {} is of image {}, not {image}",
            f.url, st.image
        )));
    }
    let digest = st.fleet.as_ref().map(|fi| fi.inventory_digest.as_str());
    if digest != Some(inv.digest.as_str()) {
        return Err(Error::RolloutState(format!(
            "the rollout at {} was started with another inventory than {} (its blake3 differs): \
             give every controller the same inventory",
            f.url,
            inv.path.display()
        )));
    }
    Ok(())
}

/// At the end of this controller's run: the rollout is finished when no controller
/// stopped it and every host of its colos is settled in this run, and then its hosts
/// are given back. The record, read whole.
pub(super) fn end(
    f: &Fleet,
    colos: &[Colo],
    halted: Option<String>,
    obs: &dyn Observer,
) -> Result<RolloutState> {
    let (st, _) = f
        .load()?
        .ok_or_else(|| Error::RolloutState(format!("the record at {} is gone", f.url)))?;
    let run = st.fleet.as_ref().map_or(0, |fi| fi.run);
    let all: Vec<String> = colos
        .iter()
        .flat_map(|c| c.hosts.iter().map(|h| h.spec.to_string()))
        .collect();
    let settled = all.iter().all(|h| {
        st.hosts
            .iter()
            .any(|r| &r.host == h && fleet::settled(r, run))
    });
    if halted.is_none() && st.stopped.is_none() && settled && !st.finished {
        f.update(obs, "record that the rollout finished", &|s| {
            s.finished = s.stopped.is_none();
        })?;
        f.release(&all)?;
    }
    let (mut st, _) = f
        .load()?
        .ok_or_else(|| Error::RolloutState(format!("the record at {} is gone", f.url)))?;
    // This controller's own view: it stopped, even if the rollout goes on elsewhere.
    if st.stopped.is_none() && !st.finished {
        st.stopped = halted.or_else(|| Some("hosts are left for other controllers".into()));
    }
    Ok(st)
}

/// Waits for `syncer rollout --continue` to let `colo` start (from any machine); false
/// when this controller is interrupted first.
pub(super) fn wait_continue(f: &Fleet, colo: &Colo, stop: &AtomicBool, obs: &dyn Observer) -> bool {
    let name = colo.name.clone();
    let mut said = false;
    loop {
        let rec = match f.load() {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return false,
        };
        let (st, rev) = rec;
        let fi = st.fleet.unwrap_or_default();
        if fi.continued.contains(&name) {
            return true;
        }
        if st.stopped.is_some() || stop.load(Ordering::SeqCst) {
            return false;
        }
        if !said {
            said = true;
            let _ = f.update(obs, "say which colo waits", &|s| {
                if let Some(fi) = s.fleet.as_mut() {
                    fi.waiting = Some(name.clone());
                }
            });
            obs.note(&format!(
                "colo {name} waits: `syncer rollout --continue {}` lets it start",
                f.url
            ));
        }
        let _ = f.retry(
            obs,
            "watch for --continue",
            &|| stop.load(Ordering::SeqCst),
            || f.wait_change(rev),
        );
    }
}

/// Lets the colo that waits (or `colo`) start: `syncer rollout --continue`. The colo.
pub fn continue_colo(f: &Fleet, colo: Option<&str>, obs: &dyn Observer) -> Result<String> {
    let (st, _) = f
        .load()?
        .ok_or_else(|| Error::RolloutState(format!("no rollout is recorded at {}", f.url)))?;
    let name = match (colo, st.fleet.as_ref().and_then(|fi| fi.waiting.clone())) {
        (Some(c), _) => c.to_string(),
        (None, Some(w)) => w,
        (None, None) => {
            return Err(Error::RolloutState(format!(
                "no colo of the rollout at {} waits to continue",
                f.url
            )))
        }
    };
    if !st.colos.contains(&name) {
        return Err(Error::RolloutState(format!(
            "the rollout at {} has no colo {name}",
            f.url
        )));
    }
    f.update(obs, "let the colo start", &|s| {
        if let Some(fi) = s.fleet.as_mut() {
            if !fi.continued.contains(&name) {
                fi.continued.push(name.clone());
            }
            if fi.waiting.as_deref() == Some(&name) {
                fi.waiting = None;
            }
        }
    })?;
    Ok(name)
}

impl Run<'_> {
    /// Reads the colo's results again into this controller's view (and whether the
    /// rollout was stopped); the store's revision then.
    fn refresh(&self, colo: &Colo) -> Option<i64> {
        let f = self.opts.fleet.as_ref()?;
        match f.load_colo(&colo.name) {
            Ok(Some((meta, hosts, rev))) => {
                if let Some(why) = &meta.stopped {
                    lock(&self.halted).get_or_insert_with(|| why.clone());
                }
                lock(&self.st).replace_colo(&colo.name, hosts);
                Some(rev)
            }
            Ok(None) | Err(_) => None,
        }
    }

    /// A wave shared with other controllers: pushes the hosts no one holds, then waits
    /// for the others' until every host of the wave has its result in this run (taking
    /// over those whose controller died); why the rollout stops after it, if it does.
    pub(super) fn shared_wave(
        &self,
        colo: &Colo,
        name: &str,
        wave: &[Host],
        budget: usize,
        popts: &PushOptions,
    ) -> Option<String> {
        self.refresh(colo);
        let hosts = self.wave_start(colo, name, wave, budget);
        if hosts.is_empty() {
            return None;
        }
        let mut said = false;
        loop {
            if let Some(why) = self.halted() {
                return Some(why);
            }
            if self.opts.stop.load(Ordering::SeqCst) {
                return Some("interrupted".into());
            }
            let pending: Vec<&Host> = hosts
                .iter()
                .copied()
                .filter(|h| !self.is_done(&h.spec))
                .collect();
            push::for_hosts(&pending, colo.policy.parallel, |h| {
                self.shared_host(colo, name, h, popts)
            });
            let rev = self.refresh(colo).unwrap_or(0);
            let failures = self.wave_failures(colo, name);
            if failures > budget {
                return Some(format!(
                    "colo {} {name}: {failures} host(s) failed, the budget is {budget}",
                    colo.name
                ));
            }
            let left: Vec<String> = hosts
                .iter()
                .filter(|h| !self.is_done(&h.spec))
                .map(|h| h.spec.to_string())
                .collect();
            if left.is_empty() {
                return None;
            }
            if !self.others_hold(&left) {
                continue;
            }
            if !said {
                said = true;
                self.obs.note(&format!(
                    "colo {} {name}: waiting for {} host(s) other controllers push: {}",
                    colo.name,
                    left.len(),
                    left.join(" ")
                ));
            }
            if let Some(f) = &self.opts.fleet {
                // A watch that cannot reach etcd is tried again, not spun on.
                let abort = || self.opts.stop.load(Ordering::SeqCst);
                let what = "watch the wave's hosts";
                if let Err(e) = f.retry(self.obs, what, &abort, || f.wait_change(rev)) {
                    lock(&self.halted).get_or_insert_with(|| e.to_string());
                }
            }
        }
    }

    /// Whether every one of `hosts` is claimed by a controller (so this one waits rather
    /// than tries them again). Unreadable claims count as held: wait, then read again.
    fn others_hold(&self, hosts: &[String]) -> bool {
        let Some(f) = &self.opts.fleet else {
            return false;
        };
        match f.claims() {
            Ok(c) => hosts.iter().all(|h| c.iter().any(|(k, _)| k == h)),
            Err(_) => true,
        }
    }

    /// Failed hosts of the colo's wave in this run, as the record says.
    fn wave_failures(&self, colo: &Colo, wave: &str) -> usize {
        lock(&self.st)
            .hosts
            .iter()
            .filter(|r| r.colo == colo.name && r.wave == wave && r.run == self.run_no && !r.ok())
            .count()
    }

    /// One host of a shared wave: claimed first (skipped when another controller holds
    /// it or it is settled), asked its state first when it was taken over, pushed, and
    /// its result recorded with the claim's end.
    fn shared_host(
        &self,
        colo: &Colo,
        wave: &str,
        h: &Host,
        popts: &PushOptions,
    ) -> Option<HostResult> {
        let f = self.opts.fleet.as_ref()?;
        let abort = || self.opts.stop.load(Ordering::SeqCst) || self.halted().is_some();
        if abort() {
            return None;
        }
        let spec = h.spec.to_string();
        if f.lease_was_lost() {
            self.obs.note(
                "this controller's etcd lease expired while etcd was out of reach: its claims \
                 went with it; it goes on under a new lease",
            );
            if let Err(e) = f.register(self.obs) {
                self.obs
                    .log(&format!("cannot list this controller again: {e}"));
            }
        }
        let before = match f.claim(&spec, &colo.name, self.run_no, self.obs, &abort) {
            Ok(Some(Claim::Mine(before))) => before,
            Ok(Some(Claim::Held(_) | Claim::Done) | None) => return None,
            Err(e) => {
                lock(&self.halted).get_or_insert_with(|| e.to_string());
                return None;
            }
        };
        let taken_over = before.map(|who| self.ask_host(h, popts, &who));
        let mut res = self.host(colo, wave, h, popts);
        res.run = self.run_no;
        res.controller = Some(f.controller.clone());
        res.taken_over = taken_over;
        self.obs.log(&res.line());
        self.obs.host_done(res.ok());
        match f.record(&res, self.obs) {
            Ok(meta) => {
                if let Some(why) = meta.stopped {
                    lock(&self.halted).get_or_insert(why);
                }
            }
            Err(e) => {
                self.obs
                    .log(&format!("{spec}: cannot record its outcome: {e}"));
                lock(&self.halted).get_or_insert_with(|| e.to_string());
            }
        }
        lock(&self.st).record(res.clone());
        Some(res)
    }

    /// Asks a host that `who` left in the middle of its push for its state before
    /// anything else is done to it: reaching its agent finishes (or, when it cannot,
    /// reports) the commit its journal holds. What the record says of the takeover.
    fn ask_host(&self, h: &Host, popts: &PushOptions, who: &str) -> String {
        let o = super::host_options(popts, h);
        let s = push::status_host(Some(self.images.store), &h.spec, &o, false);
        let said = match (&s.error, s.image) {
            (Some(e), _) => format!("its state could not be read: {e}"),
            (None, Some(i)) if s.mid_commit => format!("at image {}, mid-commit", i.short()),
            (None, Some(i)) => format!("at image {}", i.short()),
            (None, None) => "no image recorded".to_string(),
        };
        let line = format!("taken over from {who}, who left it mid-push; the host said: {said}");
        self.obs.log(&format!("{}: {line}", h.spec));
        line
    }
}
