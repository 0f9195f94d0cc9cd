//! A rollout's record in etcd, shared by every controller working on it, and the claims
//! that keep two controllers off one host. The JSON state file is one operator's record
//! on one machine; this one outlives the machine, and several controllers (`--join`)
//! and any machine (`--status`, `--continue`) read it.
//!
//! Keys, under the rollout's PREFIX (`etcd://H:P,.../PREFIX`):
//! - `PREFIX/meta`: the rollout (image, inventory digest, colos, limit, run, fleet budget
//!   and its count of failures, why it stopped), a [`RolloutState`] without its hosts;
//! - `PREFIX/hosts/<colo>/<host>`: each host's latest result (by colo, so that a
//!   controller reads one colo's, not the whole fleet's, at each wave);
//! - `PREFIX/claims/<host>`: the controller pushing the host now, under its lease;
//! - `PREFIX/inflight/<host>`: the same, without a lease: left behind by a controller
//!   that died mid-push, it tells the next one to ask the host its state first;
//! - `PREFIX/controllers/<lease>`: each controller working on it, under its lease;
//! - `/syncer/reserved/<host>`: the rollout that holds the host, until it finishes or is
//!   forgotten: a second rollout over it is refused.
//!
//! Every change is one transaction. A host's result, the rollout's counters and the end
//! of its claim are written together, compared against the record's revision, so two
//! controllers never overwrite each other's counts and the record is never half-written.

use super::etcd::{Client, EResult, EtcdError, Kv};
use super::state::{FleetInfo, HostResult, RolloutState};
use crate::error::{Error, Result};
use crate::progress::Observer;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Where every rollout of the cluster reserves its hosts (one namespace per cluster, so
/// that rollouts under different prefixes cannot collide).
pub const RESERVED: &str = "/syncer/reserved/";

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// The host is ours to push; `Some(who)` when another controller had left it in the
    /// middle of its push.
    Mine(Option<String>),
    /// Another controller pushes it now.
    Held(String),
    /// It has its result for this run already.
    Done,
}

/// A controller's handle on a rollout's record: the etcd client, its lease (renewed by a
/// thread of its own), and who it is.
pub struct Fleet {
    client: Arc<Client>,
    /// `etcd://...`, as given.
    pub url: String,
    /// The rollout's prefix: `/fleet/r1`.
    pub prefix: String,
    /// `user@machine pid N`: named in claims, refusals and results.
    pub controller: String,
    lease: Arc<AtomicI64>,
    /// Set by the lease's thread when the lease had expired and a new one was granted
    /// (etcd out of reach longer than its TTL): the claims it held are gone.
    lease_lost: Arc<AtomicBool>,
    quit: Arc<(Mutex<bool>, Condvar)>,
    keeper: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// This process, as other operators see it: `user@machine pid N`.
pub fn whoami() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()));
    let host = imager::fsx::read_to_string("/proc/sys/kernel/hostname".as_ref())
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!("{user}@{host} pid {}", std::process::id())
}

fn etcd_err(e: EtcdError) -> Error {
    Error::RolloutState(e.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(kv: &Kv) -> Result<T> {
    serde_json::from_slice(&kv.value)
        .map_err(|e| Error::RolloutState(format!("etcd key {}: {e}", kv.key)))
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our own types, with string keys: serializing cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Fleet {
    /// Connects to the rollout at `url` with a lease of `ttl` seconds, and keeps the lease
    /// alive from a thread until dropped; waits for etcd until `abort` says to give up.
    pub fn connect(
        url: &str,
        ttl: u64,
        obs: &dyn Observer,
        abort: &dyn Fn() -> bool,
    ) -> Result<Fleet> {
        let (endpoints, prefix) = super::etcd::parse_url(url).map_err(etcd_err)?;
        let client = Arc::new(Client::new(endpoints, Duration::from_secs(2)));
        let quit = Arc::new((Mutex::new(false), Condvar::new()));
        let f = Fleet {
            client,
            url: url.to_string(),
            prefix,
            controller: whoami(),
            lease: Arc::new(AtomicI64::new(0)),
            lease_lost: Arc::new(AtomicBool::new(false)),
            quit,
            keeper: Mutex::new(None),
        };
        let id = f
            .retry(obs, "grant this controller's lease", abort, || {
                f.client.grant(ttl)
            })?
            .ok_or_else(|| Error::RolloutState("interrupted".into()))?;
        f.lease.store(id, Ordering::SeqCst);
        f.start_keeper(ttl);
        Ok(f)
    }

    /// A client for reading the record only (`--status`, `--continue`): no lease.
    pub fn reader(url: &str) -> Result<Fleet> {
        let (endpoints, prefix) = super::etcd::parse_url(url).map_err(etcd_err)?;
        Ok(Fleet {
            client: Arc::new(Client::new(endpoints, Duration::from_secs(2))),
            url: url.to_string(),
            prefix,
            controller: whoami(),
            lease: Arc::new(AtomicI64::new(0)),
            lease_lost: Arc::new(AtomicBool::new(false)),
            quit: Arc::new((Mutex::new(false), Condvar::new())),
            keeper: Mutex::new(None),
        })
    }

    /// Renews the lease every third of its TTL; when it had expired (etcd out of reach
    /// for longer), takes a new one and says so through `lease_lost`.
    fn start_keeper(&self, ttl: u64) {
        let (client, lease, lost, quit) = (
            self.client.clone(),
            self.lease.clone(),
            self.lease_lost.clone(),
            self.quit.clone(),
        );
        let every = Duration::from_millis(ttl * 1000 / 3).max(Duration::from_millis(100));
        let h = std::thread::spawn(move || loop {
            let (m, cv) = &*quit;
            let g = m.lock().unwrap_or_else(|p| p.into_inner());
            let (g, _) = cv
                .wait_timeout_while(g, every, |q| !*q)
                .unwrap_or_else(|p| p.into_inner());
            if *g {
                return;
            }
            drop(g);
            match client.keepalive(lease.load(Ordering::SeqCst)) {
                Ok(true) | Err(_) => {}
                Ok(false) => {
                    if let Ok(id) = client.grant(ttl) {
                        lease.store(id, Ordering::SeqCst);
                        lost.store(true, Ordering::SeqCst);
                    }
                }
            }
        });
        *self.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
    }

    fn key(&self, what: &str) -> String {
        format!("{}/{what}", self.prefix)
    }

    fn lease(&self) -> i64 {
        self.lease.load(Ordering::SeqCst)
    }

    /// This controller's claim value: its name and its lease (a claim of an expired
    /// lease is not ours any more, even with our name).
    fn claim_value(&self) -> Vec<u8> {
        format!("{} lease {:x}", self.controller, self.lease()).into_bytes()
    }

    /// Runs `f` until etcd answers, saying once what it waits for; `None` when `abort`
    /// says to give up first. etcd's own refusals are errors at once.
    pub fn retry<T>(
        &self,
        obs: &dyn Observer,
        what: &str,
        abort: &dyn Fn() -> bool,
        f: impl Fn() -> EResult<T>,
    ) -> Result<Option<T>> {
        let mut said = false;
        let mut pause = Duration::from_millis(100);
        loop {
            match f() {
                Ok(v) => {
                    if said {
                        obs.note(&format!("etcd is back: {what}"));
                    }
                    return Ok(Some(v));
                }
                Err(e @ EtcdError::Unreachable { .. }) => {
                    if !said {
                        obs.note(&format!(
                            "waiting for etcd ({}) to {what}: {e}",
                            self.client.members()
                        ));
                        said = true;
                    }
                }
                Err(e) => return Err(etcd_err(e)),
            }
            if abort() {
                return Ok(None);
            }
            // Between attempts, woken early when the controller ends.
            let (m, cv) = &*self.quit;
            let g = m.lock().unwrap_or_else(|p| p.into_inner());
            let _ = cv.wait_timeout(g, pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Whether the lease had expired since last asked (etcd out of reach for longer than
    /// its TTL) and a new one was taken: the claims and the listing it held are gone.
    pub fn lease_was_lost(&self) -> bool {
        self.lease_lost.swap(false, Ordering::SeqCst)
    }

    /// Lists this controller as working on the rollout (under its lease).
    pub fn register(&self, obs: &dyn Observer) -> Result<()> {
        let key = self.key(&format!("controllers/{:x}", self.lease()));
        let v = self.controller.as_bytes();
        self.retry(obs, "register this controller", &|| false, || {
            self.client.put(&key, v, self.lease())
        })?;
        Ok(())
    }

    /// The record: the rollout with every host's latest result (in the order they
    /// were recorded) and the controllers working on it; `None` when there is none.
    pub fn load(&self) -> Result<Option<(RolloutState, i64)>> {
        let (kvs, rev) = self
            .client
            .range(&format!("{}/", self.prefix))
            .map_err(etcd_err)?;
        let Some(meta) = kvs.iter().find(|k| k.key == self.key("meta")) else {
            return Ok(None);
        };
        let mut st: RolloutState = parse(meta)?;
        let mut hosts: Vec<&Kv> = kvs
            .iter()
            .filter(|k| k.key.starts_with(&self.key("hosts/")))
            .collect();
        hosts.sort_by_key(|k| k.mod_revision);
        for h in hosts {
            st.record(parse(h)?);
        }
        let controllers = kvs
            .iter()
            .filter(|k| k.key.starts_with(&self.key("controllers/")))
            .map(|k| String::from_utf8_lossy(&k.value).into_owned())
            .collect();
        if let Some(f) = st.fleet.as_mut() {
            f.controllers = controllers;
        }
        Ok(Some((st, rev)))
    }

    /// The rollout without its hosts, and the latest results of one colo's hosts; the
    /// store's revision when the results were read (watch from there).
    pub fn load_colo(&self, colo: &str) -> Result<Option<(RolloutState, Vec<HostResult>, i64)>> {
        let (kvs, rev) = self
            .client
            .range(&self.key(&format!("hosts/{colo}/")))
            .map_err(etcd_err)?;
        let Some(meta) = self.client.get(&self.key("meta")).map_err(etcd_err)? else {
            return Ok(None);
        };
        let hosts = kvs.iter().map(parse).collect::<Result<Vec<HostResult>>>()?;
        Ok(Some((parse(&meta)?, hosts, rev)))
    }

    /// The hosts claimed now, each with its claim's value.
    pub fn claims(&self) -> Result<Vec<(String, String)>> {
        let prefix = self.key("claims/");
        let (kvs, _) = self.client.range(&prefix).map_err(etcd_err)?;
        Ok(kvs
            .into_iter()
            .map(|k| {
                let host = k.key[prefix.len()..].to_string();
                (host, String::from_utf8_lossy(&k.value).into_owned())
            })
            .collect())
    }

    /// Blocks until something of the record changes after `rev` (or a while passes:
    /// callers read again and decide either way).
    pub fn wait_change(&self, rev: i64) -> EResult<()> {
        self.client
            .watch(&format!("{}/", self.prefix), rev, Duration::from_secs(5))
    }
}

impl Drop for Fleet {
    /// Stops renewing the lease and revokes it, which frees this controller's claims at
    /// once rather than at its expiry.
    fn drop(&mut self) {
        let (m, cv) = &*self.quit;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(h) = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
        if self.lease() != 0 {
            let _ = self.client.revoke(self.lease());
        }
    }
}

mod ops;
pub use ops::describe;

/// The meta key's value: the rollout without its hosts (they have keys of their own).
fn meta_of(st: &RolloutState) -> Vec<u8> {
    let mut m = st.clone();
    m.hosts.clear();
    m.content.clear();
    if let Some(f) = m.fleet.as_mut() {
        f.controllers.clear();
    }
    json(&m)
}

/// A fleet's state for a new rollout's record.
pub fn fleet_info(url: &str, run: u64, digest: String, budget: Option<usize>) -> FleetInfo {
    FleetInfo {
        url: url.to_string(),
        run,
        inventory_digest: digest,
        started_by: whoami(),
        failure_budget: budget,
        ..Default::default()
    }
}

/// Whether `r` is settled in run `run`: ok, or with a result of this run.
pub fn settled(r: &HostResult, run: u64) -> bool {
    r.ok() || r.run == run
}
