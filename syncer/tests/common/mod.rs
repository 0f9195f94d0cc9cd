//! Helpers for the syncer integration tests: a store filled through imager's library,
//! the real `syncer` binary, host roots compared with images entry by entry.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use imager::store::{Access, Store};
use imager::tree::scan::Excludes;
use imager::{Hash, Tree};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

pub fn syncer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_syncer"))
}

pub fn local_state_globs() -> Vec<String> {
    imager::tree::scan::list_lines(imager::contract::DEFAULT_LOCAL_STATE)
}

/// Imports `dir` into the store at `store` under `name`, leaving out local state.
pub fn import(store: &Path, dir: &Path, name: &str) -> Hash {
    import_leaving_out(store, dir, name, &local_state_globs())
}

/// Imports `dir` leaving out what `globs` match (none: local-state paths too, as a build
/// keeps /var/log/nginx and /etc/hosts).
pub fn import_leaving_out(store: &Path, dir: &Path, name: &str, globs: &[String]) -> Hash {
    let s = Store::open(store, Access::Write).unwrap();
    let opts = imager::ops::ImportOptions {
        name: Some(name.to_string()),
        normalize: None,
        excludes: Excludes::new(globs).unwrap(),
        extra: Vec::new(),
    };
    let r = imager::ops::import(
        &s,
        &imager::ops::ImportSource::Dir(dir.to_path_buf()),
        &opts,
        &imager::progress::Quiet,
    )
    .unwrap();
    Hash::from_hex(&r.id).unwrap()
}

pub fn image(store: &Path, id: &Hash) -> Tree {
    Store::open(store, Access::Read)
        .unwrap()
        .read_image(id)
        .unwrap()
}

/// The host's tree as an image would see it: local state and the syncer's own paths
/// left out.
pub fn host_tree(root: &Path) -> Tree {
    host_tree_leaving_out(root, local_state_globs())
}

/// The host's tree without the syncer's own paths and what `globs` match.
pub fn host_tree_leaving_out(root: &Path, mut globs: Vec<String>) -> Tree {
    globs.push("/.syncer-staging".into());
    globs.push("/var/lib/syncer".into());
    let pending = imager::tree::scan::scan(root, &Excludes::new(&globs).unwrap()).unwrap();
    imager::ingest::ingest(
        pending,
        None,
        &imager::ingest::HashOnly,
        None,
        &imager::progress::Quiet,
    )
    .unwrap()
    .tree
}

/// Fails with the differing manifest lines unless `root` is exactly the image.
pub fn assert_host_is(root: &Path, store: &Path, id: &Hash) {
    assert_tree_is(host_tree(root), root, store, id);
}

/// Fails unless `root` is exactly the image, its local state included (a first install).
pub fn assert_host_is_whole(root: &Path, store: &Path, id: &Hash) {
    assert_tree_is(host_tree_leaving_out(root, Vec::new()), root, store, id);
}

fn assert_tree_is(got: Tree, root: &Path, store: &Path, id: &Hash) {
    let want = image(store, id);
    let d = imager::tree::text::differences(&want, &got);
    assert!(
        d.is_empty(),
        "{} differs from image {id} ({} lines):\n{}",
        root.display(),
        d.len(),
        d.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Runs syncer with the store; returns the output whatever happened.
pub fn run(store: &Path, args: &[&str]) -> Output {
    syncer()
        .args(args)
        .env("IMAGER_STORE", store)
        .output()
        .unwrap()
}

pub fn ok(store: &Path, args: &[&str]) -> String {
    let out = run(store, args);
    assert!(
        out.status.success(),
        "syncer {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

/// `push --json` on one host; returns that host's report.
pub fn push(store: &Path, image: &str, host: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["push", image, host, "--json"];
    args.extend_from_slice(extra);
    let out = run(store, &args);
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let r = v["hosts"][0].clone();
    assert!(
        out.status.success() && r["ok"] == true,
        "push {image} to {host} failed:\n{r:#}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    r
}

/// A message as a frame on the wire (what a controller writes).
pub fn frame(m: &syncer::protocol::Msg) -> Vec<u8> {
    let body = m.encode().unwrap();
    let mut v = (body.len() as u32).to_le_bytes().to_vec();
    v.extend(body);
    v
}

/// A whole session as a controller writes it for image `id` (its manifest `text`):
/// `Hello`, `Target`, `Stage` of `files` files, the `content` frames, `Commit`.
pub fn session(id: Hash, text: &str, files: u64, content: Vec<Vec<u8>>) -> Vec<u8> {
    use syncer::protocol::*;
    [
        frame(&Msg::Hello(Hello {
            version: PROTOCOL_VERSION,
        })),
        frame(&Msg::Target(Target {
            image: id,
            manifest: ManifestData::Zstd(zstd::bulk::compress(text.as_bytes(), 3).unwrap()),
            local_state: None,
            triggers: Vec::new(),
            verify: false,
            dry_run: false,
            previous: Previous::Keep,
            signatures: Vec::new(),
            owned: None,
            install_triggers: false,
        })),
        frame(&Msg::Stage(Stage {
            files,
            bytes: 1 << 20,
        })),
    ]
    .into_iter()
    .chain(content)
    .chain([frame(&Msg::Commit)])
    .collect::<Vec<_>>()
    .concat()
}

/// Raw patch `raw` of `file` (from its version on `root` to image `v2` of `store`),
/// damaged three ways and sent to an agent on `root` as a `Put` (`encoding`,
/// zstd-compressed as a patch sent alone): its last byte flipped (it applies, to the
/// wrong content), the 8-byte length at `len_at` set to a terabyte ("over the"), and cut
/// in half (`what`, the kind's name in the agent's message). Each is refused, the message
/// names the file, and the host's file stays as it was.
pub fn assert_patches_refused(
    root: &Path,
    (store, v2): (&Path, Hash),
    (file, encoding): (&str, syncer::encoding::Encoding),
    raw: &[u8],
    len_at: usize,
    what: &str,
) {
    use syncer::protocol::*;
    let text = Store::open(store, Access::Read)
        .unwrap()
        .image_text(&v2)
        .unwrap();
    let name = file.rsplit('/').next().unwrap();
    let mut flipped = raw.to_vec();
    *flipped.last_mut().unwrap() ^= 0x20;
    let mut huge = raw.to_vec();
    huge[len_at..len_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let cases = [
        ("a flipped byte", flipped, name),
        ("a terabyte", huge, "over the"),
        ("a truncated patch", raw[..raw.len() / 2].to_vec(), what),
    ];
    let old = std::fs::read(root.join(file)).unwrap();
    for (case, patch, want) in cases {
        let z = zstd::bulk::compress(&patch, 3).unwrap();
        let put = Msg::Put(Put {
            path: format!("/{file}").into_bytes(),
            encoding: encoding.clone(),
            len: z.len() as u64,
        });
        let input = session(
            v2,
            &text,
            1,
            vec![frame(&put), frame(&Msg::Data(Data { bytes: z }))],
        );
        let (ok, _, stderr) = agent_with(root, &input);
        assert!(!ok, "{case}: the agent accepted it");
        assert!(
            stderr.contains(want),
            "{case}: stderr lacks {want:?}: {stderr}"
        );
        assert!(
            stderr.contains(name),
            "{case}: {name} is not named: {stderr}"
        );
        assert_eq!(
            std::fs::read(root.join(file)).unwrap(),
            old,
            "{case}: the host's file changed"
        );
    }
}

/// Runs an agent on `root` with `input` as its whole stdin: (success, stdout, stderr).
pub fn agent_with(root: &Path, input: &[u8]) -> (bool, Vec<u8>, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut c = syncer()
        .args(["serve", "--root"])
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = c.stdin.take().unwrap().write_all(input);
    let out = c.wait_with_output().unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cp -a`, which keeps owners, modes, xattrs, hard links, devices.
pub fn copy_tree(from: &Path, to: &Path) {
    sh(&format!("cp -a '{}' '{}'", from.display(), to.display()));
}

/// blake3 of a file, for checking that something outside a host root was not touched.
pub fn file_hash(p: &Path) -> Hash {
    Hash::of(&std::fs::read(p).unwrap())
}

/// A test's scratch directory (removed at the end).
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// The benchmark corpus (two Debian roots a security update apart), built once into the
/// target directory with `syncer/bench/corpus.sh` (mmdebstrap; needs the network), or
/// taken from `SYNCER_TEST_CORPUS`.
pub fn corpus() -> PathBuf {
    if let Some(d) = std::env::var_os("SYNCER_TEST_CORPUS") {
        return PathBuf::from(d);
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corpus");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/corpus.sh");
    // flock: test binaries running at once build it once.
    sh(&format!(
        "mkdir -p '{d}' && flock '{d}.lock' bash '{s}' '{d}' >&2",
        d = dir.display(),
        s = script.display()
    ));
    dir
}

/// An sshd on 127.0.0.1 for one test, with its own keys; killed at the end.
pub struct Sshd {
    child: Child,
    pub port: u16,
    key: PathBuf,
}

impl Sshd {
    pub fn start(dir: &Path) -> Sshd {
        let d = dir.join(format!(
            "sshd-{}",
            std::process::id() as u64 * 1000
                + SSHD_N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&d).unwrap();
        sh(&format!(
            "cd '{d}' && ssh-keygen -q -t ed25519 -N '' -f host_key && \
             (flock '{k}.lock' sh -c \"test -e '{k}' || ssh-keygen -q -t ed25519 -N '' -f '{k}'\") && \
             cp '{k}.pub' authorized_keys && mkdir -p /run/sshd",
            d = d.display(),
            k = dir.join("ssh-client-id").display()
        ));
        let port = free_port();
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin yes\nStrictModes no\n\
                 UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel INFO\n",
                d = d.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_line(&mut child, "Server listening", &d.join("sshd.log"), "sshd");
        Sshd {
            child,
            port,
            key: dir.join("ssh-client-id"),
        }
    }

    pub fn rsh(&self) -> String {
        format!(
            "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            self.key.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static SSHD_N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A port on 127.0.0.1 free now, for a server whose configuration names its port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads a server's stderr (piped) until a line says `ready`, what it logs once it
/// listens, however long a loaded machine takes; then copies the rest to `log` in the
/// background, so that its pipe never fills. Panics with what it said if it ends first.
pub fn wait_for_line(child: &mut Child, ready: &str, log: &Path, what: &str) {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(ready) => break,
            Some(Ok(l)) => said += &(l + "\n"),
            _ => panic!("{what} ended before listening:\n{said}"),
        }
    }
    let mut out = std::fs::File::create(log).unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        for l in lines.map_while(Result::ok) {
            let _ = writeln!(out, "{l}");
        }
    });
}

/// A scratch directory with a store holding images `v1` and `v2`, each a [`mini_root`]
/// with `payload` bytes: what the fleet tests start from. Returns the directory's
/// guard, its path and the store's.
pub fn two_image_store(prefix: &str, payload: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = scratch(prefix);
    let dir = t.path().to_path_buf();
    let store = dir.join("store");
    for v in [1, 2] {
        mini_root(&dir.join(format!("v{v}")), v, payload);
        import(&store, &dir.join(format!("v{v}")), &format!("v{v}"));
    }
    (t, dir, store)
}

/// A tiny root a health check or trigger can run in: dash and the libraries it needs,
/// an app config and a payload of `payload` pseudo-random bytes that depend on `v`.
pub fn mini_root(dir: &Path, v: u32, payload: usize) {
    let d = dir.display();
    sh(&format!(
        "set -e; mkdir -p '{d}/bin' '{d}/etc' '{d}/root' '{d}/var/log' '{d}/var/lib' '{d}/srv'
         cp /bin/dash '{d}/bin/sh'
         for lib in $(ldd /bin/dash | grep -o '/[^ ]*'); do mkdir -p \"{d}$(dirname $lib)\"; cp -L $lib \"{d}$lib\"; done
         printf 'version {v}\\n' > '{d}/etc/app.conf'
         python3 -c 'import random,sys; random.seed({v}); sys.stdout.buffer.write(random.randbytes({payload}))' > '{d}/srv/payload'"
    ));
}

/// A mount for one test (a tmpfs, or a bind mount), unmounted however the test ends.
pub struct Mount(PathBuf);

impl Mount {
    pub fn tmpfs(at: &Path, opts: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        sh(&format!(
            "mount -t tmpfs -o {opts} tmpfs '{}'",
            at.display()
        ));
        Mount(at.to_path_buf())
    }

    /// `from` (a directory or a file) mounted again at `at`, which must exist.
    pub fn bind(from: &Path, at: &Path) -> Mount {
        sh(&format!(
            "mount --bind '{}' '{}'",
            from.display(),
            at.display()
        ));
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The image `name` (or ID) resolves to in the store.
pub fn id(store: &Path, name: &str) -> Hash {
    Store::open(store, Access::Read)
        .unwrap()
        .resolve(name)
        .unwrap()
}

/// The pid of an agent serving `root` that has stopped itself at its
/// `SYNCER_TEST_STOP_AT` point (state `T`), if one has.
pub fn stopped_agent(root: &Path) -> Option<i32> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("serve --root {}", root.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .rsplit_once(") ")
                .is_some_and(|(_, r)| r.starts_with('T'))
        })
}

/// An nginx on 127.0.0.1 for one test, running one of the shipped configurations
/// (`syncer/nginx/*.conf`) with its paths and ports pointed at the test's; stopped at
/// the end (SIGTERM to the master, which takes its workers with it).
pub struct Nginx {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Nginx {
    /// The origin: serves `root` (a published store).
    pub fn origin(dir: &Path, root: &Path) -> Nginx {
        Nginx::start(
            dir,
            "origin.conf",
            &[("/srv/syncer-pub", &root.display().to_string())],
        )
    }

    /// A colo cache in front of the origin listening on `upstream`.
    pub fn cache(dir: &Path, upstream: u16) -> Nginx {
        let cache = dir.join("cache");
        Nginx::start(
            dir,
            "colo-cache.conf",
            &[
                ("/var/cache/nginx/syncer", &cache.display().to_string()),
                ("origin.example.net:80", &format!("127.0.0.1:{upstream}")),
            ],
        )
    }

    fn start(dir: &Path, shipped: &str, subst: &[(&str, &str)]) -> Nginx {
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let port = free_port();
        let mut site = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("nginx")
                .join(shipped),
        )
        .unwrap();
        for (from, to) in subst {
            assert!(site.contains(from), "{shipped} has no {from}");
            site = site.replace(from, to);
        }
        let listen = if site.contains("listen 8080;") {
            "listen 8080;"
        } else {
            "listen 80;"
        };
        site = site.replace(listen, &format!("listen 127.0.0.1:{port};"));
        std::fs::write(dir.join("site.conf"), site).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process on;\nworker_processes 2;\npid {d}/nginx.pid;\nuser root;\n\
                 error_log stderr notice;\nevents {{ worker_connections 256; }}\n\
                 http {{\n client_body_temp_path {d}/tmp/body;\n proxy_temp_path {d}/tmp/proxy;\n\
                 fastcgi_temp_path {d}/tmp/fastcgi;\n uwsgi_temp_path {d}/tmp/uwsgi;\n scgi_temp_path {d}/tmp/scgi;\n\
                 log_format t '$request_method $uri $http_range $status $body_bytes_sent $upstream_cache_status';\n\
                 access_log {d}/access.log t;\n include {d}/site.conf;\n}}\n"
            ),
        )
        .unwrap();
        let mut child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-e", "stderr"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nginx (apt-get install nginx-light)");
        // Its listening sockets are open before it starts its workers.
        wait_for_line(
            &mut child,
            "start worker processes",
            &dir.join("error.log"),
            "nginx",
        );
        Nginx {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The master's pid (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Its access log: `METHOD URI RANGE STATUS BYTES CACHE-STATUS` per request.
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Stops it (its port refuses connections once this returns).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // (It may be gone already: a test can stop it from elsewhere.)
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
