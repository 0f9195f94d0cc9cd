//! What an image promises the syncer, in one place: the files a build writes under
//! `/usr/lib/imager/` (the local-state list and the triggers), how they are read back
//! (the default local-state list when an image has none, the triggers' order), and where
//! the store is by default. The build writes through these functions and the syncer
//! (push and agent) reads through them, so the two cannot drift apart; anything else in
//! imager is free to change without the syncer noticing.
//!
//! It also says how large an image can be: [`MAX_MANIFEST`], which imager refuses to
//! store beyond and the syncer carries up to, so that every image imager accepts can be
//! pushed.
//!
//! Local-state globs follow [`Excludes`]'s rules: over absolute image paths, `*` within
//! one name, `**` across directories, and a glob naming a directory covers everything
//! below it.

use crate::tree::scan::list_lines;
pub use crate::tree::scan::Excludes;
use serde::{Deserialize, Serialize};

/// Spelled once, for the paths below (`concat!` needs a literal).
macro_rules! image_dir {
    () => {
        "usr/lib/imager"
    };
}

/// The directory (relative to the image's root) where an image built by imager says how
/// the syncer should treat it.
pub const IMAGE_DIR: &str = image_dir!();

/// The image's local-state list: one glob a line, `#` comments; the syncer never touches
/// the paths it names on a host.
pub const LOCAL_STATE_FILE: &str = concat!("/", image_dir!(), "/local-state.txt");

/// The prefixes the image owns completely, one glob a line (as the local-state list):
/// on a host, a path under one of them that the image does not hold is deleted by a
/// push even when the host made it (local state still wins inside them). Anywhere
/// else a path the host made (one the host's recorded image did not hold) is kept.
pub const OWNED_FILE: &str = concat!("/", image_dir!(), "/owned.txt");

/// The image's triggers, a TOML file of `[[trigger]]` tables ([`TriggerFile`]).
pub const TRIGGERS_FILE: &str = concat!("/", image_dir!(), "/triggers.toml");

/// The local-state list of an image that carries none (and of a build manifest that
/// names none): the repository's `exclude-lists/local-state.txt`, built into the binary
/// so that imager and the syncer work from anywhere.
pub const DEFAULT_LOCAL_STATE: &str = include_str!("../../../exclude-lists/local-state.txt");

/// The prefixes an image owns when it says none ([`OWNED_FILE`]): the operating system's
/// directories, whose contents come from packages. `/var`, `/srv`, `/opt`, `/home` and
/// the rest hold what hosts make (databases, spools, caches), which a push never deletes
/// unless the syncer put it there. As OSTree and bootc keep `/var` as the machine's.
pub const DEFAULT_OWNED: &[&str] = &["/usr", "/bin", "/sbin", "/lib*", "/etc", "/boot"];

/// Where the store is when neither `--store` nor `IMAGER_STORE` says.
pub const DEFAULT_STORE: &str = "/var/lib/imager";

/// The largest canonical manifest text an image may have, in bytes (1 GiB: some seven
/// million entries, at about 140 bytes a line). The syncer carries a manifest up to this
/// size and its agent accepts no larger one (it holds the text, and the tree parsed from
/// it, in memory); imager refuses to store an image beyond it, so that an image it keeps
/// is one the syncer can push.
pub const MAX_MANIFEST: usize = 1 << 30;

/// Why an image whose canonical manifest is `len` bytes cannot be stored or pushed, if it
/// cannot: more than [`MAX_MANIFEST`].
pub fn check_manifest_len(len: usize) -> Result<(), String> {
    if len > MAX_MANIFEST {
        return Err(format!(
            "its manifest is {len} bytes, more than the limit of {MAX_MANIFEST} bytes (1 GiB, \
             about seven million entries) that the syncer carries"
        ));
    }
    Ok(())
}

/// The store both commands use: `given` (`--store`), else `$IMAGER_STORE`, else
/// [`DEFAULT_STORE`].
pub fn store_path(given: Option<&std::path::Path>) -> std::path::PathBuf {
    given
        .map(std::path::Path::to_path_buf)
        .or_else(|| std::env::var_os("IMAGER_STORE").map(std::path::PathBuf::from))
        .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_STORE))
}

/// The globs of a local-state list file: one a line, `#` comments and blank lines skipped.
pub fn local_state_lines(text: &str) -> Vec<String> {
    list_lines(text)
}

/// The local-state globs of an image, given its [`LOCAL_STATE_FILE`] if it has one: that
/// file's, or else the default list's.
pub fn local_state_of(file: Option<&[u8]>) -> Vec<String> {
    match file {
        Some(b) => list_lines(&String::from_utf8_lossy(b)),
        None => list_lines(DEFAULT_LOCAL_STATE),
    }
}

/// The text of [`LOCAL_STATE_FILE`] for these globs, as a build writes it.
pub fn local_state_text(globs: &[String]) -> String {
    list_text(
        "local state of this image: the syncer never touches these paths on a host",
        globs,
    )
}

/// A glob list file as a build writes it: a comment saying what it is (so the file is
/// never empty), then one glob a line.
fn list_text(what: &str, globs: &[String]) -> String {
    let mut t = format!("# {what}\n");
    for g in globs {
        t += g;
        t.push('\n');
    }
    t
}

/// The owned prefixes of an image, given its [`OWNED_FILE`] if it has one: that file's
/// globs, or else [`DEFAULT_OWNED`].
pub fn owned_of(file: Option<&[u8]>) -> Vec<String> {
    match file {
        Some(b) => list_lines(&String::from_utf8_lossy(b)),
        None => DEFAULT_OWNED.iter().map(|s| s.to_string()).collect(),
    }
}

/// The text of [`OWNED_FILE`] for these globs, as a build writes it.
pub fn owned_text(globs: &[String]) -> String {
    list_text(
        "prefixes this image owns completely: a push deletes what a host made below them",
        globs,
    )
}

/// What a push and `status` never compare on a host: the image's local-state globs and
/// the outputs its triggers declare (a trigger rewrites them on the host, so the host's
/// version is the right one), given the image's [`LOCAL_STATE_FILE`] (if any) and its
/// [`TRIGGERS_FILE`] (empty if none).
pub fn host_local_globs(
    local_state: Option<&[u8]>,
    triggers: &[u8],
) -> Result<Vec<String>, String> {
    let mut globs = local_state_of(local_state);
    for t in parse_triggers(triggers)? {
        globs.extend(t.outputs);
    }
    Ok(globs)
}

/// The triggers of a [`TRIGGERS_FILE`] (empty: none), in the order they run.
pub fn parse_triggers(toml_text: &[u8]) -> Result<Vec<Trigger>, String> {
    if toml_text.is_empty() {
        return Ok(Vec::new());
    }
    let text = std::str::from_utf8(toml_text)
        .map_err(|_| "the image's triggers.toml is not UTF-8".to_string())?;
    let f: TriggerFile =
        toml::from_str(text).map_err(|e| format!("the image's triggers.toml: {e}"))?;
    let mut t = f.trigger;
    sort_triggers(&mut t);
    Ok(t)
}

/// A command the syncer runs on a host when one of the watched paths changed there.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// What reports and logs call the trigger; it also breaks ties in `order`.
    pub name: String,
    /// Globs over image paths (`*` within a name, `**` across directories).
    pub paths: Vec<String>,
    /// The shell command, run with `/bin/sh -c` (chrooted into the root when that is not `/`).
    pub run: String,
    /// Triggers run in ascending order, then by name ([`sort_triggers`]).
    #[serde(default = "default_trigger_order")]
    pub order: i32,
    /// Seconds before the command is killed.
    #[serde(default = "default_trigger_timeout")]
    pub timeout: u64,
    /// Paths the command writes on the host (`ldconfig`: `/etc/ld.so.cache`): the host's
    /// version is the right one, so they are local state (never compared, never drift).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// The command needs a running system (`systemctl reload ...`): on a root that is
    /// not one (a `local:` directory, an image not booted) it is skipped and reported
    /// so, not failed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub booted: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_trigger_order() -> i32 {
    50
}
fn default_trigger_timeout() -> u64 {
    120
}

impl Trigger {
    /// A command run on its own, not because paths changed (the health check): it
    /// watches nothing and comes first.
    pub fn command(name: &str, run: String, timeout: u64) -> Trigger {
        Trigger {
            name: name.into(),
            paths: Vec::new(),
            run,
            order: 0,
            timeout,
            outputs: Vec::new(),
            booted: false,
        }
    }

    /// Why this trigger cannot be in an image, if it cannot: it must watch at least one
    /// path, each an absolute glob, and its outputs must be absolute globs too.
    pub fn check(&self) -> Result<(), String> {
        for g in self.paths.iter().chain(&self.outputs) {
            Excludes::new(std::slice::from_ref(g))
                .map_err(|e| format!("trigger {:?}: {e}", self.name))?;
            if !g.starts_with('/') {
                return Err(format!(
                    "trigger {:?}: path {g:?} must be absolute",
                    self.name
                ));
            }
        }
        if self.paths.is_empty() {
            return Err(format!("trigger {:?} watches no paths", self.name));
        }
        Ok(())
    }
}

/// The order triggers run in: ascending `order`, then by name.
pub fn sort_triggers(triggers: &mut [Trigger]) {
    triggers.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
}

/// [`TRIGGERS_FILE`] as TOML.
#[derive(Serialize, Deserialize)]
pub struct TriggerFile {
    /// The `[[trigger]]` tables, in the order the file lists them (not the order they run).
    #[serde(default)]
    pub trigger: Vec<Trigger>,
}

/// The text of [`TRIGGERS_FILE`] for these triggers, as a build writes it.
pub fn triggers_text(triggers: &[Trigger]) -> Result<String, toml::ser::Error> {
    toml::to_string(&TriggerFile {
        trigger: triggers.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_read_back_as_written_and_in_order() {
        let ts = vec![
            Trigger {
                order: 20,
                ..Trigger::command("b", "true".into(), 5)
            },
            Trigger::command("z", "true".into(), 5),
            Trigger::command("a", "true".into(), 5),
        ];
        let text = triggers_text(&ts).unwrap();
        let mut back = toml::from_str::<TriggerFile>(&text).unwrap().trigger;
        assert_eq!(back, ts);
        sort_triggers(&mut back);
        let names: Vec<&str> = back.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "z", "b"]);
    }

    #[test]
    fn an_image_without_a_list_gets_the_default_and_a_written_list_reads_back() {
        assert_eq!(local_state_of(None), local_state_lines(DEFAULT_LOCAL_STATE));
        assert!(!local_state_of(None).is_empty());
        let globs = vec!["/srv/*/data/**".to_string(), "/var/lib/x".to_string()];
        let text = local_state_text(&globs);
        assert_eq!(local_state_of(Some(text.as_bytes())), globs);
        assert_eq!(LOCAL_STATE_FILE, "/usr/lib/imager/local-state.txt");
        assert_eq!(TRIGGERS_FILE, "/usr/lib/imager/triggers.toml");
    }

    #[test]
    fn a_manifest_over_the_limit_is_refused_with_its_size_and_the_limit() {
        assert!(check_manifest_len(0).is_ok());
        assert!(check_manifest_len(MAX_MANIFEST).is_ok());
        let e = check_manifest_len(MAX_MANIFEST + 1).unwrap_err();
        assert!(
            e.contains(&format!("{} bytes", MAX_MANIFEST + 1))
                && e.contains(&format!("limit of {MAX_MANIFEST} bytes")),
            "{e}"
        );
    }

    #[test]
    fn a_trigger_must_watch_absolute_globs() {
        let t = |paths: &[&str]| Trigger {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            ..Trigger::command("t", "true".into(), 1)
        };
        assert!(t(&["/etc/**"]).check().is_ok());
        assert!(t(&[]).check().unwrap_err().contains("watches no paths"));
        assert!(t(&["etc"])
            .check()
            .unwrap_err()
            .contains("must be absolute"));
        assert!(t(&["/etc/[a"]).check().is_err());
    }
}
