//! The fleet inventory: colos in rollout order, their hosts, how they are reached, and
//! the rollout policy (global, overridden per colo). TOML;
//! `syncer/inventories/example.toml` shows and explains every key.
//!
//! Connection settings ([`super::connect`]) come from a host's inline table, then its
//! colo's `[colo.connect]`, then the global `[connect]`, then the command line (`-e`,
//! `--agent`, `--install-agent`), then the defaults; a spec's own user and port win.
//!
//! ```toml
//! [fleet]                     # the rollout as a whole; no colo overrides it
//! state = "etcd://e1:2379,e2:2379/fleet/web" # the record in etcd (`super::fleet`)
//! parallel_colos = 2          # colos rolled at once
//! failure_budget = "2%"       # failures the whole rollout may have, all controllers
//! [connect]
//! user = "deploy"             # ssh -l, for specs without user@
//! port = 22                   # ssh -p, for specs without :port
//! identity = "keys/fleet"     # ssh -i, relative to the inventory
//! rsh = "ssh -4"              # the whole ssh command line, as -e
//! agent = "/var/lib/syncer/bin/syncer" # the agent's path on hosts, as --agent
//! ssh_options = ["BatchMode=yes"]      # each as -o; a more specific list replaces it
//! install_agent = false       # as --install-agent
//!
//! [policy]
//! canary = 1                  # hosts first, alone, in each colo
//! waves = ["25%", "100%"]     # then waves: counts or percentages of the colo's hosts
//! parallel = 8                # hosts at once
//! failure_budget = "10%"      # failures a wave may have before the rollout stops
//! pause = "confirm"           # between colos: "none", "confirm" or seconds ("30")
//! bandwidth_per_host = "20MB" # bytes per second sent to one host (k, M, G; B optional)
//! bandwidth_total = "200MB"   # ... and to all hosts together
//! nice = 10                   # CPU priority of the agent
//! ionice = "idle"             # IO priority: "idle", "best-effort:N", "realtime:N"
//! require_restarted = false   # fail a host whose processes still run replaced files
//! require_signed = "trust.toml" # push only images this trust policy accepts (relative
//!                             # to the inventory; hosts check their own policy again)
//! max_delete = 1000           # a host whose plan deletes more fails before anything is
//!                             # written: a count, "N%" of its entries, or "unlimited"
//! pre = "lb drain $SYNCER_HOST"    # on the controller before each host (sh -c, in the
//! post = "lb undrain $SYNCER_HOST" # inventory's directory); see `super::hooks`
//! hook_timeout = 300          # seconds before a hook is killed
//! [policy.health]
//! command = "systemctl is-system-running --wait"
//! timeout = 60
//! retries = 3
//! interval = 5
//!
//! [[colo]]
//! name = "test"
//! hosts = ["ssh://root@test1", "local:/srv/chroots/test2", { host = "ssh://test3", port = 2222 }]
//! [colo.connect]
//! identity = "keys/test"
//! [colo.policy]
//! canary = 0
//! ```

use super::connect::{colo_hosts, Connect, HostEntry};
use crate::error::{Error, Result};
use crate::push::Health;
use crate::transport::HostSpec;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A `[policy]` table as written, the global one or a colo's `[colo.policy]`: every key
/// is optional, a colo's unset keys come from the global table, then the defaults
/// ([`Policy`] is the result).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Hosts pushed first in each colo, as a wave of their own that may not fail at all
    /// (default 1).
    pub canary: Option<usize>,
    /// The waves after the canary, each a count or a percentage of the colo's hosts;
    /// hosts left over form one last wave (default one wave of "100%").
    pub waves: Option<Vec<Size>>,
    /// Hosts pushed at once within a wave (default 8).
    pub parallel: Option<usize>,
    /// Failed hosts a wave may have before the rollout stops after it: a count or a
    /// percentage of the wave (default 0).
    pub failure_budget: Option<Size>,
    /// Before each colo but the first: "none", "confirm" (the default; `--yes` answers
    /// it) or seconds to wait.
    pub pause: Option<String>,
    /// The health check run on each host after its triggers (none by default).
    pub health: Option<Health>,
    /// Bytes per second sent to one host: `20MB`, `512k`, `1G`, `1500` ([`parse_rate`]);
    /// no limit by default.
    pub bandwidth_per_host: Option<String>,
    /// Bytes per second sent to all the colo's hosts together, written the same way.
    pub bandwidth_total: Option<String>,
    /// The agent's CPU priority (`nice -n`, -20 to 19); unchanged by default.
    pub nice: Option<i32>,
    /// The agent's IO priority: "idle", "best-effort:N" or "realtime:N" (N from 0 to
    /// 7); unchanged by default.
    pub ionice: Option<String>,
    /// Fail a host whose processes still run files the push replaced once its triggers
    /// ran (default false).
    pub require_restarted: Option<bool>,
    /// A trust policy file the image must satisfy, relative to the inventory's
    /// directory (none by default).
    pub require_signed: Option<PathBuf>,
    /// The most a host's plan may delete: a count, `N%` of its entries, or "unlimited".
    pub max_delete: Option<Size>,
    /// Run on the controller before each host (`sh -c`); a failure fails the host
    /// untouched.
    pub pre: Option<String>,
    /// Run on the controller after each host whose `pre` ran, whatever its outcome.
    pub post: Option<String>,
    /// Seconds a `pre` or `post` command may run before it is killed (default 300).
    pub hook_timeout: Option<u64>,
}

/// A count of hosts or a percentage of a colo's hosts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Size {
    /// A TOML integer: that many hosts.
    Count(usize),
    /// A TOML string: a percentage ("25%") or a count ("3"), read by [`Size::of`].
    Text(String),
}

impl Size {
    /// The number of hosts this is out of `of` (a percentage rounds up, at least 1
    /// when above 0%).
    pub fn of(&self, of: usize) -> Result<usize> {
        match self {
            Size::Count(n) => Ok(*n),
            Size::Text(t) => {
                let bad = || Error::Inventory(format!("bad size {t:?}: use a count or N%"));
                match t.trim().strip_suffix('%') {
                    Some(p) => {
                        let p: f64 = p.trim().parse().map_err(|_| bad())?;
                        if !(0.0..=100.0).contains(&p) {
                            return Err(Error::Inventory(format!(
                                "bad size {t:?}: a percentage is 0% to 100%"
                            )));
                        }
                        Ok(((of as f64) * p / 100.0).ceil() as usize)
                    }
                    None => t.trim().parse().map_err(|_| bad()),
                }
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColoFile {
    name: String,
    hosts: Vec<HostEntry>,
    #[serde(default)]
    connect: Connect,
    /// HTTP mirrors of the published store, in the order hosts try them: the colo's
    /// cache first, then the origin.
    #[serde(default)]
    mirrors: Vec<String>,
    #[serde(default)]
    policy: PolicyFile,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryFile {
    #[serde(default)]
    fleet: FleetSettings,
    #[serde(default)]
    connect: Connect,
    #[serde(default)]
    policy: PolicyFile,
    #[serde(default)]
    colo: Vec<ColoFile>,
}

/// The `[fleet]` table: settings of the rollout as a whole, which no colo overrides.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    /// Where rollouts keep their record: `etcd://H:P[,H:P...]/PREFIX` (`--state` wins).
    pub state: Option<String>,
    /// Colos rolled at once (default 1: one after another); canary and waves still
    /// apply within each colo.
    pub parallel_colos: Option<usize>,
    /// Failed hosts the whole rollout may have, every colo and controller together: a
    /// count or a percentage of the rollout's hosts; one more stops every controller.
    pub failure_budget: Option<Size>,
}

/// Between colos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Go straight on.
    None,
    /// Ask the operator (`--yes` answers yes); the rollout stops if not confirmed.
    Confirm,
    /// Wait this many seconds, then go on.
    Seconds(u64),
}

/// IO priority of the agent (`ionice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoNice {
    /// Class 3: the disk only when nothing else wants it.
    Idle,
    /// Class 2 at this level, 0 (first) to 7 (last).
    BestEffort(u8),
    /// Class 1 at this level, 0 to 7: ahead of every best-effort process on the host.
    Realtime(u8),
}

/// A colo's policy with the global one applied under it.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Hosts pushed first, as a wave of their own whose failure budget is 0.
    pub canary: usize,
    /// The waves after the canary, each a count or a percentage of the colo's hosts
    /// (never empty; [`waves`] splits the hosts).
    pub waves: Vec<Size>,
    /// Hosts pushed at once within a wave; at least 1.
    pub parallel: usize,
    /// Failed hosts a wave may have, a count or a percentage of the wave; one more and
    /// the rollout stops after that wave.
    pub failure_budget: Size,
    /// What happens before the colo starts, when it is not the first.
    pub pause: Pause,
    /// The health check run after each host's triggers; `None`: none.
    pub health: Option<Health>,
    /// Bytes per second.
    pub bandwidth_per_host: Option<u64>,
    /// Bytes per second to all the colo's hosts together; `None`: no limit.
    pub bandwidth_total: Option<u64>,
    /// The agent's `nice` level, -20 to 19; `None`: not changed.
    pub nice: Option<i32>,
    /// The agent's IO priority; `None`: not changed.
    pub ionice: Option<IoNice>,
    /// A host whose processes still run files the push replaced, once its triggers
    /// ran, counts as failed (as a failed health check does).
    pub require_restarted: bool,
    /// A trust policy (as hosts have) the image must satisfy before the first host of
    /// the colo is touched; rollbacks' images too.
    pub require_signed: Option<PathBuf>,
    /// The most a host's plan may delete; a host over it fails before anything is
    /// written.
    pub max_delete: crate::deletes::MaxDelete,
    /// The command run on the controller before each host (see [`super::hooks`]).
    pub pre: Option<String>,
    /// The command run on the controller after each host whose `pre` ran.
    pub post: Option<String>,
    /// How long `pre` or `post` may run before it is killed.
    pub hook_timeout: std::time::Duration,
}

/// One host of a colo: where it is, and how it is reached.
#[derive(Debug, Clone)]
pub struct Host {
    /// The host root, as the inventory spells it.
    pub spec: HostSpec,
    /// Its connection settings: its own over its colo's over the global ones (the
    /// command line's come under them all, see [`Connect::transport`]).
    pub connect: Connect,
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.spec.fmt(f)
    }
}

/// One colo of an inventory: its hosts in the order they roll, and its policy.
#[derive(Debug, Clone)]
pub struct Colo {
    /// Its name, unique in the inventory (`--colo` selects by it).
    pub name: String,
    /// Its hosts in inventory order: the canary first, then the waves; no host root is
    /// listed twice in the inventory.
    pub hosts: Vec<Host>,
    /// Where its hosts fetch published content (`crate::publish`), in order.
    pub mirrors: Vec<String>,
    /// Its own policy with the global one applied under it.
    pub policy: Policy,
}

/// A fleet inventory as loaded, checked whole, so that a rollout never meets a bad
/// setting half-way.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// The file it was read from: a rollout's state names it, and `require_signed` paths
    /// are relative to its directory.
    pub path: PathBuf,
    /// Its colos in rollout order (at least one).
    pub colos: Vec<Colo>,
    /// Its `[fleet]` table.
    pub fleet: FleetSettings,
    /// The blake3 of its text: controllers that join a rollout must have the same.
    pub digest: String,
}

/// `20MB`, `512k`, `1G`, `1500` (bytes per second; `/s` may follow), as
/// [`imager::units::parse_bytes`] reads sizes.
pub fn parse_rate(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    match imager::units::parse_bytes(t.strip_suffix("/s").unwrap_or(t)) {
        None => Err(format!(
            "bad rate {s:?}: use bytes per second, e.g. 20MB or 512k"
        )),
        Some(0) => Err(format!("bad rate {s:?}: must be positive")),
        Some(n) => Ok(n),
    }
}

fn merge(global: &PolicyFile, colo: &PolicyFile, what: &str) -> Result<Policy> {
    let bad = |m: String| Error::Inventory(format!("{what}: {m}"));
    let pick = |a: &Option<String>, b: &Option<String>| b.clone().or_else(|| a.clone());
    let pause = parse_pause(pick(&global.pause, &colo.pause).as_deref()).map_err(bad)?;
    let ionice = parse_ionice(pick(&global.ionice, &colo.ionice).as_deref()).map_err(bad)?;
    let rate = |v: Option<String>| -> Result<Option<u64>> {
        v.map(|s| parse_rate(&s).map_err(bad)).transpose()
    };
    let max_delete = match colo.max_delete.as_ref().or(global.max_delete.as_ref()) {
        None => crate::deletes::DEFAULT,
        Some(Size::Count(n)) => crate::deletes::MaxDelete::Count(*n as u64),
        Some(Size::Text(t)) => t
            .parse()
            .map_err(|e: String| bad(format!("max_delete: {e}")))?,
    };
    let p = Policy {
        max_delete,
        canary: colo.canary.or(global.canary).unwrap_or(1),
        waves: colo
            .waves
            .clone()
            .or_else(|| global.waves.clone())
            .unwrap_or_else(|| vec![Size::Text("100%".into())]),
        parallel: colo.parallel.or(global.parallel).unwrap_or(8),
        failure_budget: colo
            .failure_budget
            .clone()
            .or_else(|| global.failure_budget.clone())
            .unwrap_or(Size::Count(0)),
        pause,
        health: colo.health.clone().or_else(|| global.health.clone()),
        bandwidth_per_host: rate(pick(&global.bandwidth_per_host, &colo.bandwidth_per_host))?,
        bandwidth_total: rate(pick(&global.bandwidth_total, &colo.bandwidth_total))?,
        nice: colo.nice.or(global.nice),
        ionice,
        require_restarted: colo
            .require_restarted
            .or(global.require_restarted)
            .unwrap_or(false),
        require_signed: colo
            .require_signed
            .clone()
            .or_else(|| global.require_signed.clone()),
        pre: pick(&global.pre, &colo.pre),
        post: pick(&global.post, &colo.post),
        hook_timeout: std::time::Duration::from_secs(
            colo.hook_timeout.or(global.hook_timeout).unwrap_or(300),
        ),
    };
    check(&p).map_err(bad)?;
    Ok(p)
}

/// The `pause` setting: how a rollout waits between colos (an operator's confirmation
/// unless set).
fn parse_pause(s: Option<&str>) -> std::result::Result<Pause, String> {
    Ok(match s {
        None | Some("confirm") => Pause::Confirm,
        Some("none") => Pause::None,
        Some(s) => Pause::Seconds(
            s.parse()
                .map_err(|_| format!("pause {s:?}: use none, confirm or seconds"))?,
        ),
    })
}

/// The `ionice` setting (`idle`, `best-effort:N`, `realtime:N`), so a push's disk work
/// can yield to a host's own.
fn parse_ionice(s: Option<&str>) -> std::result::Result<Option<IoNice>, String> {
    Ok(match s {
        None => None,
        Some("idle") => Some(IoNice::Idle),
        Some(s) => {
            let (class, level) = s
                .split_once(':')
                .ok_or_else(|| format!("ionice {s:?}: use idle, best-effort:N or realtime:N"))?;
            let level: u8 = level
                .parse()
                .ok()
                .filter(|l| *l <= 7)
                .ok_or_else(|| format!("ionice level {level:?}: 0 to 7"))?;
            match class {
                "best-effort" => Some(IoNice::BestEffort(level)),
                "realtime" => Some(IoNice::Realtime(level)),
                _ => return Err(format!("ionice class {class:?}")),
            }
        }
    })
}

/// Checks a merged policy's settings against each other and their ranges, so a bad
/// inventory fails when it is loaded rather than in the middle of a rollout.
fn check(p: &Policy) -> std::result::Result<(), String> {
    if p.parallel == 0 {
        return Err("parallel must be at least 1".into());
    }
    if p.waves.is_empty() {
        return Err("waves is empty".into());
    }
    // (Errors of a size name the setting and where it is.)
    let size = |field: &str, s: &Size| s.of(100).map_err(|e| format!("{field}: {e}"));
    for w in &p.waves {
        if size("waves", w)? == 0 {
            return Err(format!("a wave of {w:?} has no hosts"));
        }
    }
    size("failure_budget", &p.failure_budget)?;
    if p.health
        .as_ref()
        .is_some_and(|h| h.command.trim().is_empty())
    {
        return Err("the health command is empty".into());
    }
    if let Some(n) = p.nice {
        if !(-20..=19).contains(&n) {
            return Err(format!("nice {n}: -20 to 19"));
        }
    }
    for (key, cmd) in [("pre", &p.pre), ("post", &p.post)] {
        if cmd.as_ref().is_some_and(|c| c.trim().is_empty()) {
            return Err(format!("the {key} command is empty"));
        }
    }
    if p.hook_timeout.is_zero() {
        return Err("hook_timeout must be at least 1 second".into());
    }
    Ok(())
}

impl Inventory {
    /// Reads and checks the inventory at `path` (see [`Inventory::parse`]).
    pub fn load(path: &Path) -> Result<Inventory> {
        let text = imager::fsx::read_to_string(path)
            .map_err(imager::Error::into_io)
            .map_err(|e| Error::Inventory(format!("cannot read {}: {e}", path.display())))?;
        Inventory::parse(&text, path)
    }

    /// Checks the TOML `text` of the inventory at `path`: its keys, hosts, mirrors and
    /// policies. Errors name the file (with the line for a TOML error) and the colo.
    pub fn parse(text: &str, path: &Path) -> Result<Inventory> {
        let f: InventoryFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            Error::Inventory(format!("{}:{line}: {}", path.display(), e.message()))
        })?;
        if f.colo.is_empty() {
            return Err(Error::Inventory(format!("{}: no [[colo]]", path.display())));
        }
        let mut colos = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // Each host root once, however it is spelled: its first spelling and colo.
        let mut roots: std::collections::HashMap<String, (String, String)> = Default::default();
        for c in &f.colo {
            if c.name.trim().is_empty() {
                return Err(Error::Inventory(format!(
                    "{}: a [[colo]] has an empty name",
                    path.display()
                )));
            }
            let what = format!("{}: colo {}", path.display(), c.name);
            if !seen.insert(c.name.clone()) {
                return Err(Error::Inventory(format!("{what}: listed twice")));
            }
            if c.hosts.is_empty() {
                return Err(Error::Inventory(format!("{what}: lists no hosts")));
            }
            let dir = dir_of(path);
            let hosts = colo_hosts(
                &c.hosts, &c.connect, &f.connect, dir, &c.name, &what, &mut roots,
            )?;
            for m in &c.mirrors {
                crate::agent::fetch::check_mirror(m)
                    .map_err(|e| Error::Inventory(format!("{what}: {e}")))?;
            }
            let mut policy = merge(&f.policy, &c.policy, &what)?;
            policy.require_signed = policy.require_signed.map(|p| dir.join(p));
            colos.push(Colo {
                name: c.name.clone(),
                hosts,
                mirrors: c.mirrors.clone(),
                policy,
            });
        }
        if f.fleet.parallel_colos == Some(0) {
            return Err(Error::Inventory(format!(
                "{}: [fleet] parallel_colos must be at least 1",
                path.display()
            )));
        }
        if let Some(b) = &f.fleet.failure_budget {
            b.of(100).map_err(|e| {
                Error::Inventory(format!("{}: [fleet] failure_budget: {e}", path.display()))
            })?;
        }
        Ok(Inventory {
            path: path.to_path_buf(),
            colos,
            fleet: f.fleet,
            digest: blake3::hash(text.as_bytes()).to_hex().to_string(),
        })
    }

    /// The inventory's directory, which relative paths in it (`identity`,
    /// `require_signed`) start from and hooks run in.
    pub fn dir(&self) -> &Path {
        dir_of(&self.path)
    }

    /// The colos named (all when `names` is empty), in rollout order.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Colo>> {
        for n in names {
            if !self.colos.iter().any(|c| &c.name == n) {
                return Err(Error::Inventory(format!(
                    "{}: no colo named {n:?}",
                    self.path.display()
                )));
            }
        }
        Ok(self
            .colos
            .iter()
            .filter(|c| names.is_empty() || names.contains(&c.name))
            .collect())
    }
}

/// The directory of the file at `path` (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A colo's hosts split into the canary wave and the waves after it (none empty).
pub fn waves(colo: &Colo) -> Result<Vec<Vec<Host>>> {
    let n = colo.hosts.len();
    let mut out = Vec::new();
    let mut at = colo.policy.canary.min(n);
    if at > 0 {
        out.push(colo.hosts[..at].to_vec());
    }
    for w in &colo.policy.waves {
        if at >= n {
            break;
        }
        let size = w.of(n)?.max(1);
        let end = (at + size).min(n);
        out.push(colo.hosts[at..end].to_vec());
        at = end;
    }
    if at < n {
        out.push(colo.hosts[at..].to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
