//! Rollouts: an image across the fleet, colo after colo (in inventory order), canary
//! first, then waves, hosts in parallel up to the policy's limit. A host that fails (sync
//! error, trigger failure, failed health check, or with `require_restarted` processes
//! still running replaced files after its triggers) is rolled back to the image it ran
//! before, as a delta too. When a wave spends its failure budget, or on Ctrl-C once the
//! hosts in flight are done, the rollout stops; its state is saved after every host, so
//! `--resume` continues where it stopped. Deltas are computed once per (from, to) pair
//! and shared by every host ([`crate::delta::Cache`]).

pub mod connect;
pub mod dryrun;
pub mod hooks;
pub mod inventory;
pub mod limit;
pub mod state;

use crate::delta::Cache;
use crate::error::{Error, Result};
use crate::push::{self, HostReport, Image, Observer, PushOptions};
use crate::ratelimit::Bucket;
use crate::transport::{self, HostSpec, TransportOptions};
use imager::store::Store;
use imager::Hash;
use inventory::{Colo, Host, Inventory, IoNice, Pause};
use limit::Limit;
use state::{HostResult, Rollback, RolloutState};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Where the state is saved after every host (and read back by `--resume`).
    pub state_file: PathBuf,
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

/// Images loaded once each (the target, and every image hosts are rolled back to).
struct Images<'s> {
    store: &'s Store,
    loaded: Mutex<HashMap<Hash, Arc<Image>>>,
}

impl Images<'_> {
    fn get(&self, id: Hash) -> Result<Arc<Image>> {
        if let Some(i) = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(i.clone());
        }
        let i = Arc::new(Image::load(self.store, id)?);
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, i.clone());
        Ok(i)
    }
}

/// Pushes `target` to one host and, if that fails after the host was reached, pushes
/// back the image it had before.
fn roll_host(
    images: &Images,
    target: &Image,
    cache: &Cache,
    spec: &HostSpec,
    opts: &PushOptions,
    obs: &dyn Observer,
) -> (HostReport, Option<Rollback>) {
    let r = push::push_host(images.store, target, cache, spec, opts, obs);
    if r.ok || r.agent.is_none() || r.refused {
        // Success, a host never reached, or a plan refused before anything was
        // written: nothing to undo (a way back would delete what the guard kept).
        return (r, None);
    }
    let before = r.image_before;
    let rb = match before {
        None => Rollback {
            ok: false,
            image: None,
            error: Some("the host had no recorded image to go back to".into()),
            report: None,
        },
        Some(b) if b == target.id => Rollback {
            ok: true,
            image: Some(b),
            error: Some("the host was already at the target image before".into()),
            report: None,
        },
        Some(b) => match images.get(b) {
            Err(e) => Rollback {
                ok: false,
                image: Some(b),
                error: Some(format!("cannot load the previous image: {e}")),
                report: None,
            },
            Ok(prev) => {
                obs.note(&format!("{spec}: rolling back to {}", b.short()));
                let mut back = opts.clone();
                back.health = None;
                // From the controller: mirrors hold the way forward, and an urgent way
                // back must not wait for their 404s.
                back.mirrors.clear();
                // The way back replaces files too: its own stale processes are listed,
                // never a reason to fail it.
                back.require_restarted = false;
                // The way back deletes what the failed push added: the syncer's own.
                back.max_delete = crate::deletes::MaxDelete::Unlimited;
                // Back to how it was: the failed image is not this host's "previous".
                back.restore_previous = crate::protocol::Previous::set(r.previous_before);
                let rr = push::push_host(images.store, &prev, cache, spec, &back, obs);
                Rollback {
                    ok: rr.ok,
                    image: Some(b),
                    error: rr.error.clone(),
                    report: Some(rr),
                }
            }
        },
    };
    (r, Some(rb))
}

/// Runs (or, with `resume`, continues) a rollout of `image` over `inv`.
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
    let images = Images {
        store,
        loaded: Mutex::new(HashMap::new()),
    };
    let todo_total = colos
        .iter()
        .flat_map(|c| c.hosts.iter())
        .filter(|h| !st.is_done(&h.spec))
        .count();
    let run = Run {
        target: images.get(image)?,
        images,
        cache: Cache::new(opts_cache_dir(store), 19),
        opts,
        obs,
        dir: inv.dir().to_path_buf(),
        st: Mutex::new(st),
    };
    // Every colo's policy before any host: a rollout never stops half-way for a
    // signature it could have asked for at the start.
    let mut signing = HashMap::new();
    for colo in &colos {
        signing.insert(colo.name.clone(), signing_policy(colo, &run.target)?);
    }
    obs.rollout(todo_total as u64);
    let mut first = true;
    for colo in &colos {
        let todo: usize = colo.hosts.iter().filter(|h| !run.is_done(&h.spec)).count();
        if todo == 0 {
            continue;
        }
        if !first && !run.go_on_to(colo) {
            run.stop(format!("not confirmed: colo {}", colo.name))?;
            break;
        }
        first = false;
        let total = colo.policy.bandwidth_total.map(Bucket::new);
        let mut popts = push_options(colo, opts, total);
        popts.require_signed = signing.remove(&colo.name).flatten();
        if let Some(why) = run.colo_waves(colo, &popts)? {
            run.stop(why)?;
            break;
        }
    }
    warn_dropped(&run.cache, obs);
    let mut s = run.st.into_inner().unwrap_or_else(|p| p.into_inner());
    s.finished = s.stopped.is_none();
    s.wall_seconds = started.elapsed().as_secs_f64();
    s.controller_cpu_seconds = own_cpu_seconds();
    s.save(&opts.state_file)?;
    Ok(s)
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
    st: Mutex<RolloutState>,
}

impl Run<'_> {
    fn is_done(&self, h: &HostSpec) -> bool {
        lock(&self.st).is_done(h)
    }

    fn save(&self, s: &RolloutState) -> Result<()> {
        s.save(&self.opts.state_file)
    }

    /// Records why the rollout stops and saves it, so a resumed rollout and its report
    /// say where and why it ended.
    fn stop(&self, why: String) -> Result<()> {
        let mut s = lock(&self.st);
        s.stopped = Some(why);
        self.save(&s)
    }

    /// Runs a colo's waves in order, the canary first, so the rollout can stop at the
    /// first wave that fails: returns why it stopped there.
    fn colo_waves(&self, colo: &Colo, popts: &PushOptions) -> Result<Option<String>> {
        for (name, budget, wave) in named_waves(colo)? {
            if let Some(why) = self.wave(colo, &name, &wave, budget, popts) {
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
            Pause::Confirm => (self.opts.confirm)(&colo.name),
        }
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
        let hosts: Vec<&Host> = wave.iter().filter(|h| !self.is_done(&h.spec)).collect();
        if hosts.is_empty() {
            return None;
        }
        self.obs.note(&format!(
            "colo {}: {name}: {} host(s), failure budget {budget}",
            colo.name,
            hosts.len()
        ));
        self.obs
            .wave(&format!("{} {name}", colo.name), hosts.len() as u64);
        // Counted as hosts finish: once the budget is spent, no new host of the
        // wave starts (those in flight finish).
        let failed = std::sync::atomic::AtomicUsize::new(0);
        let results = push::for_hosts(&hosts, colo.policy.parallel, |h| {
            if self.opts.stop.load(Ordering::SeqCst) || failed.load(Ordering::SeqCst) > budget {
                return None;
            }
            let res = self.host(colo, name, h, popts);
            self.obs.log(&res.line());
            self.obs.host_done(res.ok());
            if !res.ok() {
                failed.fetch_add(1, Ordering::SeqCst);
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
        let p = &colo.policy;
        let mut env = vec![
            ("SYNCER_HOST", h.spec.to_string()),
            ("SYNCER_COLO", colo.name.clone()),
            ("SYNCER_WAVE", wave.to_string()),
            ("SYNCER_IMAGE", self.target.id.to_hex()),
        ];
        let hook = |cmd: &str, env: &[(&str, String)]| {
            let r = hooks::run(cmd, env, &self.dir, p.hook_timeout);
            self.obs.log(&format!("{h}: {cmd:?}: {}", r.describe()));
            r
        };
        let pre = p.pre.as_deref().map(|c| hook(c, &env));
        let mut res = match pre.as_ref().filter(|r| !r.ok()) {
            Some(failed) => {
                let why = format!(
                    "the pre hook failed ({}): the host was not touched",
                    failed.describe()
                );
                let r = HostReport {
                    host: h.spec.to_string(),
                    error: Some(why.clone()),
                    outcome: push::PushOutcome::FailedBeforeCommit,
                    ..Default::default()
                };
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
        if let Some(cmd) = &p.post {
            env.push(("SYNCER_OUTCOME", res.outcome.to_string()));
            let post = hook(cmd, &env);
            if !post.ok() {
                res.fail(format!("the post hook failed ({})", post.describe()));
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

/// `syncer rollback`: each host of the colos back to the image it ran before (or to `to`).
pub fn rollback(
    store: &Store,
    inv: &Inventory,
    colos: &[String],
    to: Option<Hash>,
    opts: &RolloutOptions,
    obs: &dyn Observer,
) -> Result<Vec<HostReport>> {
    let selected = inv.select(colos)?;
    let images = Images {
        store,
        loaded: Mutex::new(HashMap::new()),
    };
    let cache = Cache::new(opts_cache_dir(store), 19);
    let mut out = Vec::new();
    for colo in selected {
        let total = colo.policy.bandwidth_total.map(Bucket::new);
        let mut popts = push_options(colo, opts, total);
        popts.health = None;
        popts.require_restarted = false;
        // Each host's image is checked as it is pushed (hosts go back to different
        // images); the policy itself must load before any host.
        popts.require_signed = load_signing_policy(colo)?;
        out.extend(push::for_hosts(&colo.hosts, colo.policy.parallel, |host| {
            let o = host_options(&popts, host);
            let h = &host.spec;
            let target = match to {
                Some(t) => Ok(t),
                None => transport::connect(h, &o.transport).and_then(|s| {
                    let prev = s.welcome.previous;
                    s.close();
                    prev.ok_or_else(|| Error::Rollback("the host records no previous image".into()))
                }),
            };
            let r = target.and_then(|t| images.get(t)).map(|img| {
                let r = push::push_host(store, &img, &cache, h, &o, obs);
                obs.log(&format!(
                    "{h}: {} {}",
                    if r.ok {
                        "back at"
                    } else {
                        "FAILED going back to"
                    },
                    img.id.short()
                ));
                r
            });
            r.unwrap_or_else(|e| HostReport {
                host: h.to_string(),
                error: Some(e.to_string()),
                outcome: push::PushOutcome::FailedBeforeCommit,
                ..Default::default()
            })
        }));
    }
    warn_dropped(&cache, obs);
    Ok(out)
}

/// Names the damaged delta cache files that were dropped and recomputed.
fn warn_dropped(cache: &Cache, obs: &dyn Observer) {
    for d in cache.dropped() {
        obs.log(&format!("warning: {d}"));
    }
}
