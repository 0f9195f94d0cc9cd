//! Rollouts: an image across the fleet, colo after colo (in inventory order), canary
//! first, then waves, hosts in parallel up to the policy's limit. A host that fails (sync
//! error, trigger failure, failed health check, or with `require_restarted` processes
//! still running replaced files after its triggers) is rolled back to the image it ran
//! before, as a delta too. When a wave spends its failure budget, or on Ctrl-C once the
//! hosts in flight are done, the rollout stops; its state is saved after every host, so
//! `--resume` continues where it stopped. Deltas are computed once per (from, to) pair
//! and shared by every host ([`crate::delta::Cache`]).
//!
//! The state is a JSON file by default ([`state`]); with `--state etcd://...` it is a
//! record in etcd ([`fleet`], over [`etcd`]'s JSON-gateway client) that several
//! controllers share, claiming each host before they push it (`coord.rs` is a
//! controller's side of that). `[fleet] parallel_colos` rolls colos at once and
//! `[fleet] failure_budget` counts failures across the whole rollout, with either state.

pub mod connect;
pub mod dryrun;
pub mod etcd;
pub mod fleet;
pub mod hooks;
pub mod inventory;
pub mod limit;
mod rollback;
pub mod state;

pub use coord::continue_colo;
pub use rollback::rollback;

mod coord;
mod host;

use host::{roll_host, Images};

use crate::delta::Cache;
use crate::error::{Error, Result};
use crate::push::{self, HostReport, Image, Observer, PushOptions};
use crate::ratelimit::Bucket;
use crate::transport::{HostSpec, TransportOptions};
use imager::store::Store;
use imager::Hash;
use inventory::{Colo, Host, Inventory, IoNice, Pause};
use limit::Limit;
use state::{HostResult, RolloutState};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a rollout (or `syncer rollback`) is asked beyond the inventory's policies.
pub struct RolloutOptions {
    /// Colos to roll, by name (all when empty).
    pub colos: Vec<String>,
    /// Of their hosts, those to roll (`--limit`; all by default).
    pub limit: Limit,
    /// Go on between colos without asking.
    pub yes: bool,
    /// Have every agent hash every file instead of trusting its hash cache.
    pub rehash: bool,
    /// `--no-store-copies` ([`PushOptions::no_store_copies`]).
    pub no_store_copies: bool,
    /// ssh command, agent path, agent installation: the command line's, under the
    /// inventory's connection settings (policies add the rest).
    pub transport: TransportOptions,
    /// Where the state is saved after every host (and read back by `--resume`), when
    /// it is not kept in etcd.
    pub state_file: PathBuf,
    /// The rollout's record in etcd, when it is kept there: every controller reads and
    /// writes it there, and claims each host before pushing it.
    pub fleet: Option<Arc<fleet::Fleet>>,
    /// Join the rollout recorded in `fleet` rather than start (or `--resume`) one.
    pub join: bool,
    /// Set by Ctrl-C: no new host starts; those in flight finish.
    pub stop: Arc<AtomicBool>,
    /// Asks whether to go on to the next colo (a terminal prompt in the binary).
    pub confirm: Box<dyn Fn(&str) -> bool + Sync>,
}

/// The options one host of a colo is pushed with.
fn push_options(colo: &Colo, base: &RolloutOptions, total: Option<Arc<Bucket>>) -> PushOptions {
    let p = &colo.policy;
    let mut prefix = Vec::new();
    if let Some(n) = p.nice {
        prefix.extend(["nice".to_string(), "-n".into(), n.to_string()]);
    }
    match &p.ionice {
        Some(IoNice::Idle) => prefix.extend(["ionice".to_string(), "-c".into(), "3".into()]),
        Some(IoNice::BestEffort(l)) => prefix.extend([
            "ionice".to_string(),
            "-c".into(),
            "2".into(),
            "-n".into(),
            l.to_string(),
        ]),
        Some(IoNice::Realtime(l)) => prefix.extend([
            "ionice".to_string(),
            "-c".into(),
            "1".into(),
            "-n".into(),
            l.to_string(),
        ]),
        None => {}
    }
    let mut transport = base.transport.clone();
    transport.agent_prefix = prefix;
    transport.rate_per_host = p.bandwidth_per_host;
    transport.rate_total = total;
    PushOptions {
        dry_run: false,
        rehash: base.rehash,
        transport,
        health: p.health.clone(),
        require_restarted: p.require_restarted,
        restore_previous: crate::protocol::Previous::Keep,
        // Set by the caller, once the colo's policy is loaded.
        require_signed: None,
        mirrors: colo.mirrors.clone(),
        install_triggers: false,
        max_delete: p.max_delete,
        no_store_copies: base.no_store_copies,
    }
}

/// The options for one host: the colo's, with the host's connection settings over the
/// command line's.
pub fn host_options(popts: &PushOptions, h: &Host) -> PushOptions {
    PushOptions {
        transport: h.connect.transport(&popts.transport),
        ..popts.clone()
    }
}

/// The colos `opts` selects, each with only the hosts its `--limit` selects, and the
/// specs of the hosts left out.
fn selected(inv: &Inventory, opts: &RolloutOptions) -> Result<(Vec<Colo>, Vec<String>)> {
    let mut left = Vec::new();
    let mut colos = Vec::new();
    for c in inv.select(&opts.colos)? {
        let (c, l) = opts.limit.apply(c);
        left.extend(l);
        if !c.hosts.is_empty() {
            colos.push(c);
        }
    }
    Ok((colos, left))
}

/// A colo's waves in order, each with its name ("canary", "wave N") and its failure
/// budget (none for the canary).
fn named_waves(colo: &Colo) -> Result<Vec<(String, usize, Vec<Host>)>> {
    let canary = colo.policy.canary.min(colo.hosts.len());
    let mut out = Vec::new();
    for (wi, wave) in inventory::waves(colo)?.into_iter().enumerate() {
        let is_canary = wi == 0 && canary > 0;
        let name = if is_canary {
            "canary".to_string()
        } else {
            format!("wave {}", if canary > 0 { wi } else { wi + 1 })
        };
        let budget = if is_canary {
            0
        } else {
            colo.policy.failure_budget.of(wave.len())?
        };
        out.push((name, budget, wave));
    }
    Ok(out)
}

/// The colo's `require_signed` policy, loaded, and whether `image` satisfies it: what a
/// rollout checks before a colo's first host, so it fails before touching any.
fn signing_policy(colo: &Colo, image: &Image) -> Result<Option<Arc<imager::sign::TrustPolicy>>> {
    let policy = load_signing_policy(colo)?;
    if let Some(p) = &policy {
        p.check(&image.id, &image.signed(), imager::sign::now())
            .map_err(|e| Error::Unsigned(format!("colo {}: not rolled out: {e}", colo.name)))?;
    }
    Ok(policy)
}

/// The colo's `require_signed` policy, loaded (an error names the colo and the file).
fn load_signing_policy(colo: &Colo) -> Result<Option<Arc<imager::sign::TrustPolicy>>> {
    let Some(path) = &colo.policy.require_signed else {
        return Ok(None);
    };
    imager::sign::TrustPolicy::load(path)
        .map(|p| Some(Arc::new(p)))
        .map_err(|e| Error::Unsigned(format!("colo {}: require_signed: {e}", colo.name)))
}

/// Runs (or, with `resume`, continues) a rollout of `image` over `inv`; with a record in
/// etcd (`opts.fleet`), starts, resumes or joins (`opts.join`) the one recorded there.
pub fn run(
    store: &Store,
    image: Hash,
    inv: &Inventory,
    opts: &RolloutOptions,
    resume: Option<RolloutState>,
    obs: &dyn Observer,
) -> Result<RolloutState> {
    let started = Instant::now();
    let (colos, not_selected) = selected(inv, opts)?;
    let hosts = colos.iter().map(|c| c.hosts.len()).sum();
    let fleet_budget = match &inv.fleet.failure_budget {
        Some(b) => Some(b.of(hosts)?),
        None => None,
    };
    let st = match &opts.fleet {
        Some(f) => coord::begin(
            f,
            image,
            inv,
            opts,
            &colos,
            not_selected,
            resume.is_some(),
            obs,
        )?,
        None => file_state(image, inv, opts, resume, not_selected)?,
    };
    let images = Images {
        store,
        loaded: Mutex::new(HashMap::new()),
    };
    let run = Run {
        target: images.get(image)?,
        images,
        cache: Cache::new(opts_cache_dir(store), 19),
        opts,
        obs,
        dir: inv.dir().to_path_buf(),
        run_no: st.fleet.as_ref().map_or(0, |f| f.run),
        st: Mutex::new(st),
        halted: Mutex::new(None),
        fleet_budget,
        fleet_failed: AtomicUsize::new(0),
        started_colos: AtomicUsize::new(0),
    };
    let todo_total = colos
        .iter()
        .flat_map(|c| c.hosts.iter())
        .filter(|h| !run.is_done(&h.spec))
        .count();
    // Every colo's policy before any host: a rollout never stops half-way for a
    // signature it could have asked for at the start.
    let mut signing = HashMap::new();
    for colo in &colos {
        signing.insert(colo.name.clone(), signing_policy(colo, &run.target)?);
    }
    obs.rollout(todo_total as u64);
    let parallel = inv.fleet.parallel_colos.unwrap_or(1);
    let done = run.colos(&colos, Mutex::new(signing), parallel);
    warn_dropped(&run.cache, obs);
    let halted = lock(&run.halted).clone();
    let mut s = run.st.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = &opts.fleet {
        s = coord::end(f, &colos, halted, obs)?;
    }
    done?;
    s.wall_seconds = started.elapsed().as_secs_f64();
    s.controller_cpu_seconds = own_cpu_seconds();
    if opts.fleet.is_none() {
        s.finished = s.stopped.is_none();
        s.save(&opts.state_file)?;
    }
    Ok(s)
}

/// The state a rollout with a state file starts from: the saved one (`--resume`, of the
/// same image and inventory) or a new one.
fn file_state(
    image: Hash,
    inv: &Inventory,
    opts: &RolloutOptions,
    resume: Option<RolloutState>,
    not_selected: Vec<String>,
) -> Result<RolloutState> {
    let mut st = match resume {
        Some(s) => {
            s.check(image, inv)?;
            s
        }
        None => RolloutState::new(image, inv, &inv.select(&opts.colos)?),
    };
    st.stopped = None;
    st.finished = false;
    st.limit = opts.limit.patterns();
    st.not_selected = not_selected;
    Ok(st)
}

/// What every wave of one rollout shares: the image, the cache, the saved state.
struct Run<'a> {
    images: Images<'a>,
    target: Arc<Image>,
    cache: Cache,
    opts: &'a RolloutOptions,
    obs: &'a dyn Observer,
    /// Where hooks run: the inventory's directory.
    dir: PathBuf,
    /// This controller's view of the state (in etcd, refreshed from the record).
    st: Mutex<RolloutState>,
    /// The run of a rollout recorded in etcd (0 with a state file).
    run_no: u64,
    /// Why this controller starts no more hosts, in every colo: the first reason.
    halted: Mutex<Option<String>>,
    /// Failed hosts the whole rollout may have; with a state file counted here, in etcd
    /// in the record (all controllers together).
    fleet_budget: Option<usize>,
    fleet_failed: AtomicUsize,
    /// Colos started so far by this controller: the first ones go without a pause.
    started_colos: AtomicUsize,
}

impl Run<'_> {
    fn is_done(&self, h: &HostSpec) -> bool {
        let name = h.to_string();
        let st = lock(&self.st);
        match self.opts.fleet {
            Some(_) => st
                .hosts
                .iter()
                .any(|r| r.host == name && fleet::settled(r, self.run_no)),
            None => st.is_done(h),
        }
    }

    fn save(&self, s: &RolloutState) -> Result<()> {
        s.save(&self.opts.state_file)
    }

    fn halted(&self) -> Option<String> {
        lock(&self.halted).clone()
    }

    /// Records why the rollout stops and saves it, so a resumed rollout and its report
    /// say where and why it ended. In etcd, an interruption stops this controller only:
    /// the others go on with the rollout.
    fn stop(&self, why: String) -> Result<()> {
        lock(&self.halted).get_or_insert_with(|| why.clone());
        match &self.opts.fleet {
            Some(f) if why != "interrupted" => {
                f.update(self.obs, "record why the rollout stops", &|s| {
                    s.stopped.get_or_insert_with(|| why.clone());
                })?;
                Ok(())
            }
            Some(_) => Ok(()),
            None => {
                let mut s = lock(&self.st);
                s.stopped.get_or_insert(why);
                self.save(&s)
            }
        }
    }

    /// Rolls the colos, `parallel` at once, each from its first wave to its last; stops
    /// starting colos (and hosts) once the rollout is stopped.
    fn colos(
        &self,
        colos: &[Colo],
        signing: Mutex<HashMap<String, Option<Arc<imager::sign::TrustPolicy>>>>,
        parallel: usize,
    ) -> Result<()> {
        let next = AtomicUsize::new(0);
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|sc| {
            for _ in 0..parallel.clamp(1, colos.len().max(1)) {
                sc.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(colo) = colos.get(i) else { break };
                    if self.halted().is_some() || self.opts.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let sign = lock(&signing).remove(&colo.name).flatten();
                    if let Err(e) = self.colo(i, colo, sign, parallel) {
                        lock(&self.halted).get_or_insert_with(|| e.to_string());
                        lock(&failed).get_or_insert(e);
                        break;
                    }
                });
            }
        });
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One colo (the `i`th of the rollout): its pause, then its waves.
    fn colo(
        &self,
        i: usize,
        colo: &Colo,
        sign: Option<Arc<imager::sign::TrustPolicy>>,
        parallel: usize,
    ) -> Result<()> {
        let todo = colo.hosts.iter().filter(|h| !self.is_done(&h.spec)).count();
        if todo == 0 {
            return Ok(());
        }
        // The first colos to start, as many as roll at once, go without a pause. In etcd
        // that is by their place in the rollout, the same for every controller.
        let nth = self.started_colos.fetch_add(1, Ordering::SeqCst);
        let first = if self.opts.fleet.is_some() { i } else { nth };
        if first >= parallel && !self.go_on_to(colo) {
            return self.stop(format!("not confirmed: colo {}", colo.name));
        }
        let total = colo.policy.bandwidth_total.map(Bucket::new);
        let mut popts = push_options(colo, self.opts, total);
        popts.require_signed = sign;
        if let Some(why) = self.colo_waves(colo, &popts)? {
            self.stop(why)?;
        }
        Ok(())
    }

    /// Runs a colo's waves in order, the canary first, so the rollout can stop at the
    /// first wave that fails: returns why it stopped there.
    fn colo_waves(&self, colo: &Colo, popts: &PushOptions) -> Result<Option<String>> {
        for (name, budget, wave) in named_waves(colo)? {
            let why = match self.opts.fleet {
                Some(_) => self.shared_wave(colo, &name, &wave, budget, popts),
                None => self.wave(colo, &name, &wave, budget, popts),
            };
            if let Some(why) = why {
                return Ok(Some(why));
            }
        }
        Ok(None)
    }

    /// Waits or asks as the colo's policy says before it starts; false: not confirmed.
    fn go_on_to(&self, colo: &Colo) -> bool {
        match colo.policy.pause {
            Pause::None => true,
            Pause::Seconds(n) => {
                self.obs
                    .note(&format!("pausing {n} s before colo {}", colo.name));
                std::thread::sleep(std::time::Duration::from_secs(n));
                true
            }
            Pause::Confirm if self.opts.yes => true,
            Pause::Confirm => match &self.opts.fleet {
                Some(f) => coord::wait_continue(f, colo, &self.opts.stop, self.obs),
                None => (self.opts.confirm)(&colo.name),
            },
        }
    }

    /// Counts a failed host against the fleet's budget (with a state file; in etcd the
    /// record counts); the reason to stop once it is spent.
    fn count_fleet_failure(&self) -> Option<String> {
        let b = self.fleet_budget?;
        let n = self.fleet_failed.fetch_add(1, Ordering::SeqCst) + 1;
        (n > b).then(|| {
            format!("the fleet's failure budget is spent: {n} host(s) failed, the budget is {b}")
        })
    }

    /// The wave's hosts not done yet, said with the wave's budget when there are any.
    fn wave_start<'h>(
        &self,
        colo: &Colo,
        name: &str,
        wave: &'h [Host],
        budget: usize,
    ) -> Vec<&'h Host> {
        let hosts: Vec<&Host> = wave.iter().filter(|h| !self.is_done(&h.spec)).collect();
        if !hosts.is_empty() {
            self.obs.note(&format!(
                "colo {}: {name}: {} host(s), failure budget {budget}",
                colo.name,
                hosts.len()
            ));
            self.obs
                .wave(&format!("{} {name}", colo.name), hosts.len() as u64);
        }
        hosts
    }

    /// Pushes the wave's hosts that are not done yet; returns why the rollout stops
    /// after it (its failure budget spent, or interrupted), if it does.
    fn wave(
        &self,
        colo: &Colo,
        name: &str,
        wave: &[Host],
        budget: usize,
        popts: &PushOptions,
    ) -> Option<String> {
        let hosts = self.wave_start(colo, name, wave, budget);
        if hosts.is_empty() {
            return None;
        }
        // Counted as hosts finish: once the budget is spent, no new host of the
        // wave starts (those in flight finish).
        let failed = AtomicUsize::new(0);
        let results = push::for_hosts(&hosts, colo.policy.parallel, |h| {
            if self.opts.stop.load(Ordering::SeqCst)
                || failed.load(Ordering::SeqCst) > budget
                || self.halted().is_some()
            {
                return None;
            }
            let res = self.host(colo, name, h, popts);
            self.obs.log(&res.line());
            self.obs.host_done(res.ok());
            if !res.ok() {
                failed.fetch_add(1, Ordering::SeqCst);
                if let Some(why) = self.count_fleet_failure() {
                    lock(&self.halted).get_or_insert(why);
                }
            }
            let mut s = lock(&self.st);
            s.record(res.clone());
            if let Err(e) = self.save(&s) {
                self.obs.log(&format!("cannot save the rollout state: {e}"));
            }
            Some(res)
        });
        let failures = results.iter().flatten().filter(|r| !r.ok()).count();
        if failures > budget {
            Some(format!(
                "colo {} {name}: {failures} host(s) failed, the budget is {budget}",
                colo.name
            ))
        } else if let Some(why) = self.halted() {
            Some(why)
        } else if self.opts.stop.load(Ordering::SeqCst) {
            Some("interrupted".into())
        } else {
            None
        }
    }
}

impl Run<'_> {
    /// One host's turn: its `pre` hook, then (if that passed) its push and any
    /// rollback, then its `post` hook, which sees the outcome.
    fn host(&self, colo: &Colo, wave: &str, h: &Host, popts: &PushOptions) -> HostResult {
        let t = Instant::now();
        let image = (wave, &self.target.id);
        let mut around = hooks::Around::new(colo, &h.spec, image, &self.dir, self.obs);
        let pre = around.pre();
        let mut res = match pre.as_ref().filter(|r| !r.ok()) {
            Some(failed) => {
                let why = hooks::pre_failed(failed);
                let r = HostReport::untouched(&h.spec, why.clone());
                let mut res = HostResult::new(&colo.name, wave, &h.spec, r, None, 0.0);
                res.reason = Some(why);
                res
            }
            None => {
                let o = host_options(popts, h);
                let (r, rb) = roll_host(
                    &self.images,
                    &self.target,
                    &self.cache,
                    &h.spec,
                    &o,
                    self.obs,
                );
                HostResult::new(&colo.name, wave, &h.spec, r, rb, 0.0)
            }
        };
        res.pre = pre;
        if let Some(post) = around.post(&res.outcome.to_string()) {
            if !post.ok() {
                res.fail(hooks::post_failed(&post));
            }
            res.post = Some(post);
        }
        res.seconds = t.elapsed().as_secs_f64();
        res
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The delta cache beside the store (as `syncer push` uses it).
fn opts_cache_dir(store: &Store) -> Option<PathBuf> {
    let d = store.root().join("syncer-cache");
    imager::fsx::create_dir_all(&d).ok().map(|_| d)
}

/// CPU seconds this process has used (user + system), from /proc/self/stat: the
/// controller's own cost, without the agents it started.
pub fn own_cpu_seconds() -> f64 {
    let Ok(stat) = imager::fsx::read_to_string("/proc/self/stat".as_ref()) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Names the damaged delta cache files that were dropped and recomputed.
fn warn_dropped(cache: &Cache, obs: &dyn Observer) {
    for d in cache.dropped() {
        obs.log(&format!("warning: {d}"));
    }
}
