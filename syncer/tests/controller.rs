//! The controller's side on the real binary: its delta cache (damaged entries are
//! dropped and recomputed, `syncer cache verify`), its reports and exit codes, and the
//! agent it installs on ssh hosts.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use std::path::{Path, PathBuf};

struct Fixture {
    _t: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
}

/// Two versions of a small tree: v2 changes two files (zstd deltas) and adds one (whole).
fn fixture(prefix: &str) -> Fixture {
    let t = scratch(prefix);
    let dir = t.path().to_path_buf();
    let store = dir.join("store");
    for v in [1u32, 2] {
        let d = dir.join(format!("v{v}"));
        sh(&format!(
            "set -e; mkdir -p '{d}/etc' '{d}/srv' '{d}/var/lib'
             python3 -c 'import random,sys; random.seed(1); sys.stdout.buffer.write(random.randbytes(300000))' > '{d}/srv/big'
             printf 'conf {v}\\n' > '{d}/etc/app.conf'
             if [ {v} = 2 ]; then printf 'changed' >> '{d}/srv/big'; printf 'new file\\n' > '{d}/etc/new.conf'; fi",
            d = d.display()
        ));
        import(&store, &d, &format!("v{v}"));
    }
    Fixture { _t: t, dir, store }
}

fn id(store: &Path, name: &str) -> imager::Hash {
    imager::store::Store::open(store, imager::store::Access::Read)
        .unwrap()
        .resolve(name)
        .unwrap()
}

fn new_host(f: &Fixture, name: &str) -> (PathBuf, String) {
    let h = f.dir.join(name);
    std::fs::create_dir(&h).unwrap();
    let hs = format!("local:{}", h.display());
    (h, hs)
}

/// The cache's entries, largest first.
fn entries(cache: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "zst"))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    v
}

#[test]
fn a_damaged_delta_cache_entry_is_dropped_recomputed_and_reported_by_cache_verify() {
    let f = fixture("ctl-cache-");
    let cache = f.store.join("syncer-cache");
    let (a, hs_a) = new_host(&f, "host-a");
    push(&f.store, "v1", &hs_a, &[]);
    let of_v1 = entries(&cache);
    push(&f.store, "v2", &hs_a, &[]);
    assert_host_is(&a, &f.store, &id(&f.store, "v2"));
    // The entries a host going from v1 to v2 needs.
    let before: Vec<PathBuf> = entries(&cache)
        .into_iter()
        .filter(|p| !of_v1.contains(p))
        .collect();
    let delta = before
        .iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().contains('-'))
        .expect("a delta entry")
        .clone();
    let whole = before
        .iter()
        .find(|p| !p.file_name().unwrap().to_string_lossy().contains('-'))
        .expect("a whole entry")
        .clone();
    // One entry emptied (a torn write), one with a byte flipped in its middle.
    std::fs::write(&delta, b"").unwrap();
    let mut w = std::fs::read(&whole).unwrap();
    let mid = w.len() / 2;
    w[mid] ^= 0x40;
    std::fs::write(&whole, &w).unwrap();

    // The check names both and fails.
    let out = run(&f.store, &["cache", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let bad: Vec<String> = v["bad"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["file"].as_str().unwrap().to_string())
        .collect();
    let mut want = vec![delta.display().to_string(), whole.display().to_string()];
    want.sort();
    let mut got = bad.clone();
    got.sort();
    assert_eq!(got, want, "{v:#}");
    assert!(v["good"].as_u64().unwrap() > 0, "{v:#}");
    let text = run(&f.store, &["cache", "verify"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&delta.display().to_string()), "{text}");

    // A second host at v1 needs exactly those entries: the push still succeeds, warns
    // naming the files, and rewrites them good.
    let (b, hs_b) = new_host(&f, "host-b");
    push(&f.store, "v1", &hs_b, &[]);
    let out = run(&f.store, &["push", "v2", &hs_b, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{v:#}\n{stderr}");
    assert_host_is(&b, &f.store, &id(&f.store, "v2"));
    for p in [&delta, &whole] {
        assert!(
            stderr.contains(&p.display().to_string()),
            "no warning names {}: {stderr}",
            p.display()
        );
    }
    assert_eq!(v["cache_dropped"].as_array().unwrap().len(), 2, "{v:#}");
    assert!(std::fs::metadata(&delta).unwrap().len() > 0);
    let out = run(&f.store, &["cache", "verify", "--json"]);
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{v:#}");
    assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{v:#}");

    // --repair removes a bad entry and then exits 0.
    std::fs::write(&whole, b"garbage").unwrap();
    let out = run(&f.store, &["cache", "verify", "--repair", "--json"]);
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{v:#}");
    assert_eq!(v["bad"][0]["removed"], true, "{v:#}");
    assert!(!whole.exists());
}
