//! `syncer push IMAGE HOST...`: makes hosts equal to an image, many at once.

use super::progress::{observer, HostBars, SlowLog};
use super::{hosts, Ctx, ExitCode, HostArgs};
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use syncer::delta::Cache;
use syncer::progress::{NoObserver, Observer};
use syncer::push::{self, Image};
use syncer::transport::HostSpec;

#[derive(Args)]
#[command(after_help = super::examples::with_ownership(super::examples::PUSH))]
pub struct PushArgs {
    /// The image: a name, name~N (N images before) or an ID (or a unique prefix)
    image: String,
    /// Hosts: ssh://[user@]host[:port][/root] or local:/path
    #[arg(required = true)]
    hosts: Vec<String>,
    #[command(flatten)]
    conn: HostArgs,
    /// Show what would be sent and deleted, path by path; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Where computed deltas are kept between runs [default: STORE/syncer-cache if it
    /// can be made, else none]
    #[arg(long)]
    cache: Option<PathBuf>,
    /// zstd level for whole files and deltas, 1 to 22; from 4 up, gzip files,
    /// executables and LLVM bitcode also get gzip-aware, Zucchini and bitcode-aware
    /// patches (fewer bytes, more of the host's CPU) [default: 1 when every host is `local:` and no --mirror is given
    /// (bytes on a local pipe cost nothing), else 19, the level of `publish` and rollouts]
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=22))]
    level: Option<i32>,
    /// Push only if the image's signatures satisfy this trust policy (a host's
    /// trust.toml, as `imager verify --policy` takes it); checked before any host is
    /// contacted
    // `--require-signed` before: a hidden alias, so that both tools spell it alike.
    #[arg(long, value_name = "FILE", alias = "require-signed")]
    policy: Option<PathBuf>,
    /// An HTTP mirror of a published store (`syncer publish`), tried in the order given
    /// (a colo's cache, then the origin); hosts fetch what it has, the rest comes over ssh
    #[arg(long, value_name = "URL")]
    mirror: Vec<String>,
    /// Stop a host whose plan deletes more than this, before anything is written: a
    /// count, N% of the host's entries, or unlimited
    #[arg(long, value_name = "N|N%|unlimited", default_value_t = syncer::deletes::DEFAULT)]
    max_delete: syncer::deletes::MaxDelete,
    /// Run the image's triggers on a first install too (a root that holds none of the
    /// image's paths gets its files as built, and by default runs no trigger)
    #[arg(long)]
    install_triggers: bool,
    /// Send a local: host's new files through its agent's pipe, as a remote host gets
    /// them, instead of letting the agent copy them from the store (to measure what a
    /// remote host would be sent)
    #[arg(long)]
    no_store_copies: bool,
}

pub fn run(a: PushArgs, ctx: &Ctx) -> Result<ExitCode> {
    let specs = hosts(&a.hosts)?;
    let store = ctx.open_store()?;
    let id = store.resolve(&a.image)?;
    let img = Image::load(&store, id)?;
    let mut opts = a.conn.push_options(a.dry_run)?;
    for m in &a.mirror {
        syncer::agent::fetch::check_mirror(m).map_err(super::UsageError)?;
    }
    opts.mirrors = a.mirror.clone();
    opts.max_delete = a.max_delete;
    opts.install_triggers = a.install_triggers;
    opts.no_store_copies = a.no_store_copies;
    if let Some(path) = &a.policy {
        let policy = imager::sign::TrustPolicy::load(path)?;
        policy
            .check(&id, &img.signed(), imager::sign::now())
            .map_err(|e| anyhow::anyhow!("not pushed: {e}"))?;
        opts.require_signed = Some(std::sync::Arc::new(policy));
    }
    let level = a.level.unwrap_or(default_level(&specs, &a.mirror));
    let cache = Cache::new(cache_dir(a.cache, &ctx.store)?, level);
    let bars = HostBars::new();
    let slow = SlowLog::new();
    let plain: &dyn Observer = if ctx.quiet { &NoObserver } else { &slow };
    let obs = observer(&bars, a.conn.json || ctx.quiet, plain);
    let reports = slow.while_running(|| {
        push::for_hosts(&specs, a.conn.jobs, |h| {
            push::push_host(&store, &img, &cache, h, &opts, obs)
        })
    });
    bars.clear();
    let dropped = cache.dropped();
    for d in &dropped {
        eprintln!("syncer: warning: {d}");
    }
    let json = || {
        serde_json::json!({
            "image": id.to_hex(),
            "level": level,
            "content_aware": syncer::plan::content_aware(level),
            "hosts": reports,
            "cache_dropped": dropped,
        })
    };
    a.conn.print(json, || {
        reports.iter().map(syncer::render::push_report).collect()
    })?;
    Ok(ExitCode::ok_if(reports.iter().all(|r| r.ok)))
}

/// The zstd level when none is given: 1 when every host is `local:` (its bytes cross a
/// pipe on this machine: a first install of a 323 MB root took 119 s at level 19, 114 s
/// of it compressing, and 6 s at level 1), else 19; with mirrors always 19, the level
/// `publish` names its files with.
fn default_level(specs: &[HostSpec], mirrors: &[String]) -> i32 {
    let local = specs.iter().all(|s| matches!(s, HostSpec::Local(_)));
    if local && mirrors.is_empty() {
        1
    } else {
        19
    }
}

/// The delta cache: `--cache` (which must be usable), else the store's own if it can be
/// made (a read-only store just means no cache).
pub(crate) fn cache_dir(given: Option<PathBuf>, store: &Path) -> Result<Option<PathBuf>> {
    Ok(match given {
        Some(d) => {
            imager::fsx::create_dir_all(&d)
                .map_err(imager::Error::into_io)
                .with_context(|| format!("cannot create the cache directory {}", d.display()))?;
            Some(d)
        }
        None => {
            let d = store.join("syncer-cache");
            imager::fsx::create_dir_all(&d).ok().map(|_| d)
        }
    })
}
