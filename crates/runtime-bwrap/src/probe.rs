//! The isolation probe table: small programs run inside a fresh sandbox that try to see or
//! touch what they must not, each with what it expects and what it observed. The
//! `isolation-probe` example prints it; the tests assert it.

use std::collections::BTreeSet;

use substrate_core::{BootSpec, NetworkPolicy, Result};

use crate::{BwrapSubstrate, ExecOutput};

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// What was tried.
    pub name: String,
    /// What isolation demands.
    pub expected: String,
    /// What the sandbox showed.
    pub observed: String,
    /// Whether `observed` meets `expected`.
    pub passed: bool,
}

type Check = fn(&str) -> (bool, String);

struct Probe {
    name: &'static str,
    expected: &'static str,
    argv: Vec<String>,
    check: Check,
}

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

fn lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| !l.is_empty()).collect()
}

/// Calls each syscall through perl's `syscall` and prints `NAME ERRNO`.
fn syscall_script(calls: &[(&str, i64, &str)]) -> String {
    let mut script = String::from("$main::pid = $$; ");
    for (name, nr, args) in calls {
        script.push_str(&format!(
            "{{ my $r = syscall({nr}{args}); my $e = $! + 0; \
               if ($r == 0 && $$ != $main::pid) {{ exit 0 }} print \"{name} \", ($r == -1 ? $e : \"ok\"), \"\\n\"; }} "
        ));
    }
    script
}

fn probes() -> Vec<Probe> {
    let breakers: Vec<(&str, i64, &str)> = vec![
        ("ptrace", libc::SYS_ptrace, ", 0, 0, 0, 0"),
        ("mount", libc::SYS_mount, ", 0, 0, 0, 0, 0"),
        ("unshare", libc::SYS_unshare, ", 0x10000000"),
        ("setns", libc::SYS_setns, ", 0, 0"),
        ("keyctl", libc::SYS_keyctl, ", 0, 0, 0, 0, 0"),
        ("bpf", libc::SYS_bpf, ", 0, 0, 0"),
        (
            "perf_event_open",
            libc::SYS_perf_event_open,
            ", 0, 0, 0, 0, 0",
        ),
        ("userfaultfd", libc::SYS_userfaultfd, ", 0"),
    ];
    vec![
        Probe {
            name: "ls /",
            expected: "only the jail's entries",
            argv: sh("ls -A /"),
            check: |out| {
                let allowed = [
                    "bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "opt", "proc", "sbin",
                    "tmp", "usr", "workdir", "run",
                ];
                let seen = lines(out);
                (seen.iter().all(|e| allowed.contains(e)), seen.join(" "))
            },
        },
        Probe {
            name: "host secrets and homes",
            expected: "absent",
            argv: sh(
                "for p in /etc/shadow /root /home /root/.ssh /var /srv /mnt; do \
                   [ -e $p ] && echo $p; done; true",
            ),
            check: |out| {
                let seen = lines(out);
                (
                    seen.is_empty(),
                    if seen.is_empty() {
                        "absent".into()
                    } else {
                        seen.join(" ")
                    },
                )
            },
        },
        Probe {
            name: "environment",
            expected: "only the sandbox's own variables",
            argv: sh("env | cut -d= -f1 | sort"),
            check: |out| {
                let own = [
                    "PATH", "HOME", "USER", "LANG", "TMPDIR", "PWD", "SHLVL", "_",
                ];
                let seen = lines(out);
                (seen.iter().all(|v| own.contains(v)), seen.join(" "))
            },
        },
        Probe {
            name: "processes",
            expected: "only the sandbox's",
            argv: sh("for p in /proc/[0-9]*; do cat $p/comm; done 2>/dev/null"),
            check: |out| {
                let seen: BTreeSet<&str> = lines(out).into_iter().collect();
                (
                    seen.iter().all(|c| ["bwrap", "sh", "cat"].contains(c)),
                    seen.into_iter().collect::<Vec<_>>().join(" "),
                )
            },
        },
        Probe {
            name: "uid",
            expected: "1000 (not root)",
            argv: sh("id -u"),
            check: |out| (out.trim() == "1000", out.trim().to_owned()),
        },
        Probe {
            name: "writes outside /workdir and /tmp",
            expected: "refused",
            argv: sh(
                "for p in /x /etc/x /usr/x /opt/harness/x /dev/x /run/x; do \
                   touch $p 2>/dev/null && echo $p; done; true",
            ),
            check: |out| {
                let seen = lines(out);
                (
                    seen.is_empty(),
                    if seen.is_empty() {
                        "refused".into()
                    } else {
                        seen.join(" ")
                    },
                )
            },
        },
        Probe {
            name: "capabilities, no_new_privs, seccomp",
            expected: "CapEff 0, NoNewPrivs 1, Seccomp 2",
            argv: sh("grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status"),
            check: |out| {
                let text = out.split_whitespace().collect::<Vec<_>>().join(" ");
                (
                    text == "CapEff: 0000000000000000 NoNewPrivs: 1 Seccomp: 2",
                    text,
                )
            },
        },
        Probe {
            name: "ptrace, mount, unshare, setns, keyctl, bpf, perf, userfaultfd",
            expected: "EPERM each",
            argv: vec![
                "/usr/bin/perl".into(),
                "-e".into(),
                syscall_script(&breakers),
            ],
            check: |out| {
                let eperm = libc::EPERM.to_string();
                let seen = lines(out);
                let ok = seen.len() == 8
                    && seen
                        .iter()
                        .all(|l| l.split_whitespace().nth(1) == Some(eperm.as_str()));
                let shown = if ok {
                    "EPERM each".into()
                } else {
                    seen.join(", ")
                };
                (ok, shown)
            },
        },
        Probe {
            name: "chmod the host's /dev/null",
            expected: "refused",
            argv: sh("chmod 600 /dev/null 2>/dev/null && echo changed || echo refused"),
            check: |out| (out.trim() == "refused", out.trim().to_owned()),
        },
        Probe {
            name: "network (policy none)",
            expected: "loopback only",
            argv: sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"),
            check: |out| {
                let seen = lines(out);
                (seen == ["lo"], seen.join(" "))
            },
        },
    ]
}

/// Runs every probe, each in a fresh sandbox with network policy `none`.
pub async fn run_probes(substrate: &BwrapSubstrate) -> Result<Vec<ProbeResult>> {
    let spec = BootSpec::new("probe").network(NetworkPolicy::None);
    let mut results = Vec::new();
    for probe in probes() {
        let out: ExecOutput = substrate.exec(&spec, probe.argv.iter()).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (mut passed, mut observed) = (probe.check)(&text);
        if !out.status.success() {
            passed = false;
            observed = format!(
                "{observed} (exit {}: {})",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        results.push(ProbeResult {
            name: probe.name.to_owned(),
            expected: probe.expected.to_owned(),
            observed,
            passed,
        });
    }
    Ok(results)
}

/// The results as an aligned text table.
pub fn table(results: &[ProbeResult]) -> String {
    let w0 = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let w1 = results
        .iter()
        .map(|r| r.expected.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut out = format!(
        "{:<w0$}  {:<w1$}  {:<4}  observed\n",
        "probe", "expected", "ok"
    );
    for r in results {
        out.push_str(&format!(
            "{:<w0$}  {:<w1$}  {:<4}  {}\n",
            r.name,
            r.expected,
            if r.passed { "yes" } else { "NO" },
            r.observed
        ));
    }
    out
}
