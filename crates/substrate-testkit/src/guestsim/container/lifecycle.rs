//! `inspect`, `list`, `logs`, `stop` and `delete`.

use std::fs;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use super::args::{DEBUG, host_arch, not_found, parse, parse_signal, usage};
use super::daemon::StopRequest;
use super::net::{self, GATEWAY};
use super::store::{ContainerState, ContainerStore};
use crate::guestsim::vm::{alive, write_atomic};

/// Container `id` as `inspect` and `list --format json` print it.
pub(super) fn info(store: &ContainerStore, id: &str) -> Option<Value> {
    let config = store.config(id)?;
    let state = store.state(id);
    let running = state.as_ref().is_some_and(ContainerState::running);
    let networks: Vec<Value> = match state.as_ref().and_then(|s| s.address) {
        Some(address) if running => vec![json!({
            "network": "default",
            "address": format!("{address}/24"),
            "gateway": GATEWAY.to_string(),
            "hostname": format!("{id}."),
        })],
        _ => Vec::new(),
    };
    let ports: Vec<Value> = config
        .published
        .iter()
        .map(|p| {
            json!({
                "hostAddress": p.host_address.to_string(),
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "proto": "tcp",
            })
        })
        .collect();
    let mounts: Vec<Value> = config
        .volumes
        .iter()
        .map(|v| {
            json!({
                "type": "virtiofs",
                "source": v.host,
                "destination": v.guest,
                "options": if v.read_only { vec!["ro"] } else { Vec::new() },
            })
        })
        .chain(
            config
                .tmpfs
                .iter()
                .map(|t| json!({ "type": "tmpfs", "source": "", "destination": t, "options": [] })),
        )
        .collect();
    let mut value = json!({
        "status": if running { "running" } else { "stopped" },
        "networks": networks,
        "configuration": {
            "id": config.id,
            "image": { "reference": config.image },
            "labels": config.labels,
            "publishedPorts": ports,
            "resources": { "cpus": config.cpus, "memoryInBytes": config.memory_bytes },
            "mounts": mounts,
            "readOnly": config.read_only,
            "hostname": id,
            "platform": { "os": "linux", "architecture": host_arch() },
            "initProcess": {
                "executable": config.command.first(),
                "arguments": config.command.get(1..).unwrap_or_default(),
                "workingDirectory": config.workdir,
                "user": { "id": { "uid": config.user.0, "gid": config.user.1 } },
            },
        },
    });
    if !running
        && let Some(code) = state.and_then(|s| s.exit_code)
        && let Some(map) = value.as_object_mut()
    {
        map.insert("exitCode".into(), json!(code));
    }
    Some(value)
}

pub(super) fn list(store: &ContainerStore, args: &[String]) -> Result<i32> {
    let p = parse(
        args,
        &[
            DEBUG,
            (&["--all", "-a"], false),
            (&["--format"], true),
            (&["--quiet", "-q"], false),
        ],
        false,
        "container list [--all] [--format <format>] [--quiet]",
    )?;
    let all = p.has("--all");
    let rows: Vec<Value> = store
        .ids()
        .iter()
        .filter_map(|id| info(store, id))
        .filter(|v| all || v["status"] == "running")
        .collect();
    if p.has("--quiet") {
        for row in &rows {
            println!(
                "{}",
                row["configuration"]["id"].as_str().unwrap_or_default()
            );
        }
    } else if p.value("--format") == Some("json") {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        println!(
            "{:<40}{:<40}{:<8}{:<8}{:<10}ADDR",
            "ID", "IMAGE", "OS", "ARCH", "STATE"
        );
        for row in &rows {
            let c = &row["configuration"];
            println!(
                "{:<40}{:<40}{:<8}{:<8}{:<10}{}",
                c["id"].as_str().unwrap_or_default(),
                c["image"]["reference"].as_str().unwrap_or_default(),
                "linux",
                host_arch(),
                row["status"].as_str().unwrap_or_default(),
                row["networks"][0]["address"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(0)
}

pub(super) fn logs(store: &ContainerStore, args: &[String]) -> Result<i32> {
    const USAGE: &str = "container logs [--boot] [--follow] [-n <n>] <container-id>";
    let p = parse(
        args,
        &[
            DEBUG,
            (&["--boot"], false),
            (&["--follow", "-f"], false),
            (&["-n"], true),
        ],
        false,
        USAGE,
    )?;
    let Some(id) = p.positional.first() else {
        return Err(usage("Missing expected argument '<container-id>'", USAGE));
    };
    if store.config(id).is_none() {
        return Err(not_found(&format!("container {id}")));
    }
    if p.has("--follow") {
        bail!("unsupported: \"--follow is not simulated\"");
    }
    let file = if p.has("--boot") {
        "daemon.log"
    } else {
        "stdio.log"
    };
    let text = fs::read_to_string(store.container_dir(id).join(file)).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    match p.value("-n") {
        Some(n) => {
            let n: usize = n
                .parse()
                .with_context(|| format!("invalidArgument: \"invalid line count {n:?}\""))?;
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(n)..] {
                writeln!(out, "{line}")?;
            }
        }
        None => out.write_all(text.as_bytes())?,
    }
    Ok(0)
}

pub(super) fn stop(store: &ContainerStore, args: &[String]) -> Result<i32> {
    let p = parse(
        args,
        &[
            DEBUG,
            (&["--all", "-a"], false),
            (&["--signal", "-s"], true),
            (&["--time", "-t"], true),
        ],
        false,
        "container stop [--all] [--signal <signal>] [--time <time>] [<container-ids> ...]",
    )?;
    let signal = parse_signal(p.value("--signal").unwrap_or("SIGTERM"))?;
    let time: f64 = match p.value("--time") {
        Some(t) => t
            .parse()
            .ok()
            .filter(|t: &f64| *t >= 0.0)
            .with_context(|| format!("invalidArgument: \"invalid time {t:?}\""))?,
        None => 5.0,
    };
    let ids = if p.has("--all") {
        store.ids()
    } else {
        p.positional.clone()
    };
    for id in &ids {
        if store.config(id).is_none() {
            return Err(not_found(&format!("container {id}")));
        }
        stop_container(store, id, signal, Duration::from_secs_f64(time))?;
        println!("{id}");
    }
    Ok(0)
}

/// Stops container `id` (a no-op unless it runs): `signal` to its process, SIGKILL after
/// `timeout`; returns once its daemon has cleaned up and exited.
pub fn stop_container(
    store: &ContainerStore,
    id: &str,
    signal: Signal,
    timeout: Duration,
) -> Result<()> {
    let Some(state) = store.state(id) else {
        return Ok(());
    };
    if state.status != "running" {
        return Ok(());
    }
    if !alive(state.pid) {
        crash_cleanup(store, id, &state);
        return Ok(());
    }
    write_atomic(
        &store.container_dir(id).join("stop.json"),
        &serde_json::to_vec(&StopRequest {
            signal: signal as i32,
            timeout_ms: timeout.as_millis() as u64,
        })?,
    )?;
    let pid = nix::unistd::Pid::from_raw(state.pid);
    let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
    let until = Instant::now() + timeout + Duration::from_secs(15);
    while alive(state.pid) {
        if Instant::now() >= until {
            // The daemon does not answer: kill it and clean up after it.
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(200));
            crash_cleanup(store, id, &state);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// What a dead daemon left: its network and lease; the state says stopped (killed).
fn crash_cleanup(store: &ContainerStore, id: &str, state: &ContainerState) {
    if let Some(n) = state.lease {
        net::release(n, state.pid);
    }
    let _ = fs::remove_file(store.container_dir(id).join("stop.json"));
    if store.config(id).is_some_and(|c| c.remove) {
        let _ = fs::remove_dir_all(store.container_dir(id));
        return;
    }
    if store.state(id).is_some_and(|s| s.status == "running") {
        let _ = store.write_state(
            id,
            &ContainerState {
                status: "stopped".into(),
                address: None,
                lease: None,
                exit_code: Some(128 + Signal::SIGKILL as i32),
                ..state.clone()
            },
        );
    }
}

pub(super) fn delete(store: &ContainerStore, args: &[String]) -> Result<i32> {
    let p = parse(
        args,
        &[
            DEBUG,
            (&["--all", "-a"], false),
            (&["--force", "-f"], false),
        ],
        false,
        "container delete [--all] [--force] [<container-ids> ...]",
    )?;
    let force = p.has("--force");
    let ids = if p.has("--all") {
        store.ids()
    } else {
        p.positional.clone()
    };
    for id in &ids {
        if store.config(id).is_none() {
            return Err(not_found(&format!("container {id}")));
        }
        if let Some(state) = store.state(id) {
            if state.running() {
                if !force {
                    bail!(
                        "invalidState: \"container {id} is running, stop it first or use \
                         --force\""
                    );
                }
                stop_container(store, id, Signal::SIGTERM, Duration::from_secs(5))?;
            } else if state.status == "running" {
                crash_cleanup(store, id, &state);
            }
        }
        let _lock = store.sim().lock()?;
        match fs::remove_dir_all(store.container_dir(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow::Error::from(e)
                    .context(format!("internalError: \"delete container {id}\"")));
            }
            _ => {}
        }
        println!("{id}");
    }
    Ok(0)
}
