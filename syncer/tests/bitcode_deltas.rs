//! Bitcode-aware deltas on real LLVM bitcode: modules `llvm-as` writes, and PostgreSQL's
//! JIT bitcode from the two versions of Debian's `postgresql-15` in this machine's apt
//! sources (a point release and its security update, as a fleet meets them). Every file
//! rebuilds bit for bit from its tokens; pushed from one version to the next onto a
//! `local:` host, every file ends exact, the large changes travel as their token change;
//! a damaged or oversized patch is refused and the host keeps its file.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use syncer::encoding::bitcode::{self, stream};

/// An LLVM module of `n` functions and a table of `10 n` numbers as text; `variant` 1
/// changes a constant in every fifth function, adds a function in the middle and makes
/// seven of the table's numbers larger (a rebuilt module, as a fix makes one). A larger
/// number takes more bits: what follows it in its block moves by bits, not bytes.
fn module(n: usize, variant: u32) -> String {
    let mut table: Vec<u64> = (0..n as u64 * 10)
        .map(|i| i * 2_654_435_761 % 1_000_003)
        .collect();
    if variant == 1 {
        let step = table.len() / 7;
        table.iter_mut().step_by(step).for_each(|v| *v += 1 << 30);
    }
    let table: Vec<String> = table.iter().map(|v| format!("i32 {v}")).collect();
    let mut s = format!(
        "@greeting = private constant [14 x i8] c\"hello, world\\0A\\00\"\n\
         @table = constant [{} x i32] [{}]\n\
         declare i32 @printf(i8*, ...)\n",
        table.len(),
        table.join(", ")
    );
    for i in 0..n {
        let k = i * 7 + if variant == 1 && i % 5 == 0 { 3 } else { 0 };
        s += &format!(
            "define i32 @f{i}(i32 %a, i32 %b) {{\nentry:\n  %c = add i32 %a, {k}\n  \
             %d = mul i32 %c, %b\n  %e = icmp sgt i32 %d, {i}\n  br i1 %e, label %yes, label %no\n\
             yes:\n  %p = call i32 (i8*, ...) @printf(i8* getelementptr ([14 x i8], [14 x i8]* \
             @greeting, i32 0, i32 0))\n  ret i32 %d\nno:\n  ret i32 %c\n}}\n"
        );
        if variant == 1 && i == n / 2 {
            s += "define i32 @added(i32 %a) {\n  %r = sub i32 %a, 1\n  ret i32 %r\n}\n";
        }
    }
    s
}

/// `llvm-as` of `text` into `out`.
fn assemble(text: &str, out: &Path) {
    use std::io::Write;
    let mut c = Command::new("llvm-as")
        .arg("-o")
        .arg(out)
        .stdin(Stdio::piped())
        .spawn()
        .expect("llvm-as (Debian's llvm package) runs");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "llvm-as failed");
}

/// PostgreSQL's bitcode directories of the two newest versions of `postgresql-15` in the
/// apt sources (old, new), each downloaded and unpacked once into the target directory
/// (kept there for later runs, as the corpus is); `None` when the sources hold one
/// version only (then there is no pair to diff).
fn postgres() -> Option<&'static (PathBuf, PathBuf)> {
    static PAIR: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    PAIR.get_or_init(|| {
        let madison = sh("apt-cache madison postgresql-15 | awk -F'|' '{print $2}'");
        let mut versions: Vec<&str> = madison.lines().map(str::trim).collect();
        versions.dedup();
        if versions.len() < 2 {
            eprintln!("one version of postgresql-15 in the apt sources: no real pair");
            return None;
        }
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("postgresql-15");
        std::fs::create_dir_all(&base).unwrap();
        // madison lists the newest first.
        let mut roots = versions[..2].iter().rev().map(|v| {
            let d = base.join(v);
            if !d.exists() {
                // Unpacked aside, then renamed: a run stopped half-way leaves no half.
                let t = scratch("postgresql-15-");
                sh(&format!(
                    "cd '{0}' && apt-get download -q postgresql-15={v} >/dev/null && \
                     dpkg-deb -x postgresql-15_*.deb '{0}/root'",
                    t.path().display()
                ));
                std::fs::rename(t.path().join("root"), &d).unwrap();
            }
            d.join("usr/lib/postgresql/15/lib/bitcode")
        });
        Some((roots.next().unwrap(), roots.next().unwrap()))
    })
    .as_ref()
}

/// Every `.bc` file under `root`, relative paths, sorted.
fn bitcode_files(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file() && e.path().extension() == Some("bc".as_ref()))
        .map(|e| e.path().strip_prefix(root).unwrap().to_path_buf())
        .collect();
    v.sort();
    v
}

/// The files of both versions that differ, as (relative path, old bytes, new bytes),
/// largest first.
fn changed(old: &Path, new: &Path) -> Vec<(PathBuf, Vec<u8>, Vec<u8>)> {
    let mut v: Vec<_> = bitcode_files(new)
        .into_iter()
        .filter_map(|p| {
            let (a, b) = (
                std::fs::read(old.join(&p)).ok()?,
                std::fs::read(new.join(&p)).unwrap(),
            );
            (a != b).then_some((p, a, b))
        })
        .collect();
    v.sort_by_key(|(_, _, b)| std::cmp::Reverse(b.len()));
    v
}

#[test]
fn every_postgresql_bitcode_file_rebuilds_from_its_tokens_and_its_change_from_a_patch() {
    let Some((old, new)) = postgres() else {
        return;
    };
    // Both versions, every file: its tokens write back to it bit for bit.
    let mut files = 0;
    for root in [old, new] {
        for p in bitcode_files(root) {
            let b = std::fs::read(root.join(&p)).unwrap();
            let t = stream::tokens(&b, bitcode::max_tokens(b.len() as u64))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(t.len() < b.len() * 2, "{}: {} tokens", p.display(), t.len());
            assert!(
                stream::bits(&t, b.len() as u64).unwrap() == b,
                "{}",
                p.display()
            );
            files += 1;
        }
    }
    assert!(
        files > 1000,
        "{files} bitcode files in PostgreSQL's package"
    );
    // Every changed file's patch makes it (the largest twenty: those the push sends
    // so), and is smaller than its bsdiff patch.
    let changed = changed(old, new);
    assert!(changed.len() > 100, "{} changed files", changed.len());
    let (mut aware, mut plain) = (0, 0);
    for (p, a, b) in &changed[..20] {
        let raw = bitcode::diff(a, b).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(bitcode::patched(a, &raw, b.len() as u64).unwrap() == *b);
        aware += zstd::bulk::compress(&raw, 3).unwrap().len();
        let bs = syncer::encoding::bsdiff::diff(a, b).unwrap();
        plain += zstd::bulk::compress(&bs, 3).unwrap().len();
    }
    assert!(
        aware * 4 < plain * 3,
        "bitcode-aware {aware} bytes, bsdiff {plain}"
    );
}

/// `v1` and `v2` trees: three modules `llvm-as` wrote (a large one whose change matters,
/// a small one, one that stays), a `.bc` file that is no bitcode, and PostgreSQL's ten
/// largest changed files when the apt sources hold two versions.
fn trees(dir: &Path) -> usize {
    let d = |v: u32| dir.join(format!("v{v}/usr/lib/x"));
    for v in [0, 1] {
        std::fs::create_dir_all(d(v + 1)).unwrap();
        // Where the agent keeps its record, in the image as on any root.
        std::fs::create_dir_all(dir.join(format!("v{}/var/lib", v + 1))).unwrap();
        assemble(&module(600, v), &d(v + 1).join("large.bc"));
        assemble(&module(3, v), &d(v + 1).join("small.bc"));
        assemble(&module(50, 0), &d(v + 1).join("same.bc"));
        std::fs::write(
            d(v + 1).join("text.bc"),
            format!("not bitcode {v}\n").repeat(5000),
        )
        .unwrap();
    }
    let Some((old, new)) = postgres() else {
        return 0;
    };
    let real = changed(old, new);
    for (i, (_, a, b)) in real.iter().take(10).enumerate() {
        std::fs::write(d(1).join(format!("pg{i}.bc")), a).unwrap();
        std::fs::write(d(2).join(format!("pg{i}.bc")), b).unwrap();
    }
    real.len().min(10)
}

#[test]
fn bitcode_ends_exact_and_its_large_changes_travel_as_their_token_change() {
    let t = scratch("bitcode-deltas-");
    let real = trees(t.path());
    let store = t.path().join("store");
    let v1 = import(&store, &t.path().join("v1"), "v1");
    let v2 = import(&store, &t.path().join("v2"), "v2");
    let h = t.path().join("host");
    std::fs::create_dir_all(&h).unwrap();
    let hs = format!("local:{}", h.display());
    push(&store, "v1", &hs, &[]);
    assert_host_is(&h, &store, &v1);

    // At a level that is content-aware, the plan path by path, then the push.
    let dry = push(&store, "v2", &hs, &["--dry-run", "--level", "9"]);
    let r = push(&store, "v2", &hs, &["--level", "9"]);
    assert_host_is(&h, &store, &v2);
    let via = |name: &str| -> serde_json::Value {
        let p = format!("/usr/lib/x/{name}");
        dry["paths"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == p.as_str())
            .unwrap_or_else(|| panic!("{p} not in the report:\n{dry:#}"))
            .clone()
    };
    let large = via("large.bc");
    assert_eq!(large["via"], "bitcode delta", "{large:#}");
    let c = &large["candidates"];
    let (a, b) = (
        c["bitcode"].as_u64().unwrap(),
        c["bsdiff"].as_u64().unwrap(),
    );
    assert!(a * 2 < b, "bitcode-aware {a} bytes, bsdiff {b}: {large:#}");
    // A small change is not worth the candidate; a file named .bc that is no bitcode
    // has none.
    assert!(
        via("small.bc")["candidates"]["bitcode"].is_null(),
        "{dry:#}"
    );
    assert!(via("text.bc")["candidates"]["bitcode"].is_null(), "{dry:#}");
    let won = (0..real)
        .filter(|i| via(&format!("pg{i}.bc"))["via"] == "bitcode delta")
        .count();
    assert!(
        won * 2 >= real,
        "{won} of {real} PostgreSQL files as bitcode deltas"
    );
    assert!(
        r["sent"]["bitcode_delta"]["files"].as_u64().unwrap() > won as u64,
        "{r:#}"
    );

    // The delta cache keeps them checksummed and `cache verify` decodes each.
    let cache = store.join("syncer-cache");
    let n = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .to_string_lossy()
                .contains(".bitcode1.L")
        })
        .count();
    assert!(n > won, "{n} bitcode patches cached");
    let out = run(&store, &["cache", "verify", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // And back, the same way.
    let back = push(&store, "v1", &hs, &["--level", "9"]);
    assert_host_is(&h, &store, &v1);
    assert!(
        back["sent"]["bitcode_delta"]["files"].as_u64().unwrap() > 0,
        "{back:#}"
    );
}

/// A damaged bitcode-aware patch, or one that declares a terabyte of tokens, sent to a
/// real agent: refused with a message that names the file, and the host keeps its file.
#[test]
fn a_damaged_or_oversized_bitcode_patch_is_refused_and_the_host_keeps_its_file() {
    use syncer::encoding::Encoding;
    let t = scratch("bitcode-damage-");
    trees(t.path());
    let root = t.path().join("v1");
    let store = t.path().join("store");
    let id = import(&store, &t.path().join("v2"), "v2");
    let file = "usr/lib/x/large.bc";
    let read = |d: &Path| std::fs::read(d.join(file)).unwrap();
    let (old, new) = (read(&root), read(&t.path().join("v2")));
    let raw = bitcode::diff(&old, &new).unwrap();
    // The new tokens' length is the patch's first 8 bytes.
    let put = (file, Encoding::Bitcode);
    assert_patches_refused(&root, (&store, id), put, &raw, 0, "bitcode delta");
    // And spread over the patch, each byte flipped in turn: the patch fails, or what it
    // makes is not the new file (which the agent's hash check then refuses).
    for at in (0..raw.len()).step_by(raw.len() / 60 + 1) {
        let mut bad = raw.clone();
        bad[at] ^= 0x21;
        if let Ok(out) = bitcode::patched(&old, &bad, new.len() as u64) {
            assert_ne!(out, new, "byte {at} flipped still made the file");
        }
    }
}
