//! Isolation probes: commands that run inside a real sandbox and try to see or touch what they
//! must not. Every claim of the runtime's docs has a probe here.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;

use runtime_bwrap::ExecOutput;
use substrate_core::{BootSpec, NetworkPolicy, ResourceLimits, Substrate};

mod common;

async fn sh(spec: &BootSpec, script: &str) -> ExecOutput {
    let substrate = common::substrate().unwrap();
    substrate
        .exec(spec, ["/bin/sh", "-c", script])
        .await
        .unwrap()
}

fn stdout(out: &ExecOutput) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_ok(out: &ExecOutput) {
    assert!(
        out.status.success(),
        "probe failed ({}): stdout {:?} stderr {:?}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn root_shows_only_the_jails_entries() {
    let out = sh(&BootSpec::new("probe"), "ls -A /").await;
    assert_ok(&out);
    let seen: BTreeSet<String> = stdout(&out).lines().map(str::to_owned).collect();
    let mut expected: BTreeSet<String> = ["dev", "etc", "opt", "proc", "run", "tmp", "workdir"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    for p in ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        if std::path::Path::new("/").join(p).exists() {
            expected.insert(p.to_owned());
        }
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn host_secrets_and_homes_are_absent() {
    let out = sh(
        &BootSpec::new("probe"),
        "for p in /etc/shadow /etc/gshadow /root /home /root/.ssh /etc/sudoers /var /srv /mnt /work; do \
           if [ -e \"$p\" ]; then echo \"visible $p\"; fi; done; \
         cat /etc/passwd",
    )
    .await;
    assert_ok(&out);
    let text = stdout(&out);
    assert!(!text.contains("visible"), "{text}");
    // The sandbox's own accounts, none of the host's.
    let users: Vec<&str> = text.lines().filter_map(|l| l.split(':').next()).collect();
    assert_eq!(users, ["root", "agent", "nobody"]);
}

#[tokio::test]
async fn no_host_variable_reaches_the_sandbox() {
    // SAFETY: nextest runs each test in its own process; nothing else reads the environment
    // concurrently in this one.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SUBSTRATE_CANARY_SECRET", "canary-7f3a");
    }
    let spec = BootSpec::new("probe").env("GIVEN", "yes");
    let out = sh(&spec, "env; cat /proc/1/environ | tr '\\0' '\\n'").await;
    assert_ok(&out);
    let text = stdout(&out);
    assert!(!text.contains("canary-7f3a"), "{text}");
    assert!(text.contains("GIVEN=yes"), "{text}");
    let names: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for name in &names {
        assert!(
            [
                "PATH", "HOME", "USER", "LANG", "TMPDIR", "GIVEN", "PWD", "SHLVL", "_"
            ]
            .contains(name),
            "unexpected variable {name} in the sandbox: {text}"
        );
    }
}

#[tokio::test]
async fn processes_of_the_host_are_invisible() {
    let out = sh(
        &BootSpec::new("probe"),
        "for p in /proc/[0-9]*; do cat $p/comm; done 2>/dev/null",
    )
    .await;
    assert_ok(&out);
    let comms: BTreeSet<String> = stdout(&out).lines().map(str::to_owned).collect();
    for c in &comms {
        assert!(
            ["bwrap", "sh", "cat"].contains(&c.as_str()),
            "host process visible: {comms:?}"
        );
    }
}

#[tokio::test]
async fn only_workdir_and_tmp_are_writable() {
    let out = sh(
        &BootSpec::new("probe"),
        "for p in /usr/x /etc/x /x /opt/harness/x /opt/harness/node_modules/x /proc/x /dev/x; do \
           if touch $p 2>/dev/null; then echo \"wrote $p\"; fi; done; \
         touch /workdir/ok && touch /tmp/ok && echo fine",
    )
    .await;
    assert_ok(&out);
    assert_eq!(stdout(&out).trim(), "fine");
}

#[tokio::test]
async fn no_capabilities_no_new_privs_and_seccomp_on() {
    let out = sh(
        &BootSpec::new("probe"),
        "id -u; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status",
    )
    .await;
    assert_ok(&out);
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("1000"),
        "not the sandbox's non-root uid: {text}"
    );
    for line in lines {
        let (key, value) = line.split_once(':').unwrap();
        let value = value.trim();
        match key {
            "NoNewPrivs" => assert_eq!(value, "1"),
            "Seccomp" => assert_eq!(value, "2", "seccomp is not in filter mode"),
            _ => assert_eq!(value, "0000000000000000", "{key} is not empty"),
        }
    }
}

/// Calls each syscall through perl's `syscall` and prints `NAME RESULT ERRNO`.
fn syscall_probe(calls: &[(&str, i64, &str)]) -> String {
    let mut script = String::from("$| = 1; ");
    for (name, nr, args) in calls {
        script.push_str(&format!(
            "{{ my $r = syscall({nr}{args}); my $e = $! + 0; \
               if ($r == 0 && $$ != $main::pid) {{ exit 0 }} print \"{name} $r $e\\n\"; }} "
        ));
    }
    format!("$main::pid = $$; {script}")
}

#[tokio::test]
async fn seccomp_refuses_the_jail_breakers() {
    let calls: Vec<(&str, i64, &str)> = vec![
        ("ptrace", libc::SYS_ptrace, ", 0, 0, 0, 0"),
        ("mount", libc::SYS_mount, ", 0, 0, 0, 0, 0"),
        ("umount2", libc::SYS_umount2, ", 0, 0"),
        ("unshare", libc::SYS_unshare, ", 0"),
        ("unshare_user", libc::SYS_unshare, ", 0x10000000"),
        ("setns", libc::SYS_setns, ", 0, 0"),
        ("keyctl", libc::SYS_keyctl, ", 0, 0, 0, 0, 0"),
        ("add_key", libc::SYS_add_key, ", 0, 0, 0, 0, 0"),
        ("bpf", libc::SYS_bpf, ", 0, 0, 0"),
        (
            "perf_event_open",
            libc::SYS_perf_event_open,
            ", 0, 0, 0, 0, 0",
        ),
        ("userfaultfd", libc::SYS_userfaultfd, ", 0"),
        ("clone_newuser", libc::SYS_clone, ", 0x10000011, 0, 0, 0, 0"),
        ("clone_newns", libc::SYS_clone, ", 0x00020011, 0, 0, 0, 0"),
        ("kexec_load", libc::SYS_kexec_load, ", 0, 0, 0, 0"),
        (
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            ", 0, 0, 0",
        ),
        ("ioctl_tiocsti", libc::SYS_ioctl, ", 0, 0x5412, 0"),
        ("clone3", libc::SYS_clone3, ", 0, 0"),
        ("io_uring_setup", libc::SYS_io_uring_setup, ", 0, 0"),
    ];
    let script = syscall_probe(&calls);
    let substrate = common::substrate().unwrap();
    let out = substrate
        .exec(&BootSpec::new("probe"), ["/usr/bin/perl", "-e", &script])
        .await
        .unwrap();
    assert_ok(&out);
    let text = stdout(&out);
    let got: Vec<(String, String)> = text
        .lines()
        .map(|l| {
            let mut p = l.split_whitespace();
            let name = p.next().unwrap().to_owned();
            let _result = p.next().unwrap();
            (name, p.next().unwrap().to_owned())
        })
        .collect();
    assert_eq!(got.len(), calls.len(), "{text}");
    for (name, errno) in got {
        let want = if ["clone3", "io_uring_setup"].contains(&name.as_str()) {
            libc::ENOSYS
        } else {
            libc::EPERM
        };
        assert_eq!(errno, want.to_string(), "{name}: {text}");
    }
}

#[tokio::test]
async fn the_host_dev_null_cannot_be_changed() {
    let before = std::fs::metadata("/dev/null").unwrap();
    let out = sh(
        &BootSpec::new("probe"),
        "chmod 600 /dev/null 2>&1; echo rc=$?",
    )
    .await;
    assert_ok(&out);
    assert!(stdout(&out).contains("rc=1"), "{}", stdout(&out));
    let after = std::fs::metadata("/dev/null").unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(before.permissions().mode(), after.permissions().mode());
}

#[tokio::test]
async fn with_network_none_nothing_leaves() {
    // A service on the host's loopback: the sandbox must not reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // /dev/tcp is bash's.
    let substrate = common::substrate().unwrap();
    let out = substrate
        .exec(
            &BootSpec::new("probe").network(NetworkPolicy::None),
            [
                "/bin/bash",
                "-c",
                &format!(
                    "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; \
                     if (echo hi > /dev/tcp/127.0.0.1/{port}) 2>/dev/null; then echo reached; fi; \
                     if (timeout 3 bash -c 'echo hi > /dev/tcp/1.1.1.1/80') 2>/dev/null; then echo internet; fi"
                ),
            ],
        )
        .await
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        stdout(&out).trim(),
        "lo",
        "interfaces or connections beyond loopback"
    );
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the host's listener saw a connection"
    );
}

#[tokio::test]
async fn a_fork_bomb_stops_at_the_pids_limit() {
    let spec = BootSpec::new("probe").limits(ResourceLimits::default().pids(32));
    // Forks until the kernel refuses, then reports how many it got and that it is still alive.
    let bomb = "my @kids; for (1 .. 1000) { my $p = fork(); last unless defined $p; \
                if ($p == 0) { sleep 60; exit 0 } push @kids, $p } \
                print scalar(@kids), \"\\n\"; kill 9, @kids; print \"alive\\n\"";
    let substrate = common::substrate().unwrap();
    let out = substrate
        .exec(&spec, ["/usr/bin/perl", "-e", bomb])
        .await
        .unwrap();
    assert_ok(&out);
    let text = stdout(&out);
    let mut lines = text.lines();
    let forked: u32 = lines.next().unwrap().parse().unwrap();
    assert!(
        forked > 0 && forked < 32,
        "{forked} forks under a limit of 32"
    );
    assert_eq!(lines.next(), Some("alive"));
}

#[tokio::test]
async fn a_memory_hog_is_killed_inside_while_the_host_goes_on() {
    let spec = BootSpec::new("probe").limits(ResourceLimits::default().memory(64 << 20));
    let substrate = common::substrate().unwrap();
    // A second sandbox runs beside it and must be unaffected.
    let neighbour = substrate
        .boot_harness(BootSpec::new("neighbour"))
        .await
        .unwrap();
    let out = substrate
        .exec(
            &spec,
            [
                "/usr/bin/perl",
                "-e",
                "my $x = 'a' x (512 * 1024 * 1024); print length $x",
            ],
        )
        .await
        .unwrap();
    assert!(!out.status.success(), "the hog survived: {out:?}");
    assert!(out.oom_kills >= 1, "no OOM kill was recorded: {out:?}");
    let killed_by = out.status.signal().or(out.status.code());
    assert!(killed_by.is_some());
    neighbour.client().unwrap().health().await.unwrap();
    neighbour.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_workdir_cannot_grow_past_its_cap() {
    let spec = BootSpec::new("probe").limits(ResourceLimits::default().disk(16 << 20));
    let out = sh(
        &spec,
        "df -k /workdir | tail -1 | tr -s ' ' | cut -d' ' -f2; \
         dd if=/dev/zero of=/workdir/big bs=1M count=64 2>/dev/null && echo filled-64M || echo refused; \
         echo small > /workdir/small 2>/dev/null; rm -f /workdir/big; echo after > /workdir/after && echo writable",
    )
    .await;
    assert_ok(&out);
    let text = stdout(&out);
    let mut lines = text.lines();
    let size_kib: u64 = lines.next().unwrap().parse().unwrap();
    assert!(size_kib <= 16 * 1024, "{size_kib} KiB for a 16 MiB cap");
    assert_eq!(lines.next(), Some("refused"), "{text}");
    assert_eq!(lines.next(), Some("writable"), "{text}");
}

#[tokio::test]
async fn a_cap_too_small_to_hold_a_filesystem_is_refused_by_name() {
    let spec = BootSpec::new("probe").limits(ResourceLimits::default().disk(1 << 20));
    let substrate = common::substrate().unwrap();
    let err = substrate.exec(&spec, ["true"]).await.unwrap_err();
    assert_eq!(err.kind(), substrate_core::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("8 MiB"), "{err}");
}

#[tokio::test]
async fn a_cpu_limit_slows_a_busy_loop_to_its_share() {
    // 200 millicpus: a second of spinning gets about a fifth of a second of CPU.
    let spec = BootSpec::new("probe").limits(ResourceLimits::default().cpu_millis(200));
    let substrate = common::substrate().unwrap();
    let out = substrate
        .exec(
            &spec,
            [
                "/usr/bin/perl",
                "-e",
                "my $end = time + 1.5; my $n = 0; while (time < $end) { $n++ } my @t = times; print $t[0] + $t[1], \"\\n\"",
            ],
        )
        .await
        .unwrap();
    assert_ok(&out);
    let cpu: f64 = stdout(&out).trim().parse().unwrap();
    assert!(cpu < 0.6, "{cpu} s of CPU in 1.5 s under a 0.2-CPU limit");
    assert!(cpu > 0.05, "{cpu} s of CPU: the loop hardly ran");
}

#[tokio::test]
async fn two_sandboxes_cannot_see_each_others_workdir() {
    let substrate = common::substrate().unwrap();
    let a = substrate.boot_harness(BootSpec::new("a")).await.unwrap();
    let client = a.client().unwrap();
    let id = client
        .create_session(&substrate_core::protocol::CreateSession::new(
            "claude-agent-sdk",
        ))
        .await
        .unwrap()
        .session_id;
    client
        .write_file(&id, "private.txt", b"a's secret".to_vec(), None)
        .await
        .unwrap();
    let substrate_core::Endpoint::Unix(socket) = a.endpoint().clone() else {
        panic!("bwrap endpoints are Unix sockets");
    };
    let a_root = socket.parent().unwrap().parent().unwrap().to_path_buf();
    let out = sh(
        &BootSpec::new("b"),
        &format!(
            "ls -A /workdir; for p in {root} {root}/workdir {sock}; do [ -e $p ] && echo \"visible $p\"; done; \
             grep -r \"a's secret\" /workdir /tmp /run 2>/dev/null | head -1; true",
            root = a_root.display(),
            sock = socket.display()
        ),
    )
    .await;
    assert_ok(&out);
    assert_eq!(stdout(&out).trim(), "", "b saw a's files");
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_isolation_probe_table_passes() {
    let substrate = common::substrate().unwrap();
    let results = runtime_bwrap::probe::run_probes(&substrate).await.unwrap();
    assert_eq!(results.len(), 10);
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    assert!(
        failed.is_empty(),
        "\n{}",
        runtime_bwrap::probe::table(&results)
    );
}

#[tokio::test]
async fn extra_binds_are_visible_and_read_only() {
    let data = tempfile::Builder::new()
        .prefix("bwrap-data-")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.path().join("dataset.csv"), "a,b\n1,2\n").unwrap();
    std::fs::set_permissions(
        data.path().join("dataset.csv"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let substrate = common::substrate().unwrap().read_only(data.path(), "/data");
    let out = substrate
        .exec(
            &BootSpec::new("probe"),
            [
                "/bin/sh",
                "-c",
                "cat /data/dataset.csv; touch /data/new 2>/dev/null && echo wrote || echo refused; \
                 echo x >> /data/dataset.csv 2>/dev/null && echo appended || echo refused",
            ],
        )
        .await
        .unwrap();
    assert_ok(&out);
    assert_eq!(stdout(&out), "a,b\n1,2\nrefused\nrefused\n");
    assert_eq!(
        std::fs::read_to_string(data.path().join("dataset.csv")).unwrap(),
        "a,b\n1,2\n"
    );
}
