//! First boot: what an image needs created on each machine because the build removed it
//! as machine state. Today that is sshd's host keys: an image that runs `ssh.service`
//! gets `/usr/lib/imager/firstboot` (a script that creates every host key sshd is
//! configured for and that does not exist, never replacing one) and a unit that runs
//! it before ssh, enabled by static `.wants` links under `/usr/lib/systemd/system` (no
//! state in `/etc`). Everything else a first boot needs, systemd does itself: an empty
//! machine-id is a first boot, a missing random seed is made, a missing hostname falls
//! back to the one the machine is given. The files are part of the image, so they appear
//! in its text manifest and in `imager diff`; the keys they create are local state
//! (`/etc/ssh/ssh_host_*`), which pushes leave alone.
//!
//! A manifest turns it off with `first_boot = false`.

use crate::contract::IMAGE_DIR;
use crate::error::Result;
use crate::fsx;
use std::path::Path;

const SCRIPT: &str = include_str!("firstboot/firstboot.sh");
const UNIT: &str = include_str!("firstboot/imager-firstboot.service");
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
}
