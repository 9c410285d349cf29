//! The argv of every `tart` call, one argument per line. Pure: runs on every OS.

use std::path::PathBuf;
use std::time::Duration;

use runtime_tart::{SharedDir, Tart, TartNet};

fn tart() -> Tart {
    Tart::new("/opt/homebrew/bin/tart", None)
}

#[test]
fn clone_set_ip_stop_delete_list() {
    let t = tart();
    let all = [
        t.clone_vm("debian-prepared", "computeragent-42-demo-abcd1234"),
        t.set("computeragent-42-demo-abcd1234", Some(2), Some(4096)),
        t.set("computeragent-42-demo-abcd1234", None, None),
        t.ip("computeragent-42-demo-abcd1234", Duration::from_secs(1)),
        t.stop("computeragent-42-demo-abcd1234", Duration::from_secs(30)),
        t.delete("computeragent-42-demo-abcd1234"),
        t.list(),
    ];
    let text: Vec<String> = all.iter().map(|c| c.argv_lines()).collect();
    insta::assert_snapshot!(text.join("\n---\n"));
}

#[test]
fn run_blocks_all_traffic_unless_host_and_shares_directories() {
    let t = tart();
    let dirs = [
        SharedDir {
            name: "project".into(),
            path: PathBuf::from("/Users/me/project"),
            read_only: false,
        },
        SharedDir {
            name: "refs".into(),
            path: PathBuf::from("/Users/me/refs"),
            read_only: true,
        },
    ];
    let isolated = t.run("vm", &dirs, &TartNet::SoftnetBlockAll);
    let host = t.run("vm", &[], &TartNet::Nat);
    insta::assert_snapshot!(format!(
        "{}\n---\n{}",
        isolated.argv_lines(),
        host.argv_lines()
    ));
}

#[test]
fn tart_home_is_passed_in_the_environment_not_the_argv() {
    let t = Tart::new("tart", Some(PathBuf::from("/Volumes/vms/tart")));
    let cmd = t.list();
    assert!(
        cmd.get_envs()
            .iter()
            .any(|(k, v)| k == "TART_HOME" && v == "/Volumes/vms/tart")
    );
    assert!(!cmd.argv_lines().contains("/Volumes"));
}

#[test]
fn list_output_of_old_and_new_tart_parses() {
    let new =
        br#"[{"Disk":50,"Name":"a","Running":true,"Size":20,"Source":"local","State":"running"}]"#;
    let old = br#"[{"Name":"b","Size":20,"Source":"local"}]"#;
    let a = runtime_tart::argv::parse_list(new).unwrap();
    assert_eq!(a[0].name, "a");
    assert_eq!(a[0].running, Some(true));
    let b = runtime_tart::argv::parse_list(old).unwrap();
    assert_eq!(b[0].state, None);
    let err = runtime_tart::argv::parse_list(b"no VMs").unwrap_err();
    assert!(err.to_string().contains("tart list"), "{err}");
}
