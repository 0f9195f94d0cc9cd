//! First boot: what an image needs created on each machine because the build removed it
//! as machine state. An image that runs `ssh.service` gets `/usr/lib/imager/firstboot`
//! (a script that creates every host key sshd is configured for and that does not exist,
//! and `/etc/resolv.conf` and an `/etc/hosts` naming localhost if there are none, never
//! replacing anything) and a unit that
//! runs it before ssh, enabled by static `.wants` links under `/usr/lib/systemd/system`
//! (no state in `/etc`). The resolv.conf it writes holds only a comment: no nameserver,
//! so glibc keeps its documented fallback (127.0.0.1), but tools that read or edit the
//! file find one. Everything else a first boot needs, systemd does itself: an empty
//! machine-id is a first boot, a missing random seed is made, and a missing hostname
//! falls back to the one the machine is given (container manager, DHCP) or systemd's
//! compiled-in one; an `/etc/hostname` written here would be a static name overriding
//! those, so none is. The files are part of the image, so they appear in its text
//! manifest and in `imager diff`; what they create is local state (`/etc/ssh/ssh_host_*`,
//! `/etc/resolv.conf`), which pushes leave alone.
//!
//! A manifest turns it off with `first_boot = false`.

use crate::contract::IMAGE_DIR;
use crate::error::Result;
use crate::fsx;
use std::path::Path;

const SCRIPT: &str = include_str!("firstboot/firstboot.sh");
const UNIT: &str = include_str!("firstboot/imager-firstboot.service");
/// The systemd unit's file name, under `/usr/lib/systemd/system`.
pub const UNIT_NAME: &str = "imager-firstboot.service";
/// The units that pull it in.
const WANTED_BY: &[&str] = &["ssh.service", "ssh.socket"];
const UNIT_DIR: &str = "usr/lib/systemd/system";

/// Whether the tree at `root` runs sshd (Debian's unit, merged /usr or not).
fn has_ssh(root: &Path) -> bool {
    [
        "usr/lib/systemd/system/ssh.service",
        "lib/systemd/system/ssh.service",
    ]
    .iter()
    .any(|p| fsx::symlink_metadata(root.join(p)).is_ok())
}

/// Installs the first-boot files into the tree at `root` if it runs sshd; returns
/// whether it did. Modes are set explicitly (the builder's umask must not matter).
pub fn install(root: &Path) -> Result<bool> {
    if !has_ssh(root) {
        return Ok(false);
    }
    let dir = root.join(IMAGE_DIR);
    fsx::create_dir_all(&dir)?;
    let script = dir.join("firstboot");
    fsx::write(&script, SCRIPT)?;
    fsx::set_mode(&script, 0o755)?;
    let units = root.join(UNIT_DIR);
    fsx::create_dir_all(&units)?;
    let unit = units.join(UNIT_NAME);
    fsx::write(&unit, UNIT)?;
    fsx::set_mode(&unit, 0o644)?;
    for w in WANTED_BY {
        let wants = units.join(format!("{w}.wants"));
        if fsx::symlink_metadata(&wants).is_err() {
            fsx::create_dir(&wants)?;
            fsx::set_mode(&wants, 0o755)?;
        }
        let link = wants.join(UNIT_NAME);
        let _ = fsx::remove_file(&link);
        fsx::symlink(&format!("../{UNIT_NAME}"), &link)?;
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up and read files directly
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_tree_with_ssh_gets_the_unit_script_and_links() {
        let none = tempfile::tempdir().unwrap();
        assert!(!install(none.path()).unwrap());
        assert!(!none.path().join(IMAGE_DIR).exists());

        let d = tempfile::tempdir().unwrap();
        let units = d.path().join(UNIT_DIR);
        std::fs::create_dir_all(&units).unwrap();
        std::fs::write(units.join("ssh.service"), "[Service]\n").unwrap();
        assert!(install(d.path()).unwrap());
        // Twice is the same as once (a rebuild, a hook that ran before).
        assert!(install(d.path()).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&d.path().join(IMAGE_DIR).join("firstboot")), 0o755);
        assert_eq!(mode(&units.join(UNIT_NAME)), 0o644);
        for w in WANTED_BY {
            let link = units.join(format!("{w}.wants")).join(UNIT_NAME);
            assert_eq!(
                std::fs::read_link(&link).unwrap(),
                Path::new("../imager-firstboot.service")
            );
        }
        let unit = std::fs::read_to_string(units.join(UNIT_NAME)).unwrap();
        assert!(unit.contains("Before=ssh.service ssh.socket"), "{unit}");
    }

    /// Runs the installed script against `root` instead of / (its optional argument).
    fn run_script(root: &Path) -> String {
        let out = std::process::Command::new("/bin/sh")
            .arg(root.join(IMAGE_DIR).join("firstboot"))
            .arg(root)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "firstboot failed: {text}");
        text
    }

    /// A tree that runs sshd with one configured host key, with the first-boot files.
    fn machine(with_key: bool) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let units = d.path().join(UNIT_DIR);
        std::fs::create_dir_all(&units).unwrap();
        std::fs::write(units.join("ssh.service"), "[Service]\n").unwrap();
        std::fs::create_dir_all(d.path().join("etc/ssh")).unwrap();
        std::fs::write(
            d.path().join("etc/ssh/sshd_config"),
            "HostKey /etc/ssh/ssh_host_ed25519_key\n",
        )
        .unwrap();
        if with_key {
            std::fs::write(d.path().join("etc/ssh/ssh_host_ed25519_key"), "a key").unwrap();
        }
        assert!(install(d.path()).unwrap());
        d
    }

    #[test]
    fn first_boot_makes_a_resolv_conf_without_nameserver_and_keeps_any_there() {
        let d = machine(true);
        let resolv = d.path().join("etc/resolv.conf");
        let said = run_script(d.path());
        assert!(said.contains("created /etc/resolv.conf"), "{said}");
        let text = std::fs::read_to_string(&resolv).unwrap();
        assert!(
            text.starts_with('#') && text.contains("first boot") && !text.contains("nameserver "),
            "{text:?}"
        );
        let mode = std::fs::metadata(&resolv).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        let etc: Vec<_> = std::fs::read_dir(d.path().join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        // resolv.conf, hosts and ssh/.
        assert_eq!(etc.len(), 3, "a temporary file was left: {etc:?}");
        let hosts = std::fs::read_to_string(d.path().join("etc/hosts")).unwrap();
        assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts:?}");
        // The configured key exists: not replaced.
        let key = d.path().join("etc/ssh/ssh_host_ed25519_key");
        assert_eq!(std::fs::read(&key).unwrap(), b"a key");

        // One the machine has (its DHCP client's, an admin's) stays as it is.
        std::fs::write(&resolv, "nameserver 192.0.2.1\n").unwrap();
        assert!(!run_script(d.path()).contains("resolv.conf"));
        assert_eq!(std::fs::read(&resolv).unwrap(), b"nameserver 192.0.2.1\n");

        // So does a dangling symlink (systemd-resolved's stub link before it runs).
        std::fs::remove_file(&resolv).unwrap();
        std::os::unix::fs::symlink("../run/systemd/resolve/stub-resolv.conf", &resolv).unwrap();
        run_script(d.path());
        assert_eq!(
            std::fs::read_link(&resolv).unwrap(),
            Path::new("../run/systemd/resolve/stub-resolv.conf")
        );
    }

    #[test]
    fn first_boot_makes_the_configured_host_key() {
        if !Path::new("/usr/bin/ssh-keygen").exists() {
            eprintln!("skipped: no ssh-keygen (apt-get install openssh-client)");
            return;
        }
        let d = machine(false);
        let said = run_script(d.path());
        assert!(said.contains("created ed25519 host key"), "{said}");
        let key = d.path().join("etc/ssh/ssh_host_ed25519_key");
        let first = std::fs::read(&key).unwrap();
        assert!(d.path().join("etc/ssh/ssh_host_ed25519_key.pub").exists());
        // Once: a second boot keeps it.
        run_script(d.path());
        assert_eq!(std::fs::read(&key).unwrap(), first);
    }
}
