//! How an inventory's hosts are reached: ssh settings in a global `[connect]` table, a
//! colo's `[colo.connect]` and a host's own inline table, so that a fleet's commands
//! need no `-e` or `--agent` of their own. The most specific setting wins: the host's,
//! then the colo's, then the global one, then the command line, then the defaults; a
//! host spec's own user and port (`ssh://user@host:port`) win over all of them, and a
//! `user` or `port` key wins over a `-l` or `-p` in an `rsh` no more specific than it.
//! Settings apply to `ssh://` hosts; `local:` hosts run this program itself.

use super::inventory::Host;
use crate::error::{Error, Result};
use crate::transport::{HostSpec, TransportOptions};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A `[connect]` table as written (global, a colo's, or a host's inline table): every
/// key is optional, and an unset key comes from the next table down.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connect {
    /// The ssh login name (`ssh -l`) for hosts whose spec names none.
    pub user: Option<String>,
    /// The ssh port (`ssh -p`) for hosts whose spec names none.
    pub port: Option<u16>,
    /// A private key file (`ssh -i`), relative to the inventory's directory; once loaded,
    /// the path as resolved.
    pub identity: Option<PathBuf>,
    /// The whole ssh command line, split on whitespace, as `-e` gives it.
    pub rsh: Option<String>,
    /// The agent's path on the host (`--agent`).
    pub agent: Option<String>,
    /// Extra ssh options, each passed as `-o OPTION` (a more specific list replaces a
    /// less specific one whole).
    pub ssh_options: Option<Vec<String>>,
    /// Install the agent where it is missing or different (`--install-agent`).
    pub install_agent: Option<bool>,
    /// Whether `port` was set at least as specifically as `rsh`, so that it wins over a
    /// `-p` in it; `None` in a table as written, where a port set beside `rsh` wins.
    #[serde(skip)]
    port_over_rsh: Option<bool>,
    /// The same for `user` and a `-l` in `rsh`.
    #[serde(skip)]
    user_over_rsh: Option<bool>,
}

/// A colo's host as written: `"ssh://web1"`, or an inline table with the spec under
/// `host` and any [`Connect`] key beside it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum HostEntry {
    Spec(String),
    Table(toml::Table),
}

impl HostEntry {
    /// The spec as written and the host's own settings; an error names the key.
    pub(super) fn split(&self) -> std::result::Result<(String, Connect), String> {
        match self {
            HostEntry::Spec(s) => Ok((s.clone(), Connect::default())),
            HostEntry::Table(t) => {
                let mut t = t.clone();
                let host = match t.remove("host") {
                    Some(toml::Value::String(h)) => h,
                    Some(_) => return Err("a host table's `host` must be a string".into()),
                    None => return Err("a host table has no `host` key".into()),
                };
                let connect = toml::Value::Table(t)
                    .try_into::<Connect>()
                    .map_err(|e| format!("host {host}: {}", e.message().trim()))?;
                Ok((host, connect))
            }
        }
    }
}

impl Connect {
    /// These settings over `under`: each key set here wins, the others come from `under`.
    pub fn over(&self, under: &Connect) -> Connect {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            a.clone().or_else(|| b.clone())
        }
        // A key set here is at least as specific as any `rsh`; an `rsh` set here without
        // it is more specific than the key from below.
        let over_rsh =
            |here: bool, under_wins: bool| Some(here || (self.rsh.is_none() && under_wins));
        Connect {
            port_over_rsh: over_rsh(self.port.is_some(), under.port_wins()),
            user_over_rsh: over_rsh(self.user.is_some(), under.user_wins()),
            user: pick(&self.user, &under.user),
            port: self.port.or(under.port),
            identity: pick(&self.identity, &under.identity),
            rsh: pick(&self.rsh, &under.rsh),
            agent: pick(&self.agent, &under.agent),
            ssh_options: pick(&self.ssh_options, &under.ssh_options),
            install_agent: self.install_agent.or(under.install_agent),
        }
    }

    /// Whether the port is to win over a `-p` in the ssh command line.
    fn port_wins(&self) -> bool {
        self.port_over_rsh.unwrap_or(self.port.is_some())
    }

    /// Whether the user is to win over a `-l` in the ssh command line.
    fn user_wins(&self) -> bool {
        self.user_over_rsh.unwrap_or(self.user.is_some())
    }

    /// Checks the values, so that a bad one fails when the inventory loads rather than
    /// as an ssh error on some host, and resolves `identity` against `dir`.
    pub(super) fn checked(mut self, dir: &Path) -> std::result::Result<Connect, String> {
        let empty = |key: &str, v: &Option<String>| match v {
            Some(s) if s.trim().is_empty() => Err(format!("connect {key} is empty")),
            _ => Ok(()),
        };
        empty("user", &self.user)?;
        empty("rsh", &self.rsh)?;
        empty("agent", &self.agent)?;
        if let Some(u) = self.user.as_deref().filter(|u| u.starts_with('-')) {
            return Err(format!("connect user {u:?} starts with '-'"));
        }
        if self.port == Some(0) {
            return Err("connect port 0: use 1 to 65535".into());
        }
        if let Some(o) = self
            .ssh_options
            .iter()
            .flatten()
            .find(|o| o.trim().is_empty())
        {
            return Err(format!("connect ssh_options holds an empty option {o:?}"));
        }
        if let Some(i) = &self.identity {
            let i = dir.join(i);
            match imager::fsx::is_file(&i) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(format!(
                        "connect identity {}: no such key file",
                        i.display()
                    ))
                }
                Err(e) => return Err(format!("connect identity: {e}")),
            }
            self.identity = Some(i);
        }
        Ok(self)
    }

    /// What names the host root `spec` reaches with these settings (its user and port
    /// filled in from them), so that a host listed twice is found however it is spelled.
    pub(super) fn identity(&self, spec: &HostSpec) -> String {
        match spec.clone() {
            HostSpec::Ssh {
                user,
                host,
                port,
                root,
            } => HostSpec::Ssh {
                user: user.or_else(|| self.user.clone()),
                host,
                port: port.or(self.port),
                root,
            }
            .identity(),
            local => local.identity(),
        }
    }

    /// How to reach a host with these settings: `base` (the command line's) with each key
    /// set here in its place.
    pub fn transport(&self, base: &TransportOptions) -> TransportOptions {
        let mut t = base.clone();
        if let Some(r) = &self.rsh {
            t.ssh = r.split_whitespace().map(String::from).collect();
        }
        if let Some(a) = &self.agent {
            t.agent = a.clone();
        }
        if let Some(i) = self.install_agent {
            t.install_agent = i;
        }
        t.user = self.user.clone().or(t.user);
        t.port = self.port.or(t.port);
        // Set in the inventory, over the command line's `-e` or an `rsh` less specific.
        t.user_first = self.user.is_some() && self.user_wins();
        t.port_first = self.port.is_some() && self.port_wins();
        t.identity = self.identity.clone().or(t.identity);
        if let Some(o) = &self.ssh_options {
            t.ssh_options = o.clone();
        }
        t
    }
}

/// A colo's hosts with their settings merged, each host root once in the inventory:
/// `roots` holds the roots seen so far, with their first spelling and colo.
pub(super) fn colo_hosts(
    entries: &[HostEntry],
    colo: &Connect,
    global: &Connect,
    dir: &Path,
    name: &str,
    what: &str,
    roots: &mut std::collections::HashMap<String, (String, String)>,
) -> Result<Vec<Host>> {
    let bad = |e: String| Error::Inventory(format!("{what}: {e}"));
    // The colo's own settings are checked even where every host overrides them.
    colo.over(global).checked(dir).map_err(bad)?;
    let mut hosts = Vec::new();
    for entry in entries {
        let (h, own) = entry.split().map_err(bad)?;
        let spec = HostSpec::parse(&h).map_err(|e| bad(e.to_string()))?;
        let connect = own
            .over(colo)
            .over(global)
            .checked(dir)
            .map_err(|e| bad(format!("host {h}: {e}")))?;
        if let Some((first, colo)) =
            roots.insert(connect.identity(&spec), (h.clone(), name.to_string()))
        {
            return Err(bad(format!(
                "host {h} is listed twice (as {first} in colo {colo}: the same host root)"
            )));
        }
        hosts.push(Host { spec, connect });
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_setting_wins_and_the_command_line_fills_the_rest() {
        let global = Connect {
            user: Some("deploy".into()),
            port: Some(2200),
            ssh_options: Some(vec!["BatchMode=yes".into()]),
            agent: Some("/opt/syncer".into()),
            ..Default::default()
        };
        let colo = Connect {
            port: Some(2201),
            ssh_options: Some(vec!["ConnectTimeout=5".into()]),
            ..Default::default()
        };
        let host = Connect {
            port: Some(2222),
            ..Default::default()
        };
        let c = host.over(&colo.over(&global));
        assert_eq!(c.port, Some(2222));
        assert_eq!(c.user.as_deref(), Some("deploy"));
        // A list is replaced whole, not merged.
        assert_eq!(c.ssh_options, Some(vec!["ConnectTimeout=5".to_string()]));
        let base = TransportOptions {
            ssh: vec!["ssh".into(), "-v".into()],
            install_agent: true,
            ..Default::default()
        };
        let t = c.transport(&base);
        assert_eq!(t.ssh, ["ssh", "-v"], "no rsh: the command line's");
        assert!(t.install_agent, "unset: the command line's");
        assert_eq!(t.agent, "/opt/syncer");
        assert_eq!((t.port, t.user.as_deref()), (Some(2222), Some("deploy")));
        let t = Connect {
            rsh: Some("ssh -4  -C".into()),
            install_agent: Some(false),
            ..Default::default()
        }
        .transport(&base);
        assert_eq!(t.ssh, ["ssh", "-4", "-C"]);
        assert!(!t.install_agent);
        assert_eq!(t.agent, crate::transport::DEFAULT_AGENT);
    }

    #[test]
    fn a_port_or_user_wins_over_an_rsh_only_when_set_at_least_as_specifically() {
        let rsh = |r: &str| Connect {
            rsh: Some(r.into()),
            ..Default::default()
        };
        let port = Connect {
            port: Some(2222),
            ..Default::default()
        };
        let user = Connect {
            user: Some("deploy".into()),
            ..Default::default()
        };
        let base = TransportOptions::default();
        let first = |c: Connect| {
            let t = c.transport(&base);
            (t.port_first, t.user_first)
        };
        // A host's port over its colo's rsh wins; the global user under that rsh loses.
        assert_eq!(
            first(port.over(&rsh("ssh -p 1 -l x").over(&user))),
            (true, false)
        );
        // A colo's rsh over the global port and user wins, whatever the host adds.
        let under = rsh("ssh -p 1").over(&port.over(&user));
        assert_eq!(first(Connect::default().over(&under)), (false, false));
        // Set beside the rsh in one table, or with no rsh at all (over `-e`): the key.
        let beside = Connect {
            port: Some(2222),
            ..rsh("ssh -p 1")
        };
        assert_eq!(first(beside), (true, false));
        assert_eq!(first(user.over(&port)), (true, true));
    }

    #[test]
    fn host_entries_are_a_spec_or_a_table_with_known_keys() {
        let parse = |s: &str| -> HostEntry {
            toml::from_str::<toml::Table>(s).unwrap()["h"]
                .clone()
                .try_into()
                .unwrap()
        };
        let (spec, c) = parse("h = \"ssh://web1\"").split().unwrap();
        assert_eq!((spec.as_str(), c), ("ssh://web1", Connect::default()));
        let (spec, c) = parse("h = { host = \"ssh://web1\", port = 2222, identity = \"k\" }")
            .split()
            .unwrap();
        assert_eq!(spec, "ssh://web1");
        assert_eq!(c.port, Some(2222));
        assert_eq!(c.identity, Some(PathBuf::from("k")));
        let e = parse("h = { host = \"ssh://web1\", prot = 2222 }")
            .split()
            .unwrap_err();
        assert!(
            e.contains("host ssh://web1") && e.contains("unknown field `prot`"),
            "{e}"
        );
        let e = parse("h = { port = 2222 }").split().unwrap_err();
        assert!(e.contains("no `host`"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_when_loaded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (c, says) in [
            ("port = 0", "port 0"),
            ("rsh = \" \"", "rsh is empty"),
            ("user = \"-oProxyCommand=x\"", "starts with '-'"),
            ("ssh_options = [\"\"]", "empty option"),
            (
                "identity = \"no-such-key\"",
                "no-such-key: no such key file",
            ),
        ] {
            let e = toml::from_str::<Connect>(c)
                .unwrap()
                .checked(dir)
                .unwrap_err();
            assert!(e.contains(says), "{c}: {e}");
        }
        let c = Connect {
            identity: Some("Cargo.toml".into()),
            ..Default::default()
        };
        assert_eq!(
            c.checked(dir).unwrap().identity,
            Some(dir.join("Cargo.toml"))
        );
    }
}

#[cfg(test)]
mod inventory_tests {
    use super::super::inventory::Inventory;
    use std::path::Path;

    fn parse(text: &str) -> std::result::Result<Inventory, String> {
        Inventory::parse(text, Path::new("fleet.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn an_inventory_merges_settings_host_over_colo_over_global() {
        let inv = parse(
            "[connect]\nuser = \"deploy\"\nport = 2200\nagent = \"/a\"\n\
             [[colo]]\nname = \"c\"\nhosts = [\"ssh://h1\", { host = \"ssh://h2\", port = 2222 }, \
             \"ssh://admin@h3:22\"]\n[colo.connect]\nagent = \"/b\"\ninstall_agent = true\n",
        )
        .unwrap();
        let t: Vec<_> = inv.colos[0]
            .hosts
            .iter()
            .map(|h| h.connect.transport(&Default::default()))
            .collect();
        assert_eq!((t[0].port, t[0].agent.as_str()), (Some(2200), "/b"));
        assert!(t[0].install_agent && t[1].install_agent);
        assert_eq!(t[1].port, Some(2222));
        // The spec's own user and port are not replaced: ssh_command puts them first.
        assert_eq!(inv.colos[0].hosts[2].spec.to_string(), "ssh://admin@h3:22");
    }

    #[test]
    fn bad_settings_name_the_file_colo_host_and_key() {
        for (text, want) in [
            (
                "[connect]\nprot = 1\n[[colo]]\nname = \"a\"\nhosts = [\"local:/x\"]\n",
                "fleet.toml:2: unknown field `prot`",
            ),
            (
                "[[colo]]\nname = \"a\"\nhosts = [{ host = \"ssh://h\", identiy = \"k\" }]\n",
                "fleet.toml: colo a: host ssh://h: unknown field `identiy`",
            ),
            (
                "[[colo]]\nname = \"a\"\nhosts = [\"ssh://h\"]\n[colo.connect]\nport = 0\n",
                "fleet.toml: colo a: connect port 0",
            ),
            (
                "[[colo]]\nname = \"a\"\nhosts = [{ host = \"ssh://h\", identity = \"nokey\" }]\n",
                "fleet.toml: colo a: host ssh://h: connect identity ./nokey: no such key file",
            ),
            // The same root, once through its settings' port.
            (
                "[[colo]]\nname = \"a\"\nhosts = [{ host = \"ssh://h\", port = 2222 }, \"ssh://h:2222\"]\n",
                "host ssh://h:2222 is listed twice (as ssh://h in colo a",
            ),
            (
                "[policy]\nhook_timeout = 0\n[[colo]]\nname = \"a\"\nhosts = [\"local:/x\"]\n",
                "fleet.toml: colo a: hook_timeout must be at least 1 second",
            ),
            (
                "[[colo]]\nname = \"a\"\nhosts = [\"local:/x\"]\n[colo.policy]\npost = \"\"\n",
                "the post command is empty",
            ),
        ] {
            let e = parse(text).err().unwrap_or_default();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn hooks_merge_like_the_rest_of_the_policy() {
        let inv = parse(
            "[policy]\npre = \"drain\"\npost = \"undrain\"\nhook_timeout = 5\n\
             [[colo]]\nname = \"a\"\nhosts = [\"local:/a\"]\n[colo.policy]\npre = \"other\"\n\
             [[colo]]\nname = \"b\"\nhosts = [\"local:/b\"]\n",
        )
        .unwrap();
        let p = &inv.colos[0].policy;
        assert_eq!(
            (p.pre.as_deref(), p.post.as_deref()),
            (Some("other"), Some("undrain"))
        );
        assert_eq!(p.hook_timeout.as_secs(), 5);
        assert_eq!(inv.colos[1].policy.pre.as_deref(), Some("drain"));
    }
}
