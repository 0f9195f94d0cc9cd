//! The mtime rule. Content decides equality, never mtimes; but an image carries mtimes
//! (tools and caches read them), so they must be a function of the inputs too.

use super::{MtimePolicy, Options, Rule};
use crate::tree::{Entry, Tree};

/// The normalised mtime of `e`, and the rule that produced it if it changed.
/// `e` must already have its normalised content (hash) for the previous-image rule.
pub fn normalize(e: &Entry, opts: &Options, previous: Option<&Tree>) -> (i64, Option<Rule>) {
    if let Some(prev) = previous.and_then(|t| t.get(&e.path)) {
        if prev.same_but_mtime(e) {
            return (
                prev.mtime,
                (prev.mtime != e.mtime).then_some(Rule::MtimePrevious),
            );
        }
    }
    let m = match opts.mtime {
        MtimePolicy::Set => opts.epoch,
        MtimePolicy::Clamp => e.mtime.min(opts.epoch),
    };
    (m, (m != e.mtime).then_some(Rule::Mtime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Hash, Kind};

    fn file(mtime: i64, content: &[u8]) -> Entry {
        Entry {
            path: b"/f".to_vec(),
            kind: Kind::File {
                size: content.len() as u64,
                hash: Hash::of(content),
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: vec![],
        }
    }

    fn prev_tree(e: Entry) -> Tree {
        let root = Entry::dir(b"/", 0o755, 0);
        Tree::new(vec![root, e]).unwrap()
    }

    #[test]
    fn clamp_and_set() {
        let o = Options::new(100);
        assert_eq!(
            normalize(&file(150, b"a"), &o, None),
            (100, Some(Rule::Mtime))
        );
        assert_eq!(normalize(&file(50, b"a"), &o, None), (50, None));
        let o = Options {
            mtime: MtimePolicy::Set,
            ..Options::new(100)
        };
        assert_eq!(
            normalize(&file(50, b"a"), &o, None),
            (100, Some(Rule::Mtime))
        );
    }

    #[test]
    fn unchanged_content_keeps_the_previous_mtime() {
        let o = Options::new(200);
        let prev = prev_tree(file(90, b"a"));
        assert_eq!(
            normalize(&file(199, b"a"), &o, Some(&prev)),
            (90, Some(Rule::MtimePrevious))
        );
        // Changed content: the epoch rule applies.
        assert_eq!(
            normalize(&file(250, b"b"), &o, Some(&prev)),
            (200, Some(Rule::Mtime))
        );
        // Changed mode is a metadata change: not an "mtime-only" change.
        let mut m = file(250, b"a");
        m.mode = 0o600;
        assert_eq!(normalize(&m, &o, Some(&prev)), (200, Some(Rule::Mtime)));
    }
}
