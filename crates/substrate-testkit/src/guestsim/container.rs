//! The `container` command line (Apple's container, macOS 26+) over simulated Linux
//! containers: `system status|start`, `image inspect|list|pull`, `network inspect|list`,
//! `run --detach`, `exec`, `inspect`, `list`, `logs`, `stop`, `delete`, with the real CLI's argument
//! forms, JSON shapes and exit codes (errors: exit 1, `Error: <kind>: "<message>"` on stderr;
//! usage errors: exit 64).
//!
//! A container is a network namespace on the "default" network (a bridge on the host with
//! the gateway's address, 10.214.0.0/24) and its command in a bwrap jail: the host's `/usr`,
//! the image's directories as an overlay of its own (bound read-only with `--read-only`), the
//! image's user, published ports forwarded from the host. A daemon per container (the
//! simulator re-executed) owns all of it and removes it when the process exits.
//!
//! The store has no environment variable, as the real service has none: it is the content of
//! `container-sim-home` next to the `container` link as invoked, else `~/.container-sim`.
//! Layout: `images/<ref>/{config.json,rootfs/}`; `containers/<id>/{config.json,state.json,
//! stdio.log,daemon.log,upper/,work/}`; `sim/calls.jsonl` (every call), `sim/faults/<ref>.json`,
//! `sim/service-down`.
//!
//! Not simulated (a clear error, never a silent no-op): foreground `run`, `create` and
//! `start`, `build` (tests lay images out with [`ContainerStore::ensure_image`]), registries,
//! `logs --follow`, UDP ports, `--mount`, `run --tty`, DNS options. `--cpus` and `--memory` (a
//! number without a unit is MiB) are validated and recorded, not enforced; `inspect` shows no
//! environment (it is never written to disk).

mod args;
mod daemon;
mod exec;
mod lifecycle;
pub(crate) mod net;
mod run;
mod service;
mod store;

use anyhow::{Result, bail};

pub use lifecycle::stop_container;
pub use net::{BRIDGE, GATEWAY, SUBNET, address, host_link, leases, netns_name};
pub use store::{
    ContainerConfig, ContainerFaults, ContainerImage, ContainerState, ContainerStore, DEFAULT_CPUS,
    DEFAULT_MEMORY, ImageConfig, PublishedPort, Volume, normalize_reference,
};

use args::{DEBUG, Usage, not_found, parse, usage};

/// Runs one `container` invocation; returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    if args.first().map(String::as_str) == Some("__daemon") {
        let (Some(root), Some(id)) = (args.get(1), args.get(2)) else {
            eprintln!("usage: container __daemon STORE ID");
            return 64;
        };
        return daemon::main(&ContainerStore::new(root), id);
    }
    if args.first().map(String::as_str) == Some("__exec") {
        return daemon::exec_unblocked(args.get(1..).unwrap_or_default());
    }
    let store = ContainerStore::locate();
    store.sim().record_call("container", &args);
    match dispatch(&store, &args) {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<Usage>() {
            Some(usage) => {
                eprintln!(
                    "Error: {}\nUsage: {}\n  See '{} --help' for more information.",
                    usage.message,
                    usage.usage,
                    usage.usage.split(" [").next().unwrap_or("container")
                );
                64
            }
            None => {
                eprintln!("Error: {e:#}");
                1
            }
        },
    }
}

fn dispatch(store: &ContainerStore, args: &[String]) -> Result<i32> {
    let Some((command, rest)) = args.split_first() else {
        println!("{HELP}");
        return Ok(0);
    };
    let command = command.as_str();
    let sub = rest.first().map(String::as_str);
    match command {
        "--version" | "-v" => {
            println!("container CLI version 0.0.0 (guest-sim)");
            return Ok(0);
        }
        "--help" | "-h" | "help" => {
            println!("{HELP}");
            return Ok(0);
        }
        _ => {}
    }
    let exempt = command == "system" && matches!(sub, Some("start" | "status"));
    if !exempt && !store.service_up() {
        bail!("XPC connection error: Connection invalid");
    }
    match command {
        "system" => service::system(store, rest),
        "image" | "images" | "i" => service::image(store, rest),
        "network" | "n" => service::network(rest),
        "run" => run::run(store, rest),
        "inspect" => {
            let p = parse(
                rest,
                &[DEBUG],
                false,
                "container inspect <container-ids> ...",
            )?;
            if p.positional.is_empty() {
                return Err(usage(
                    "Missing expected argument '<container-ids> ...'",
                    "container inspect <container-ids> ...",
                ));
            }
            let mut out = Vec::new();
            for id in &p.positional {
                out.push(
                    lifecycle::info(store, id)
                        .ok_or_else(|| not_found(&format!("container {id}")))?,
                );
            }
            println!("{}", serde_json::to_string(&out)?);
            Ok(0)
        }
        "list" | "ls" => lifecycle::list(store, rest),
        "logs" => lifecycle::logs(store, rest),
        "exec" => exec::exec(store, rest),
        "stop" => lifecycle::stop(store, rest),
        "delete" | "rm" => lifecycle::delete(store, rest),
        "build" => bail!(
            "unsupported: \"the simulator has no builder: make images with \
             SimTools::ensure_container_image\""
        ),
        other => Err(usage(
            format!("Unexpected argument '{other}'"),
            "container <subcommand>",
        )),
    }
}

const HELP: &str = "OVERVIEW: A container platform for macOS (simulated)\n\n\
USAGE: container [--debug] <subcommand>\n\n\
SUBCOMMANDS: run, inspect, list, logs, stop, delete, image, network, system";
