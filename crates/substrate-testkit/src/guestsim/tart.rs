//! The `tart` command line over simulated VMs: `clone`, `set`, `run`, `ip`, `stop`, `delete`,
//! `list`, with tart's argument forms, output formats and exit codes. State lives under
//! `TART_HOME` (default `~/.tart`), as with tart itself.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::vm::{RunOptions, Store, run_vm, stop_vm};

/// Runs one `tart` invocation; returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    let store = Store::new(home());
    store.record_call("tart", &args);
    match dispatch(&store, &args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            1
        }
    }
}

fn home() -> PathBuf {
    std::env::var_os("TART_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".tart")
        })
}

/// Positional arguments and `--flag[=value]` / `--flag value` options.
struct Parsed {
    positional: Vec<String>,
    options: Vec<(String, Option<String>)>,
}

/// Flags of the subset that take a value.
const VALUED: [&str; 10] = [
    "--wait",
    "--timeout",
    "--cpu",
    "--memory",
    "--disk-size",
    "--format",
    "--source",
    "--dir",
    "--net-softnet-allow",
    "--net-softnet-block",
];

fn parse(args: &[String]) -> Parsed {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if let Some((flag, value)) = arg.split_once('=').filter(|(f, _)| f.starts_with("--")) {
            options.push((flag.to_owned(), Some(value.to_owned())));
        } else if arg.starts_with("--") {
            let value = if VALUED.contains(&arg.as_str()) {
                it.next().cloned()
            } else {
                None
            };
            options.push((arg.clone(), value));
        } else {
            positional.push(arg.clone());
        }
    }
    Parsed {
        positional,
        options,
    }
}

impl Parsed {
    fn value(&self, flag: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(f, _)| f == flag)
            .and_then(|(_, v)| v.as_deref())
    }

    fn values(&self, flag: &str) -> Vec<&str> {
        self.options
            .iter()
            .filter(|(f, _)| f == flag)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }

    fn name(&self, i: usize, what: &str) -> Result<&str> {
        self.positional
            .get(i)
            .map(String::as_str)
            .with_context(|| format!("Missing expected argument '<{what}>'"))
    }
}

fn dispatch(store: &Store, args: &[String]) -> Result<i32> {
    let Some((command, rest)) = args.split_first() else {
        eprintln!("Usage: tart <subcommand>");
        return Ok(64);
    };
    let p = parse(rest);
    match command.as_str() {
        // `tart create --linux NAME`: here, a minimal Linux guest (see `Store::create_image`).
        "create" => {
            let name = p.name(0, "name")?;
            store.client_key()?;
            let _lock = store.lock()?;
            store.create_image(name, None)?;
            Ok(0)
        }
        "clone" => {
            let (src, dst) = (p.name(0, "source-name")?, p.name(1, "new-name")?);
            let _lock = store.lock()?;
            store.clone_vm(src, dst)?;
            Ok(0)
        }
        "set" => {
            let name = p.name(0, "name")?;
            let _lock = store.lock()?;
            let mut config = store.config(name)?;
            if let Some(cpu) = p.value("--cpu") {
                config.cpu = cpu.parse().context("--cpu must be a number")?;
            }
            if let Some(memory) = p.value("--memory") {
                config.memory_mib = memory.parse().context("--memory must be a number of MiB")?;
            }
            store.write_config(name, &config)?;
            Ok(0)
        }
        "run" => {
            let name = p.name(0, "name")?;
            let mut options = RunOptions {
                mount_base: "/mnt/shared".into(),
                ssh_forward: false,
                ..RunOptions::default()
            };
            for dir in p.values("--dir") {
                // [name:]path[:ro]
                let (spec, read_only) = match dir.strip_suffix(":ro") {
                    Some(s) => (s, true),
                    None => (dir, false),
                };
                let (tag, path) = match spec.split_once(':') {
                    Some((tag, path)) => (tag.to_owned(), path),
                    None => (
                        PathBuf::from(spec)
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        spec,
                    ),
                };
                options.mounts.push((tag, PathBuf::from(path), read_only));
            }
            let list = |flag: &str| -> Vec<String> {
                p.values(flag)
                    .iter()
                    .flat_map(|v| v.split(','))
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            options.net_allow = list("--net-softnet-allow");
            options.net_block = list("--net-softnet-block");
            run_vm(store, name, &options)?;
            Ok(0)
        }
        "ip" => {
            let name = p.name(0, "name")?;
            store.config(name)?;
            let wait: u64 = p.value("--wait").unwrap_or("0").parse().unwrap_or(0);
            let until = Instant::now() + Duration::from_secs(wait);
            loop {
                if let Some(ip) = store.run_state(name).and_then(|s| s.ip) {
                    println!("{ip}");
                    return Ok(0);
                }
                if Instant::now() >= until {
                    println!("no IP address found, is your VM running?");
                    return Ok(1);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        "stop" => {
            let name = p.name(0, "name")?;
            store.config(name)?;
            let timeout: u64 = p.value("--timeout").unwrap_or("30").parse().unwrap_or(30);
            stop_vm(store, name, Duration::from_secs(timeout))?;
            Ok(0)
        }
        "delete" => {
            let names = &p.positional;
            if names.is_empty() {
                bail!("Missing expected argument '<name> ...'");
            }
            for name in names {
                if store.run_state(name).is_some() {
                    stop_vm(store, name, Duration::from_secs(5))?;
                }
                let _lock = store.lock()?;
                store.delete(name)?;
            }
            Ok(0)
        }
        "list" => {
            let names = store.names();
            let rows: Vec<serde_json::Value> = names
                .iter()
                .map(|n| {
                    let running = store.run_state(n).is_some();
                    serde_json::json!({
                        "Source": "local",
                        "Name": n,
                        "Disk": 50,
                        "Size": 1,
                        "Running": running,
                        "State": if running { "running" } else { "stopped" },
                    })
                })
                .collect();
            if p.value("--format") == Some("json") {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if p.options.iter().any(|(f, _)| f == "--quiet" || f == "-q") {
                for n in &names {
                    println!("{n}");
                }
            } else {
                println!("Source\tName\tDisk\tSize\tState");
                for row in &rows {
                    println!(
                        "local\t{}\t50\t1\t{}",
                        row["Name"].as_str().unwrap_or_default(),
                        row["State"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(0)
        }
        other => {
            eprintln!("Error: Unknown subcommand '{other}'\nUsage: tart <subcommand>");
            Ok(64)
        }
    }
}
