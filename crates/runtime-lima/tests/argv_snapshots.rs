//! The argv of every `limactl` call, one argument per line. Pure: runs on every OS.

use std::path::PathBuf;
use std::time::Duration;

use runtime_lima::{InstanceShape, Limactl, Mount};

fn lima() -> Limactl {
    Limactl::new("/usr/local/bin/limactl", None)
}

fn shape() -> InstanceShape {
    InstanceShape {
        cpus: Some(2),
        memory_gib: Some(4.0),
        mounts: vec![
            Mount {
                path: PathBuf::from("/Users/me/project"),
                writable: true,
            },
            Mount {
                path: PathBuf::from("/Users/me/refs"),
                writable: false,
            },
        ],
    }
}

#[test]
fn every_call() {
    let l = lima();
    let name = "computeragent-42-demo-abcd1234";
    let all = [
        l.create(name, "template://debian-12", &shape()),
        l.create(name, "/Users/me/agent.yaml", &InstanceShape::default()),
        l.clone_instance("computeragent-base", name, &shape()),
        l.start(name, Duration::from_secs(600)),
        l.list(None),
        l.list(Some(name)),
        l.stop(name),
        l.delete(name),
    ];
    let text: Vec<String> = all.iter().map(|c| c.argv_lines()).collect();
    insta::assert_snapshot!(text.join("\n---\n"));
}

#[test]
fn lima_home_is_passed_in_the_environment_not_the_argv() {
    let cmd = Limactl::new("limactl", Some(PathBuf::from("/srv/lima"))).list(None);
    assert!(
        cmd.get_envs()
            .iter()
            .any(|(k, v)| k == "LIMA_HOME" && v == "/srv/lima")
    );
    assert!(!cmd.argv_lines().contains("/srv/lima"));
}

#[test]
fn list_output_parses_line_by_line() {
    let out = br#"{"name":"a","status":"Running","sshLocalPort":60022,"sshAddress":"127.0.0.1","dir":"/x"}
{"name":"b","status":"Stopped","sshLocalPort":0}
"#;
    let listed = runtime_lima::argv::parse_list(out).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].ssh_local_port, 60022);
    assert_eq!(listed[1].status, "Stopped");
    let err = runtime_lima::argv::parse_list(b"level=fatal msg=x").unwrap_err();
    assert!(err.to_string().contains("limactl list"), "{err}");
}
