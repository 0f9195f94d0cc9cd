//! The examples each subcommand's `--help` ends with, as ripgrep's and fd's do: real
//! invocations, kept here together so that a changed flag is changed in one place.

pub const SERVE: &str = "Examples:
  syncer serve --root /                       # what `push` starts over ssh on a host
  syncer serve --root /srv/chroots/web1       # a host's root that is not /";

pub const PUSH: &str = "Examples:
  syncer push web ssh://root@web1             # the image named web onto one host
  syncer push web~1 ssh://web1 ssh://web2 -j 2 # back to the name's previous image
  syncer push web local:/srv/chroots/test     # a root on this machine (zstd level 1)
  syncer push web ssh://web1 --dry-run        # what would change, path by path
  syncer push web ssh://web1 --policy trust.toml # only if signed as the policy says
  syncer -q push web local:/srv/chroots/test --store /srv/imager # no progress, another store
  syncer push web ssh://web1 --mirror http://ams1-cache:8080/ --json";

pub const STATUS: &str = "Examples:
  syncer status ssh://web1 ssh://web2         # image, drift and trust of each host
  syncer status --inventory fleet.toml        # every host of a fleet, with its last rollout
  syncer status ssh://web1 --rehash --json    # hash every file, ignoring the hash cache";

pub const ROLLOUT: &str = "Examples:
  syncer rollout web --inventory fleet.toml   # colo by colo, canary first, asks between colos
  syncer rollout web --inventory fleet.toml --dry-run   # the whole plan, nothing written
  syncer rollout web --inventory fleet.toml --limit ams1 --yes --json
  syncer rollout --resume --inventory fleet.toml        # after a stop";

pub const ROLLBACK: &str = "Examples:
  syncer rollback --inventory fleet.toml --colo ams1    # each host to its previous image
  syncer rollback --inventory fleet.toml --to web~1     # every host to one image
  syncer rollback --inventory fleet.toml --limit 'ssh://ams1-web*'  # only these hosts";

pub const ABANDON_COMMIT: &str = "Examples:
  syncer abandon-commit ssh://web1            # drop the commit it keeps failing to finish
  syncer push web ssh://web1                  # then push an image again";

pub const CACHE_VERIFY: &str = "Examples:
  syncer cache verify                         # the store's cache, STORE/syncer-cache
  syncer cache verify --cache /var/cache/syncer --repair";

pub const CACHE_PRUNE: &str = "Examples:
  syncer cache prune --max-size 20G --dry-run  # what would go
  syncer cache prune --max-size 20G            # e.g. daily, from cron or a systemd timer";

pub const DRIFT: &str = "Examples:
  syncer drift ssh://web1                     # where web1 differs from the image it runs
  syncer drift local:/srv/chroots/test --json
  syncer drift ssh://web1 --rehash            # hash every file, ignoring the hash cache";

pub const PUBLISH: &str = "Examples:
  syncer publish web --from web~1 --to /srv/syncer-pub   # for hosts at web~1 and empty ones
  syncer publish web --to /srv/syncer-pub --json";

pub const COMPLETIONS: &str = "Examples:
  syncer completions bash > /usr/share/bash-completion/completions/syncer
  syncer completions zsh > /usr/share/zsh/vendor-completions/_syncer
  syncer completions fish > /usr/share/fish/vendor_completions.d/syncer.fish";

pub const MANPAGES: &str = "Examples:
  syncer manpages /usr/share/man/man1         # then: man syncer-push
  syncer manpages /tmp/man && man -l /tmp/man/syncer-rollout.1";

/// A subcommand's `ownership_help` followed by its examples.
pub fn with_ownership(examples: &str) -> String {
    format!("{}\n\n{examples}", super::ownership_help())
}
