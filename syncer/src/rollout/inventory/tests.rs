//! The inventory's parsing: keys, policies merged, waves, refusals.

use super::*;

#[test]
fn the_example_inventory_is_valid() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/example.toml");
    let inv = Inventory::load(&p).unwrap();
    let names: Vec<&str> = inv.colos.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["test", "ams1", "iad2"]);
    assert_eq!(inv.colos[0].policy.pause, Pause::None);
    assert_eq!(inv.colos[1].policy.pause, Pause::Confirm);
    assert_eq!(inv.colos[2].policy.bandwidth_total, Some(100_000_000));
    assert!(inv.colos[1].policy.require_restarted);
    assert_eq!(inv.colos[1].mirrors.len(), 2);
    assert!(inv.colos[0].mirrors.is_empty());
    assert!(!inv.colos[0].policy.require_restarted);
    // The production colo's signing policy, relative to the inventory, loads.
    let signing = inv.colos[1].policy.require_signed.clone().unwrap();
    assert_eq!(signing, p.parent().unwrap().join("release-trust.toml"));
    let policy = imager::sign::TrustPolicy::load(&signing).unwrap();
    assert_eq!(policy.summary(), "1 requirement, 2 trusted keys");
    assert_eq!(inv.colos[0].policy.require_signed, None);
    let sizes: Vec<usize> = waves(&inv.colos[1])
        .unwrap()
        .iter()
        .map(|w| w.len())
        .collect();
    assert_eq!(sizes, [1, 2, 2]);
    // Connection settings: the host's own over its colo's over the global ones.
    let db = &inv.colos[1].hosts[4];
    assert_eq!(db.spec.to_string(), "ssh://ams1-db01.example.net");
    let t = db.connect.transport(&Default::default());
    assert_eq!((t.user.as_deref(), t.port), (Some("deploy"), Some(2222)));
    assert_eq!(t.agent, "/opt/syncer/bin/syncer");
    assert_eq!(t.ssh_options, ["BatchMode=yes", "ConnectTimeout=10"]);
    let web = inv.colos[2].hosts[0].connect.transport(&Default::default());
    assert_eq!((web.user.as_deref(), web.port), (Some("root"), None));
    assert_eq!(web.agent, crate::transport::DEFAULT_AGENT);
    assert_eq!(inv.colos[0].policy.hook_timeout.as_secs(), 300);
}

#[test]
fn a_bad_mirror_is_refused_naming_the_colo() {
    for (m, says) in [
        ("https://c/", "only http:// mirrors"),
        ("http://c", "must end in '/'"),
        ("http:///", "names no host"),
    ] {
        let text =
            format!("[[colo]]\nname = \"ams\"\nhosts = [\"local:/x\"]\nmirrors = [\"{m}\"]\n");
        let e = Inventory::parse(&text, Path::new("f.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("f.toml: colo ams") && e.contains(says),
            "{m}: {e}"
        );
    }
}

#[test]
fn inventories_parse_merge_and_split_into_waves() {
    let text = r#"
[policy]
canary = 1
waves = [2, "50%"]
failure_budget = "10%"
pause = "none"
bandwidth_per_host = "2MB"
ionice = "best-effort:7"
[policy.health]
command = "true"

[[colo]]
name = "test"
hosts = ["local:/h/1", "local:/h/2"]
[colo.policy]
canary = 0
pause = "30"

[[colo]]
name = "ams"
hosts = ["local:/h/3", "local:/h/4", "local:/h/5", "local:/h/6", "local:/h/7", "local:/h/8", "local:/h/9"]
"#;
    let inv = Inventory::parse(text, Path::new("fleet.toml")).unwrap();
    assert_eq!(inv.colos[0].policy.canary, 0);
    assert_eq!(inv.colos[0].policy.pause, Pause::Seconds(30));
    assert_eq!(inv.colos[1].policy.pause, Pause::None);
    assert_eq!(inv.colos[1].policy.bandwidth_per_host, Some(2_000_000));
    assert_eq!(inv.colos[1].policy.ionice, Some(IoNice::BestEffort(7)));
    assert_eq!(inv.colos[1].policy.health.as_ref().unwrap().timeout, 60);
    assert!(!inv.colos[1].policy.require_restarted);
    let sizes: Vec<usize> = waves(&inv.colos[1])
        .unwrap()
        .iter()
        .map(|w| w.len())
        .collect();
    assert_eq!(sizes, [1, 2, 4]);
    let sizes: Vec<usize> = waves(&inv.colos[0])
        .unwrap()
        .iter()
        .map(|w| w.len())
        .collect();
    assert_eq!(sizes, [2]);
    assert_eq!(Size::Text("10%".into()).of(7).unwrap(), 1);
    assert_eq!(Size::Text("0%".into()).of(7).unwrap(), 0);

    for (bad, want) in [
        ("[[colo]]\nname = \"a\"\nhosts = [\"ftp://x\"]\n", "fleet.toml: colo a: bad host"),
        ("[[colo]]\nname = \"a\"\nhosts = []\nfoo = 1\n", "fleet.toml:4: unknown field"),
        (
            "[policy]\nionice = \"fast\"\n[[colo]]\nname = \"a\"\nhosts = [\"local:/x\"]\n",
            "ionice \"fast\"",
        ),
        (
            "[[colo]]\nname = \"a\"\nhosts = [\"local:/x\"]\n[[colo]]\nname = \"b\"\nhosts = [\"local:/x\"]\n",
            "listed twice",
        ),
        ("[policy]\nbandwidth_total = \"fast\"\n[[colo]]\nname = \"a\"\nhosts = [\"local:/x\"]\n", "bad rate"),
        // One host root however it is spelled.
        (
            "[[colo]]\nname = \"a\"\nhosts = [\"ssh://root@h\"]\n[[colo]]\nname = \"b\"\nhosts = [\"ssh://root@H:22/\"]\n",
            "colo b: host ssh://root@H:22/ is listed twice (as ssh://root@h in colo a",
        ),
        (
            "[[colo]]\nname = \"a\"\nhosts = [\"local:/srv/a\", \"local:/srv/b/../a/\"]\n",
            "host local:/srv/b/../a/ is listed twice (as local:/srv/a in colo a",
        ),
        // Percentages out of range name the file, the colo and the setting.
        (
            "[policy]\nwaves = [\"150%\"]\n[[colo]]\nname = \"a\"\nhosts = [\"local:/x\"]\n",
            "fleet.toml: colo a: waves: bad size \"150%\": a percentage is 0% to 100%",
        ),
        (
            "[policy]\nfailure_budget = \"200%\"\n[[colo]]\nname = \"a\"\nhosts = [\"local:/x\"]\n",
            "fleet.toml: colo a: failure_budget: bad size \"200%\"",
        ),
        ("[[colo]]\nname = \"\"\nhosts = [\"local:/x\"]\n", "a [[colo]] has an empty name"),
        ("[[colo]]\nname = \"a\"\nhosts = []\n", "fleet.toml: colo a: lists no hosts"),
        (
            "[policy.health]\ncommand = \" \"\n[[colo]]\nname = \"a\"\nhosts = [\"local:/x\"]\n",
            "the health command is empty",
        ),
    ] {
        let e = Inventory::parse(bad, Path::new("fleet.toml")).unwrap_err().to_string();
        assert!(e.contains(want), "{bad:?}: {e}");
    }
}
