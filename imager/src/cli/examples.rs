//! The examples each command's `--help` (and man page) ends with, in one place so that a
//! change of flags and its examples are reviewed together. Each starts with the line
//! `Examples:`, which the man pages turn into their EXAMPLES section.

pub(crate) const IMAGER: &str = "\
Examples:
  # Store a root filesystem under the name web (the previous web stays as web~1)
  imager import rootfs/ --name web
  # Lock and build the image a manifest describes (as root)
  imager lock manifests/base.toml && imager build manifests/base.toml
  # What changed since the previous build, for the reviewer
  imager diff base~1 base
  # Every option of one command
  imager help export";

pub(crate) const IMPORT: &str = "\
Examples:
  # Store a directory under the name web
  imager import rootfs/ --name web
  # Normalise while importing an archive, leaving out the hosts' local state
  imager import web.tar.zst --normalize --epoch 1700000000 \\
      --exclude-from exclude-lists/local-state.txt --name web
  # An archive on standard input
  tar -C rootfs -c . | imager import - --json";

pub(crate) const EXPORT: &str = "\
Examples:
  # The deterministic archive: the same bytes on every export
  imager export web --tar web.tar.zst
  # The tree with its owners, modes, xattrs and devices (as root)
  imager export web --dir /srv/web-root
  # An OCI layout, then pushed to a registry
  imager export web --oci web-oci --tag 1.4
  skopeo copy oci:web-oci:1.4 docker://registry.example/web:1.4
  # An ext4 filesystem image to boot a VM from (as root)
  imager export web --disk web.img";

pub(crate) const LS: &str = "\
Examples:
  # Every entry of the image
  imager ls web
  # One directory and what is below it
  imager ls web /etc/ssh
  # A file as the previous image had it
  imager ls web~1 /usr/bin/sudo";

pub(crate) const SHOW: &str = "\
Examples:
  # ID, names and totals
  imager show web
  # The canonical manifest text the ID is the hash of
  imager show web --manifest | less
  # The same facts for a script
  imager show 3f1c9a0b --json";

pub(crate) const HASH: &str = "\
Examples:
  # The ID rootfs/ would get from `imager import rootfs/`
  imager hash rootfs/
  # The ID it would get from `imager import rootfs/ --normalize --epoch 1700000000`
  imager hash rootfs/ --normalize --epoch 1700000000";

pub(crate) const NORMALIZE: &str = "\
Examples:
  # Clamp mtimes at the epoch, clear gzip and pyc headers' timestamps
  SOURCE_DATE_EPOCH=1700000000 imager normalize rootfs/
  # Every mtime set to the epoch, listing each path changed
  imager normalize rootfs/ --epoch 1700000000 --mtime set -v";

pub(crate) const FSCK: &str = "\
Examples:
  # Check the default store (exit status 1 on any problem)
  imager fsck
  # Another store, with a report for monitoring
  imager --store /srv/imager fsck --json";

pub(crate) const HISTORY: &str = "\
Examples:
  # The images web has pointed at, newest first
  imager history web
  # Then what the last change of web changed
  imager diff web~1 web";

pub(crate) const LIST: &str = "\
Examples:
  # Every image, newest first
  imager list
  # Whole IDs, as JSON
  imager list --full --json";

pub(crate) const TAG: &str = "\
Examples:
  # Roll web back to an earlier image (the newer one becomes web~1)
  imager tag 9e04b1c6 web
  # A second name for the current web image
  imager tag web web-stable";

pub(crate) const RM: &str = "\
Examples:
  # Remove an unnamed image and free its objects
  imager rm 77ab20d94c13 --gc
  # Remove a named image, and the name with it
  imager rm web-test --force";

pub(crate) const GC: &str = "\
Examples:
  # Free the objects no image uses
  imager gc
  # What keeping 3 images per name and dropping unnamed ones would free
  imager gc --keep 3 --unnamed --dry-run
  # Also remove the cached .debs no image's lock lists, and the install cache
  imager gc --debs --build-cache";

pub(crate) const DIFF: &str = "\
Examples:
  # What the new build changes, for the reviewer: a section per package, folded to fit
  imager diff base~1 base
  # How much changed where: per package and per top directory, as git diff --stat
  imager diff base~1 base --stat
  # Everything, without man pages, cut at 2000 lines
  imager diff base~1 base --full --exclude '/usr/share/man/**' --max-lines 2000
  # The default view with at most 10 lines of each diff, not paged
  imager diff base~1 base --max-diff-lines 10 --no-pager
  # One package's upgrade: changelog entries and files, as Markdown
  imager diff A B --package openssl --markdown
  # One HTML page to open in a browser or attach to a ticket (self-contained, no network)
  imager diff base~1 base --html review.html
  # Everything in the page, and the JSON of the same report on standard output
  imager diff base~1 base --html review.html --full --json > review.json
  # Archives are imported first
  imager diff old.tar.zst new.tar.zst --json
  # Only the counts, for /etc
  imager diff A B --path '/etc/**' --summary";

pub(crate) const TRY_PACKAGE: &str = "\
Examples:
  # What installing these would add, change and remove
  imager try-package base tinyproxy_*.deb tinyproxy-bin_*.deb
  # Only the summary, and what it does under /etc
  imager try-package base hello_2.10-3_amd64.deb --summary --path '/etc/**'
  # Counts per package and directory, then everything the package's scripts did
  imager try-package base hello_2.10-3_amd64.deb --stat
  imager try-package base hello_2.10-3_amd64.deb --full --exclude '/usr/share/**'
  # The same report as an HTML page
  imager try-package base tinyproxy_*.deb tinyproxy-bin_*.deb --html try.html";

pub(crate) const PACKAGES: &str = "\
Examples:
  # Name, version, architecture, source package
  imager packages base
  # An SPDX 2.3 SBOM, and a CycloneDX 1.5 one
  imager packages base --spdx > base.spdx.json
  imager packages base --cyclonedx > base.cdx.json";

pub(crate) const LOCK: &str = "\
Examples:
  # Resolve the packages and write manifests/base.lock
  imager lock manifests/base.toml
  # The same, and list the locked packages as JSON
  imager lock manifests/base.toml --json";

pub(crate) const BUILD: &str = "\
Examples:
  # Build from manifests/base.lock (as root) and point base at the image
  imager build manifests/base.toml
  # Resolve again first if the manifest changed since its lock
  imager build manifests/base.toml --update-lock
  # Keep a failed build's chroot; unchanged files keep the previous image's mtimes
  imager build manifests/base.toml --keep-failed --previous base
  # After editing an overlay: from the install cache, without provenance (then
  # `imager diff python-app~1 python-app` shows the edit)
  imager build manifests/python-app.toml --no-provenance
  # Install the packages from scratch (and replace the install cache's entry)
  imager build manifests/base.toml --no-cache";

pub(crate) const REBUILD: &str = "\
Examples:
  # Build base again from what its build stored (exit status 1 on any difference)
  imager rebuild base
  # In a builder environment unlike the original's: umask, time zone, locale, clock...
  imager rebuild base --vary all
  # Only some of those, with the result as JSON
  imager rebuild base --vary umask,tz --json";

pub(crate) const BUILD_INFO: &str = "\
Examples:
  # Tool version, epoch and phase timings
  imager build-info base
  # What mmdebstrap and the hooks printed
  imager build-info base --what log | less
  # The SLSA provenance of the build
  imager build-info base --what provenance";

pub(crate) const KEY: &str = "\
Examples:
  # A key for a signer, encrypted; prints the allowed_signers line for hosts
  imager key generate --out release.key --comment release@example.com \\
      --passphrase-file release.pass
  # Unencrypted, for a test store
  imager key generate --out test.key";

pub(crate) const SIGN: &str = "\
Examples:
  # Approve base for prod, with its build provenance
  imager sign base --key release.key --note \"approved for prod\" --provenance
  # Sign with OpenSSH elsewhere: print the statement, sign it, store the signature
  imager sign base --print-statement --note reviewed > s.msg
  ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n imager-image s.msg
  imager sign base --add s.msg s.msg.sig";

pub(crate) const VERIFY: &str = "\
Examples:
  # Signed by this key? (exit status 1 unless verified)
  imager verify base --key release.key.pub
  # As a host with this trust policy would judge it, provenance included
  imager verify base --policy /etc/syncer/trust.toml --provenance
  # Against a directory of allowed_signers and .pub files, as JSON
  imager verify base --trusted keys/ --json";

pub(crate) const COMPLETIONS: &str = "\
Examples:
  # Install for bash, zsh and fish (as root)
  imager completions bash > /usr/share/bash-completion/completions/imager
  imager completions zsh > /usr/share/zsh/vendor-completions/_imager
  imager completions fish > /usr/share/fish/vendor_completions.d/imager.fish";

pub(crate) const MANPAGES: &str = "\
Examples:
  # Install them (as root), then read one
  imager manpages /usr/share/man/man1 && man imager-export
  # Write them elsewhere and read one without installing it
  imager manpages man/ && man -l man/imager-export.1";
