//! The bwrap argv for every option, one argument per line (run by `cargo xtask snapshots`).
//! Pure: compiled and run on every OS, nothing is spawned.

use std::path::PathBuf;

use runtime_bwrap::jail::{JailCommand, JailConfig, JailNetwork, ReadOnlyBind, SystemEntry};

/// A jail on a fixed, made-up host layout, so snapshots hold no temp paths.
fn base() -> JailConfig {
    JailConfig {
        bwrap: PathBuf::from("/usr/bin/bwrap"),
        system: vec![
            SystemEntry::ReadOnly("/usr".into()),
            SystemEntry::Symlink {
                target: "usr/bin".into(),
                link: "/bin".into(),
            },
            SystemEntry::Symlink {
                target: "usr/lib".into(),
                link: "/lib".into(),
            },
            SystemEntry::Symlink {
                target: "usr/lib64".into(),
                link: "/lib64".into(),
            },
        ],
        etc_files: runtime_bwrap::jail::default_etc_files(),
        passwd_fd: 10,
        group_fd: 11,
        node: "/usr/bin/node".into(),
        harness: "/tmp/computeragent-bwrap/boot-X/harness.mjs".into(),
        node_modules: "/var/lib/computeragent/stage/node_modules".into(),
        run_dir: "/tmp/computeragent-bwrap/boot-X/run".into(),
        workdir: "/tmp/computeragent-bwrap/boot-X/workdir".into(),
        extra_ro: Vec::new(),
        project: None,
        network: JailNetwork::Isolated,
        tmp_bytes: None,
        seccomp_fds: vec![12, 13, 14],
        info_fd: Some(15),
        command: JailCommand::Harness { env_fd: 16 },
        env: Vec::new(),
    }
}

#[test]
fn harness_with_defaults() {
    insta::assert_snapshot!(base().command().argv_lines());
}

#[test]
fn host_network_keeps_the_net_namespace() {
    let mut c = base();
    c.network = JailNetwork::Host;
    insta::assert_snapshot!(c.command().argv_lines());
}

#[test]
fn tmp_size_extra_binds_and_variables() {
    let mut c = base();
    c.tmp_bytes = Some(256 << 20);
    c.extra_ro = vec![ReadOnlyBind {
        source: "/srv/datasets".into(),
        dest: "/data".into(),
    }];
    c.env = vec![("FEATURE".into(), "on".into())];
    insta::assert_snapshot!(c.command().argv_lines());
}

#[test]
fn projects_are_bound_at_their_own_path_read_write_or_read_only() {
    let mut c = base();
    c.project = Some(runtime_bwrap::jail::ProjectBind {
        source: "/home/dev/app".into(),
        dest: "/home/dev/app".into(),
        writable: true,
    });
    insta::assert_snapshot!("project_read_write", c.command().argv_lines());
    c.project = Some(runtime_bwrap::jail::ProjectBind {
        source: "/tmp/computeragent-bwrap/boot-X/binds/0".into(),
        dest: "/home/dev/app".into(),
        writable: false,
    });
    insta::assert_snapshot!("project_read_only", c.command().argv_lines());
}

#[test]
fn exec_runs_the_command_in_place_of_the_harness() {
    let mut c = base();
    c.info_fd = None;
    c.command = JailCommand::Exec(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()]);
    c.env = vec![("GIVEN".into(), "yes".into())];
    insta::assert_snapshot!(c.command().argv_lines());
}

#[test]
fn the_environment_is_cleared_and_carries_no_secret() {
    let cmd = base().command();
    assert!(cmd.is_env_cleared());
    let args: Vec<String> = cmd
        .get_args()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert!(args.iter().any(|a| a == "--clearenv"));
    assert!(
        !args
            .iter()
            .any(|a| a.contains("TOKEN") || a.contains("KEY"))
    );
}
