//! Reaching a host's agent: `local:/path` starts `syncer serve --root /path` as a child
//! process; `ssh://[user@]host[:port][/root]` runs it through the system's OpenSSH client
//! (the command is configurable, like rsync's `-e`). Either way the session is the
//! child's stdin/stdout; its stderr is kept for error messages.
//!
//! With `install_agent`, a missing or different agent binary on an ssh host is replaced
//! by the `syncer-agent` executable beside this one (the agent crate alone), without its
//! debug sections (copied over the same ssh command), before the session starts.

use crate::error::{Error, Result};
use crate::protocol::{Conn, Hello, Msg, Welcome, PROTOCOL_VERSION};
use crate::ratelimit::{Bucket, Limited};
use imager::escape::shell_quote as quote;
use imager::Hash;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

/// Where `--install-agent` puts the agent on an ssh host (local state, never synced).
pub const DEFAULT_AGENT: &str = "/var/lib/syncer/bin/syncer";

/// Where a host's agent runs and the root it syncs, as an inventory or the command line
/// names it ([`HostSpec::parse`]; `Display` gives the same spelling back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostSpec {
    /// `local:/path`: this program's own `serve` as a child process, syncing the
    /// directory at that absolute path.
    Local(PathBuf),
    /// `ssh://[user@]host[:port][/root]`: the agent started through the ssh command.
    Ssh {
        /// The login name (`ssh -l`); `None` leaves it to ssh and its configuration.
        user: Option<String>,
        /// The host name or address (an IPv6 address without its brackets).
        host: String,
        /// The ssh port (`ssh -p`); `None` leaves it to ssh and its configuration.
        port: Option<u16>,
        /// The directory on the host the agent syncs (`serve --root`): `/` unless given.
        root: String,
    },
}

/// A path with `.` and `..` resolved by its text, and no trailing `/`: `/srv/a/../a/`
/// is `/srv/a`.
fn lexical(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

impl HostSpec {
    /// What names one host root however it is spelled: `ssh://root@H:22/` and
    /// `ssh://root@h` are one (host names are case-insensitive, 22 is ssh's port, `/`
    /// the default root), and so are `local:/srv/a/../a` and `local:/srv/a` (and a
    /// symlink to it, when the path exists). Two sessions on one key would meet on the
    /// host's lock.
    pub fn identity(&self) -> String {
        match self {
            HostSpec::Local(p) => {
                let p = lexical(&p.to_string_lossy());
                let real = imager::fsx::canonicalize(Path::new(&p))
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or(p);
                format!("local:{real}")
            }
            HostSpec::Ssh {
                user,
                host,
                port,
                root,
            } => format!(
                "ssh://{}@{}:{}{}",
                user.as_deref().unwrap_or(""),
                host.to_ascii_lowercase(),
                port.unwrap_or(22),
                lexical(root)
            ),
        }
    }

    /// Reads `local:/path` or `ssh://[user@]host[:port][/root]`; anything else is an
    /// [`Error::HostSpec`] that says the accepted forms.
    pub fn parse(s: &str) -> Result<HostSpec> {
        let bad = |why: &str| {
            Error::HostSpec(format!(
                "bad host {s:?}: {why} (use local:/path or ssh://[user@]host[:port][/root])"
            ))
        };
        if let Some(p) = s.strip_prefix("local:") {
            if !p.starts_with('/') {
                return Err(bad("a local root must be an absolute path"));
            }
            return Ok(HostSpec::Local(PathBuf::from(p)));
        }
        let rest = s
            .strip_prefix("ssh://")
            .ok_or_else(|| bad("unknown scheme"))?;
        let (auth, root) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let (user, hostport) = match auth.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
            Some(_) => return Err(bad("empty user name")),
            None => (None, auth),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, rest) = h.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            let port = match rest.strip_prefix(':') {
                Some(p) => Some(p.parse().map_err(|_| bad("bad port"))?),
                None if rest.is_empty() => None,
                None => return Err(bad("junk after ]")),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse().map_err(|_| bad("bad port"))?)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() || host.starts_with('-') {
            return Err(bad("empty or invalid host name"));
        }
        Ok(HostSpec::Ssh {
            user,
            host,
            port,
            root,
        })
    }
}

impl std::fmt::Display for HostSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostSpec::Local(p) => write!(f, "local:{}", p.display()),
            HostSpec::Ssh {
                user,
                host,
                port,
                root,
            } => {
                write!(f, "ssh://")?;
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                if host.contains(':') {
                    write!(f, "[{host}]")?;
                } else {
                    write!(f, "{host}")?;
                }
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                if root != "/" {
                    write!(f, "{root}")?;
                }
                Ok(())
            }
        }
    }
}

/// How the controller reaches and starts hosts' agents: the ssh command, the agent's
/// path and prefix, the rate limits and the handshake's timeout.
#[derive(Clone)]
pub struct TransportOptions {
    /// The ssh command and its options, split on whitespace (`-e "ssh -p 2222"`).
    pub ssh: Vec<String>,
    /// The login name for ssh hosts whose spec names none (an inventory's `user`).
    pub user: Option<String>,
    /// The port for ssh hosts whose spec names none (an inventory's `port`).
    pub port: Option<u16>,
    /// Whether `user` wins over a `-l` in `ssh` (set as specifically as an `rsh`).
    pub user_first: bool,
    /// The same for `port` and a `-p` in `ssh`.
    pub port_first: bool,
    /// A key file for ssh (`-i`, an inventory's `identity`).
    pub identity: Option<PathBuf>,
    /// Options for ssh, each passed as `-o OPTION` (an inventory's `ssh_options`).
    pub ssh_options: Vec<String>,
    /// The agent's path on ssh hosts.
    pub agent: String,
    /// Replace a missing or different agent on ssh hosts with the `syncer-agent` beside
    /// this program (`--install-agent`); local hosts always run this program itself.
    pub install_agent: bool,
    /// A command prefix for the agent (`nice -n 10 ionice -c 3`), from a rollout policy.
    pub agent_prefix: Vec<String>,
    /// Bytes per second sent to each host, and to all hosts together.
    pub rate_per_host: Option<u64>,
    /// The one bucket every host's session draws from, shared through the `Arc`; `None`:
    /// no total limit.
    pub rate_total: Option<std::sync::Arc<crate::ratelimit::Bucket>>,
    /// Tell the agent to drop an unfinished commit instead of finishing it.
    pub abandon_commit: bool,
    /// The store's objects directory, given to the agents of `local:` hosts (which run
    /// on this machine): they copy the image's files from it themselves (store copies),
    /// so nothing is compressed or crosses the pipe. Never given to an ssh host.
    pub objects: Option<PathBuf>,
    /// How long the agent may take to greet us once started (`Welcome` after our
    /// `Hello`): an agent stuck before its session starts must not stall a push forever.
    pub handshake_timeout: std::time::Duration,
}

/// The default for [`TransportOptions::handshake_timeout`]: long enough for a slow ssh
/// login and an agent reading a big state directory on a loaded host.
pub const DEFAULT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            ssh: vec!["ssh".into()],
            user: None,
            port: None,
            user_first: false,
            port_first: false,
            identity: None,
            ssh_options: Vec::new(),
            agent: DEFAULT_AGENT.into(),
            install_agent: false,
            agent_prefix: Vec::new(),
            rate_per_host: None,
            rate_total: None,
            abandon_commit: false,
            objects: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// What a controller reads from an agent it started (the child's stdout).
pub type AgentRead = ChildStdout;
/// What a controller writes to an agent it started (the child's stdin, rate-limited,
/// buffered).
pub type AgentWrite = std::io::BufWriter<Limited<ChildStdin>>;

/// A controller's session with an agent it started (over ssh or as a local child): the
/// agent's process, the connection to it, and what it said about itself. (The host
/// side of the same session is the agent crate's own `Session`.)
pub struct RunningAgent {
    /// The session's messages: sent to the agent's stdin (rate-limited), read from its
    /// stdout; it counts the bytes each way.
    pub conn: Conn<AgentRead, AgentWrite>,
    child: Child,
    stderr: Option<JoinHandle<String>>,
    /// What the agent said about itself.
    pub welcome: Welcome,
    /// Whether [`connect`] installed the agent on the host before starting this session.
    pub installed: bool,
    /// Whether the agent was given the store's objects ([`TransportOptions::objects`]):
    /// it takes store copies.
    pub store_copies: bool,
    closed: bool,
}

impl Drop for RunningAgent {
    /// A session abandoned on an error path: the agent is stopped and reaped (it rolls
    /// back nothing; an interrupted commit is finished by the next agent).
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ssh_command(spec: &HostSpec, opts: &TransportOptions, remote: &str) -> Command {
    let HostSpec::Ssh {
        user, host, port, ..
    } = spec
    else {
        unreachable!("ssh_command is only called for ssh hosts")
    };
    let mut c = Command::new(&opts.ssh[0]);
    // ssh keeps the first value of each option: first the spec's own `user@` and `:port`
    // (over `-e` and `rsh`), else an inventory's set as specifically as its `rsh`.
    let port = port.or(opts.port.filter(|_| opts.port_first));
    let inventory_user = opts.user.as_ref().filter(|_| opts.user_first);
    let user = user.as_ref().or(inventory_user);
    if let Some(p) = port {
        c.arg("-p").arg(p.to_string());
    }
    if let Some(u) = user {
        c.arg("-l").arg(u);
    }
    // Then the ssh command's own options, which the settings below do not override.
    c.args(&opts.ssh[1..]);
    if let Some(i) = &opts.identity {
        c.arg("-i").arg(i);
    }
    for o in &opts.ssh_options {
        c.arg("-o").arg(o);
    }
    if let Some(p) = opts.port.filter(|_| port.is_none()) {
        c.arg("-p").arg(p.to_string());
    }
    if let Some(u) = opts.user.as_ref().filter(|_| user.is_none()) {
        c.arg("-l").arg(u);
    }
    c.arg("--").arg(host).arg(remote);
    c
}

fn agent_command(spec: &HostSpec, opts: &TransportOptions) -> Result<Command> {
    Ok(match spec {
        HostSpec::Local(root) => {
            let exe = std::env::current_exe()
                .map_err(|e| Error::SelfExe(format!("cannot find this program's path: {e}")))?;
            let mut c = if opts.agent_prefix.is_empty() {
                Command::new(exe)
            } else {
                let mut c = Command::new(&opts.agent_prefix[0]);
                c.args(&opts.agent_prefix[1..]).arg(exe);
                c
            };
            c.arg("serve").arg("--root").arg(root);
            if opts.abandon_commit {
                c.arg("--abandon-commit");
            }
            if let Some(objects) = &opts.objects {
                c.arg("--objects").arg(objects);
            }
            c
        }
        HostSpec::Ssh { root, .. } => {
            let prefix: String = opts.agent_prefix.iter().map(|w| quote(w) + " ").collect();
            let remote = format!(
                "exec {prefix}{} serve --root {}{}",
                quote(&opts.agent),
                quote(root),
                if opts.abandon_commit {
                    " --abandon-commit"
                } else {
                    ""
                }
            );
            ssh_command(spec, opts, &remote)
        }
    })
}

/// An error's text without the variant's own prefix, for wrapping it in another.
fn message(e: &Error) -> String {
    match e {
        Error::Connection(m) | Error::AgentExited { text: m, .. } => m.clone(),
        other => other.to_string(),
    }
}

/// Starts a session: the agent runs and has greeted us (installing it first if asked).
pub fn connect(spec: &HostSpec, opts: &TransportOptions) -> Result<RunningAgent> {
    let ssh = matches!(spec, HostSpec::Ssh { .. });
    match start(spec, opts) {
        Ok(s) if !ssh || !opts.install_agent => Ok(s),
        // The agent this controller would install (the `syncer-agent` beside it); a
        // host that runs another build gets this one.
        Ok(s) if s.welcome.exe == crate::selfexe::agent_identity().map_err(Error::SelfExe)? => {
            Ok(s)
        }
        Ok(s) => {
            s.close();
            install(spec, opts)?;
            let mut s = start(spec, opts)?;
            s.installed = true;
            Ok(s)
        }
        // ssh itself failed (its own exit status 255: unreachable, refused, denied):
        // installing would fail the same way and repeat the cause.
        Err(
            e @ Error::AgentExited {
                code: Some(255), ..
            },
        ) if ssh => Err(e),
        Err(e) if ssh && opts.install_agent => {
            install(spec, opts).map_err(|i| {
                Error::Connection(format!(
                    "{}; installing the agent failed too: {}",
                    message(&e),
                    message(&i)
                ))
            })?;
            let mut s = start(spec, opts)?;
            s.installed = true;
            Ok(s)
        }
        // The remote shell's "not found" (127) or "cannot execute" (126): say how to fix
        // it. Other failures (ssh's own 255, a missing ssh) are not about the agent.
        Err(Error::AgentExited {
            text,
            code: code @ Some(126 | 127),
        }) if ssh => Err(Error::AgentExited {
            text: format!(
                "{text} (is the agent installed at {}? --install-agent copies it there)",
                opts.agent
            ),
            code,
        }),
        Err(e) => Err(e),
    }
}

fn start(spec: &HostSpec, opts: &TransportOptions) -> Result<RunningAgent> {
    let s = spawn_agent(spec, opts)?;
    handshake(s, opts)
}

/// Starts the agent for `spec` with its pipes wired into a session, so [`handshake`]
/// has a connection to greet it over (the welcome is a placeholder until then).
fn spawn_agent(spec: &HostSpec, opts: &TransportOptions) -> Result<RunningAgent> {
    let mut cmd = agent_command(spec, opts)?;
    // Its own process group: Ctrl-C on the controller's terminal reaches the controller
    // (which stops starting hosts) but not the agents, which finish their host.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Connection(format!("cannot start {:?}: {e}", cmd.get_program())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Connection("no stdout".into()))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::Connection("no stdin".into()))?;
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = (&mut e).take(64 << 10).read_to_end(&mut v);
            let _ = std::io::copy(&mut e, &mut std::io::sink());
            String::from_utf8_lossy(&v).trim().to_string()
        })
    });
    let mut buckets: Vec<_> = opts.rate_total.iter().cloned().collect();
    if let Some(r) = opts.rate_per_host {
        buckets.push(Bucket::new(r));
    }
    let s = RunningAgent {
        conn: Conn::new(
            stdout,
            std::io::BufWriter::with_capacity(1 << 16, Limited::new(stdin, buckets)),
        ),
        child,
        stderr,
        welcome: Welcome {
            version: PROTOCOL_VERSION,
            agent: String::new(),
            exe: Hash([0; 32]),
            image: None,
            previous: None,
            rolled_forward: false,
            abandoned: None,
            trust: None,
            damaged_record: None,
        },
        installed: false,
        store_copies: matches!(spec, HostSpec::Local(_)) && opts.objects.is_some(),
        closed: false,
    };
    Ok(s)
}

/// Exchanges Hello and Welcome with a just started agent, so a session is only handed
/// out once the agent is known to answer and to speak this protocol version.
fn handshake(mut s: RunningAgent, opts: &TransportOptions) -> Result<RunningAgent> {
    // The wait for the greeting is bounded by a watchdog that kills the agent's process
    // group (ssh and what it runs, or a local agent) when the time is up: the pipe then
    // ends, and the blocked read with it. It is joined before the child can be reaped
    // below, so it never signals a reused process ID.
    let watchdog = Watchdog::start(s.child.id(), opts.handshake_timeout);
    let greeting = s
        .conn
        .send(&Msg::Hello(Hello {
            version: PROTOCOL_VERSION,
        }))
        .and_then(|_| s.conn.recv("the agent's Welcome"));
    if watchdog.stop() {
        s.close();
        // No host name here: every report shows the error under its host's.
        return Err(Error::Connection(format!(
            "the agent did not send its greeting (Welcome) within {:?} after it was \
             started, and was stopped: the agent or the connection to it hangs \
             (SYNCER_HANDSHAKE_TIMEOUT sets the wait in seconds)",
            opts.handshake_timeout
        )));
    }
    match greeting {
        Ok(Msg::Welcome(w)) if w.version == PROTOCOL_VERSION => {
            s.welcome = w;
            Ok(s)
        }
        Ok(Msg::Welcome(Welcome { version, agent, .. })) => {
            s.close();
            Err(Error::Protocol(format!(
                "the agent (syncer {agent}) speaks protocol version {version}, this controller {PROTOCOL_VERSION}"
            )))
        }
        Ok(Msg::Error(m)) => {
            s.close();
            Err(Error::from_agent(m))
        }
        Ok(m) => {
            s.close();
            Err(Error::Protocol(format!(
                "expected Welcome, got {}",
                m.name()
            )))
        }
        Err(e) => Err(s.fail(e)),
    }
}

/// Kills a process group unless stopped in time (see [`handshake`]; a rollout's hooks
/// use it too).
pub(crate) struct Watchdog {
    stop: std::sync::mpsc::Sender<()>,
    thread: JoinHandle<bool>,
}

impl Watchdog {
    pub(crate) fn start(pid: u32, timeout: std::time::Duration) -> Watchdog {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            match stopped.recv_timeout(timeout) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    // The child leads its own process group (`process_group(0)`).
                    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                        let _ =
                            rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                    }
                    true
                }
                _ => false,
            }
        });
        Watchdog { stop, thread }
    }

    /// Stops the watchdog; whether it had fired.
    pub(crate) fn stop(self) -> bool {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or(false)
    }
}

impl RunningAgent {
    /// The error to show for a failed exchange: the agent's own `Error` message if it
    /// sent one, else the transport's error with the agent's stderr and exit status.
    pub fn fail(mut self, e: Error) -> Error {
        if let Error::Connection(_) = e {
            // The agent may have explained itself before the pipe broke.
            if let Ok(Some(Msg::Error(m))) = self.conn.recv_opt() {
                self.close();
                return Error::from_agent(m);
            }
        }
        let (status, stderr) = self.end();
        match e {
            Error::Connection(m) | Error::Protocol(m) => {
                let mut s = m;
                if let Some(st) = status {
                    s.push_str(&format!(" (agent {st})"));
                }
                if !stderr.is_empty() {
                    s.push_str(&format!(": {stderr}"));
                }
                match status {
                    Some(st) => Error::AgentExited {
                        text: s,
                        code: st.code(),
                    },
                    None => Error::Connection(s),
                }
            }
            other => other,
        }
    }

    /// Ends the session and returns the agent's exit status and stderr.
    pub fn close(self) -> (Option<String>, String) {
        let (status, stderr) = self.end();
        (status.map(|st| st.to_string()), stderr)
    }

    /// Ends the session: the agent's exit status (once it stopped, or was killed) and
    /// its stderr.
    fn end(mut self) -> (Option<std::process::ExitStatus>, String) {
        let _ = self.conn.send(&Msg::Bye);
        self.closed = true;
        // An agent that does not stop (stuck writing to a pipe no one reads) is killed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
                Err(_) => break None,
            }
        };
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (status, stderr)
    }
}

/// Copies the agent executable (`syncer-agent` beside this program) to the ssh host.
fn install(spec: &HostSpec, opts: &TransportOptions) -> Result<()> {
    // Stripped of its debug sections; same build ID, so the same identity as the
    // executable beside this controller.
    let bin = crate::selfexe::agent_copy().map_err(Error::SelfExe)?;
    let dir = match opts.agent.rsplit_once('/') {
        Some((d, _)) if !d.is_empty() => d.to_string(),
        _ => "/".to_string(),
    };
    let tmp = format!("{}.new", opts.agent);
    let remote = format!(
        "mkdir -p {d} && cat > {t} && chmod 755 {t} && mv -f {t} {a}",
        d = quote(&dir),
        t = quote(&tmp),
        a = quote(&opts.agent)
    );
    let mut c = ssh_command(spec, opts, &remote);
    c.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .map_err(|e| Error::Connection(format!("cannot start ssh: {e}")))?;
    // A write that fails (ssh gave up: host unreachable, refused) is explained by ssh's
    // exit status and stderr, read below.
    let sent = child
        .stdin
        .take()
        .map(|mut i| std::io::Write::write_all(&mut i, bin));
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Connection(format!("installing the agent: {e}")))?;
    if let (Some(Err(e)), true) = (&sent, out.status.success()) {
        return Err(Error::Connection(format!(
            "sending the agent to {}: {e}",
            opts.agent
        )));
    }
    if !out.status.success() {
        return Err(Error::Connection(format!(
            "installing the agent at {} failed ({}): {}",
            opts.agent,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_specs() {
        assert_eq!(
            HostSpec::parse("ssh://root@127.0.0.1:2222/srv/h1").unwrap(),
            HostSpec::Ssh {
                user: Some("root".into()),
                host: "127.0.0.1".into(),
                port: Some(2222),
                root: "/srv/h1".into()
            }
        );
        assert_eq!(
            HostSpec::parse("ssh://web1").unwrap().to_string(),
            "ssh://web1"
        );
        assert_eq!(
            HostSpec::parse("ssh://[::1]:22").unwrap().to_string(),
            "ssh://[::1]:22"
        );
        assert!(HostSpec::parse("local:rel").is_err());
        assert!(HostSpec::parse("ftp://x").is_err());
        assert!(HostSpec::parse("ssh://-oProxyCommand=x").is_err());
    }
}
