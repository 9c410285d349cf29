//! `system`, `image` and `network`: the service, its image store and its one network.

use std::time::Duration;

use anyhow::{Result, bail};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use super::args::{DEBUG, host_arch, not_found, parse, split_tag, usage};
use super::lifecycle::stop_container;
use super::net::{self, GATEWAY, SUBNET};
use super::store::ContainerStore;

pub(super) fn system(store: &ContainerStore, args: &[String]) -> Result<i32> {
    const USAGE: &str = "container system <subcommand>";
    let Some((sub, rest)) = args.split_first() else {
        return Err(usage("Missing expected argument '<subcommand>'", USAGE));
    };
    match sub.as_str() {
        "status" => {
            parse(rest, &[DEBUG, (&["--prefix"], true)], false, USAGE)?;
            if !store.service_up() {
                println!("apiserver is not running and not registered with launchd");
                return Ok(1);
            }
            let rows = [
                ("status", "running".to_owned()),
                ("appRoot", store.root().display().to_string()),
                (
                    "installRoot",
                    std::env::current_exe()
                        .ok()
                        .and_then(|p| p.parent().map(|d| d.display().to_string()))
                        .unwrap_or_default(),
                ),
                (
                    "apiServerVersion",
                    "container-apiserver version 0.0.0 (guest-sim)".into(),
                ),
            ];
            println!("{:<18}VALUE", "FIELD");
            for (field, value) in rows {
                println!("{field:<18}{value}");
            }
            Ok(0)
        }
        "start" => {
            parse(
                rest,
                &[
                    DEBUG,
                    (&["--enable-kernel-install"], false),
                    (&["--disable-kernel-install"], false),
                    (&["--app-root", "-a"], true),
                    (&["--install-root"], true),
                ],
                false,
                USAGE,
            )?;
            store.set_service(true)?;
            Ok(0)
        }
        "stop" => {
            parse(rest, &[DEBUG, (&["--prefix", "-p"], true)], false, USAGE)?;
            for id in store.ids() {
                stop_container(store, &id, Signal::SIGTERM, Duration::from_secs(5))?;
            }
            store.set_service(false)?;
            Ok(0)
        }
        other => Err(usage(format!("Unexpected argument '{other}'"), USAGE)),
    }
}

pub(super) fn image(store: &ContainerStore, args: &[String]) -> Result<i32> {
    const USAGE: &str = "container image <subcommand>";
    let Some((sub, rest)) = args.split_first() else {
        return Err(usage("Missing expected argument '<subcommand>'", USAGE));
    };
    match sub.as_str() {
        "inspect" => {
            let p = parse(
                rest,
                &[DEBUG],
                false,
                "container image inspect <images> ...",
            )?;
            if p.positional.is_empty() {
                return Err(usage(
                    "Missing expected argument '<images> ...'",
                    "container image inspect <images> ...",
                ));
            }
            let mut out = Vec::new();
            for reference in &p.positional {
                let image = store
                    .image(reference)
                    .ok_or_else(|| not_found(&format!("image {reference}")))?;
                out.push(json!({
                    "name": image.reference,
                    "variants": [{
                        "platform": { "os": "linux", "architecture": host_arch() },
                        "config": {
                            "os": "linux",
                            "architecture": host_arch(),
                            "config": {
                                "Cmd": image.cmd,
                                "Env": image.env,
                                "User": image.user,
                                "WorkingDir": image.workdir,
                            },
                        },
                    }],
                }));
            }
            println!("{}", serde_json::to_string(&out)?);
            Ok(0)
        }
        "list" | "ls" => {
            let p = parse(
                rest,
                &[
                    DEBUG,
                    (&["--format"], true),
                    (&["--quiet", "-q"], false),
                    (&["--verbose", "-v"], false),
                ],
                false,
                "container image list [--format <format>] [--quiet] [--verbose]",
            )?;
            let images = store.images();
            if p.value("--format") == Some("json") {
                let rows: Vec<Value> = images
                    .iter()
                    .map(|i| {
                        json!({
                            "reference": i.reference,
                            "descriptor": {
                                "mediaType": "application/vnd.oci.image.index.v1+json",
                            },
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else if p.has("--quiet") {
                for i in &images {
                    println!("{}", i.reference);
                }
            } else {
                println!("{:<48}{:<24}", "NAME", "TAG");
                for i in &images {
                    let (name, tag) = split_tag(&i.reference);
                    println!("{name:<48}{tag:<24}");
                }
            }
            Ok(0)
        }
        "pull" => {
            let p = parse(
                rest,
                &[
                    DEBUG,
                    (&["--platform"], true),
                    (&["--arch", "-a"], true),
                    (&["--os"], true),
                    (&["--scheme"], true),
                    (&["--progress"], true),
                ],
                false,
                "container image pull [<options>] <reference>",
            )?;
            let Some(reference) = p.positional.first() else {
                return Err(usage(
                    "Missing expected argument '<reference>'",
                    "container image pull [<options>] <reference>",
                ));
            };
            if store.image(reference).is_some() {
                return Ok(0);
            }
            bail!(
                "internalError: \"failed to pull {reference}: no route to the registry \
                 (simulator has no registry)\""
            )
        }
        other => Err(usage(format!("Unexpected argument '{other}'"), USAGE)),
    }
}

fn default_network() -> Value {
    json!({
        "id": "default",
        "state": "running",
        "config": { "id": "default", "mode": "nat" },
        "status": { "ipv4Subnet": SUBNET, "ipv4Gateway": GATEWAY.to_string() },
    })
}

pub(super) fn network(args: &[String]) -> Result<i32> {
    const USAGE: &str = "container network <subcommand>";
    let Some((sub, rest)) = args.split_first() else {
        return Err(usage("Missing expected argument '<subcommand>'", USAGE));
    };
    match sub.as_str() {
        "inspect" => {
            let p = parse(
                rest,
                &[DEBUG],
                false,
                "container network inspect <networks> ...",
            )?;
            if p.positional.is_empty() {
                return Err(usage(
                    "Missing expected argument '<networks> ...'",
                    "container network inspect <networks> ...",
                ));
            }
            let mut out = Vec::new();
            for name in &p.positional {
                if name != "default" {
                    return Err(not_found(&format!("network {name}")));
                }
                net::ensure_bridge()?;
                out.push(default_network());
            }
            println!("{}", serde_json::to_string(&out)?);
            Ok(0)
        }
        "list" | "ls" => {
            let p = parse(
                rest,
                &[DEBUG, (&["--format"], true), (&["--quiet", "-q"], false)],
                false,
                "container network list [--format <format>] [--quiet]",
            )?;
            net::ensure_bridge()?;
            if p.value("--format") == Some("json") {
                println!("{}", serde_json::to_string(&[default_network()])?);
            } else if p.has("--quiet") {
                println!("default");
            } else {
                println!("{:<16}{:<10}SUBNET", "NETWORK", "STATE");
                println!("{:<16}{:<10}{SUBNET}", "default", "running");
            }
            Ok(0)
        }
        other => Err(usage(format!("Unexpected argument '{other}'"), USAGE)),
    }
}
