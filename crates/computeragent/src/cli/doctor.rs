//! `computeragent doctor`: what this host has, what each runtime needs, and the fix for what
//! is missing.

use std::path::Path;
use std::process::ExitCode;

use computeragent::{RuntimeConfig, RuntimeName};

/// One line of the report.
struct Line {
    what: String,
    ok: bool,
    detail: String,
}

/// Reports on this host; `configured` is the user config's `runtime`, which commands run on
/// when none is named.
pub async fn run(
    config: &RuntimeConfig,
    user_config: Option<&Path>,
    configured: Option<RuntimeName>,
) -> computeragent::Result<ExitCode> {
    let mut lines = Vec::new();
    lines.push(Line {
        what: "user config".into(),
        ok: true,
        detail: match (user_config, crate::config::path()) {
            (Some(path), _) => format!("{} (read)", path.display()),
            (None, Some(path)) => format!("none ({} does not exist)", path.display()),
            (None, None) => "none (no home directory)".into(),
        },
    });
    let stage = config
        .stage_dir
        .clone()
        .unwrap_or_else(computeragent::stage::default_stage_dir);
    lines.push(match computeragent::stage::staged(&stage) {
        Some(modules) => Line {
            what: "staged modules".into(),
            ok: true,
            detail: modules.display().to_string(),
        },
        None => Line {
            what: "staged modules".into(),
            ok: false,
            detail: format!(
                "not staged in {} (the first bwrap or local boot stages them: ~400 MB from npm)",
                stage.display()
            ),
        },
    });
    if cfg!(target_os = "linux") {
        lines.push(user_namespaces());
        lines.push(cgroups());
        lines.push(Line {
            what: "/dev/kvm".into(),
            ok: Path::new("/dev/kvm").exists(),
            detail: if Path::new("/dev/kvm").exists() {
                "present (Lima can use hardware virtualization)".into()
            } else {
                "absent (Lima VMs run under software emulation)".into()
            },
        });
    }
    let availability = computeragent::runtime::check_all(config).await;
    for a in &availability {
        lines.push(Line {
            what: format!("runtime {}", a.runtime),
            ok: a.usable(),
            detail: match &a.status {
                Ok(found) => found.clone(),
                Err(why) => why.clone(),
            },
        });
    }
    let width = lines.iter().map(|l| l.what.len()).max().unwrap_or(0);
    for line in &lines {
        println!(
            "{} {:width$}  {}",
            if line.ok { "ok " } else { "-- " },
            line.what,
            line.detail
        );
    }
    if let Some(name) = configured {
        // The user's choice wins over auto-selection, so that is what to report on.
        let status = availability.iter().find(|a| a.runtime == name);
        return Ok(match status {
            Some(a) if a.usable() => {
                println!("\nruns on: {name} (the user config's `runtime`)");
                if name == RuntimeName::Local {
                    println!("`local` runs the agent with NO isolation (development only)");
                }
                ExitCode::SUCCESS
            }
            Some(a) => {
                let why = a.status.as_ref().err().cloned().unwrap_or_default();
                println!(
                    "\nthe user config's `runtime` is {name}, which is not usable here: {why}"
                );
                ExitCode::FAILURE
            }
            None => {
                println!(
                    "\nthe user config's `runtime` is {name}, which this build does not offer"
                );
                ExitCode::FAILURE
            }
        });
    }
    let selected = computeragent::runtime::select(config).await;
    match &selected {
        Ok(name) => println!("\nruns on: {name} (the best isolating runtime usable here)"),
        Err(e) => println!("\nno isolating runtime is usable here: {e}"),
    }
    let local = availability
        .iter()
        .any(|a| a.runtime == RuntimeName::Local && a.usable());
    if local && selected.is_err() {
        println!("`--runtime local` runs the agent with NO isolation (development only)");
    }
    Ok(if selected.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn user_namespaces() -> Line {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    let apparmor =
        std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
            .ok()
            .map(|t| t.trim() == "1");
    match (max, apparmor) {
        (Some(0), _) => Line {
            what: "user namespaces".into(),
            ok: false,
            detail: "disabled (`sysctl -w user.max_user_namespaces=15000`)".into(),
        },
        (_, Some(true)) => Line {
            what: "user namespaces".into(),
            ok: false,
            detail: "restricted by AppArmor (`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or a profile for bwrap)".into(),
        },
        (Some(n), _) => Line {
            what: "user namespaces".into(),
            ok: true,
            detail: format!("up to {n}"),
        },
        (None, _) => Line {
            what: "user namespaces".into(),
            ok: false,
            detail: "unknown (no /proc/sys/user/max_user_namespaces)".into(),
        },
    }
}

fn cgroups() -> Line {
    match std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers") {
        Ok(controllers) => {
            let have: Vec<&str> = controllers.split_whitespace().collect();
            let missing: Vec<&str> = ["memory", "cpu", "pids"]
                .into_iter()
                .filter(|c| !have.contains(c))
                .collect();
            Line {
                what: "cgroups v2".into(),
                ok: missing.is_empty(),
                detail: if missing.is_empty() {
                    "memory, cpu and pids controllers (limits enforceable)".into()
                } else {
                    format!("controllers missing: {} (limits on them are refused)", missing.join(", "))
                },
            }
        }
        Err(_) => Line {
            what: "cgroups v2".into(),
            ok: false,
            detail: "not mounted at /sys/fs/cgroup (v1 hosts: limits use the v1 hierarchy where present)".into(),
        },
    }
}
