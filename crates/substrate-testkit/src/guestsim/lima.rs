//! The `limactl` command line over simulated VMs: `create`, `clone`, `edit`, `start`, `list
//! --json`, `stop`, `delete`, with Lima's argument forms, output formats and exit codes. State
//! lives under `LIMA_HOME` (default `~/.lima`); the login key is `$LIMA_HOME/_config/user`, as
//! with Lima. A template's contents are not read: every `create` makes the simulator's minimal
//! guest (with the npm mirror named in `$LIMA_HOME/sim/config.json`, if any).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::vm::{RunOptions, Store, run_vm, stop_vm};

/// Runs one `limactl` invocation; returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    let store = Store::new(home());
    if args.first().map(String::as_str) != Some("__run") {
        store.record_call("limactl", &args);
    }
    match dispatch(&store, &args) {
        Ok(code) => code,
        Err(e) => {
            // Lima logs errors as logrus does.
            eprintln!("time=\"-\" level=fatal msg=\"{e:#}\"");
            1
        }
    }
}

fn home() -> PathBuf {
    std::env::var_os("LIMA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".lima")
        })
}

/// The simulator's own settings for this store.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
pub struct SimConfig {
    /// A host npm cache to give new guests as an offline mirror.
    pub npm_cache: Option<PathBuf>,
}

/// Writes the simulator's settings for the store under `home`.
pub fn write_config(home: &std::path::Path, config: &SimConfig) -> Result<()> {
    let dir = home.join("sim");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("config.json"), serde_json::to_vec(config)?)?;
    Ok(())
}

fn sim_config(store: &Store) -> SimConfig {
    std::fs::read_to_string(store.root().join("sim/config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// `_config/user` (Lima's login key), a copy of the simulator's key.
fn ensure_login_key(store: &Store) -> Result<()> {
    let key = store.client_key()?;
    let dir = store.root().join("_config");
    let user = dir.join("user");
    if !user.is_file() {
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(&key, &user)?;
        std::fs::copy(format!("{}.pub", key.display()), dir.join("user.pub"))?;
    }
    Ok(())
}

struct Parsed {
    positional: Vec<String>,
    options: Vec<(String, Option<String>)>,
}

const VALUED: [&str; 6] = [
    "--name",
    "--cpus",
    "--memory",
    "--mount",
    "--timeout",
    "--set",
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

    fn name(&self, i: usize) -> Result<&str> {
        self.positional
            .get(i)
            .map(String::as_str)
            .context("requires at least 1 arg(s), only received 0")
    }
}

/// Applies `--cpus`, `--memory` (GiB) and `--mount DIR[:w]` to `name`'s config.
fn apply_flags(store: &Store, name: &str, p: &Parsed) -> Result<()> {
    let mut config = store.config(name)?;
    if let Some(cpus) = p.value("--cpus") {
        config.cpu = cpus.parse().context("--cpus must be a number")?;
    }
    if let Some(memory) = p.value("--memory") {
        let gib: f64 = memory.parse().context("--memory must be a number of GiB")?;
        config.memory_mib = (gib * 1024.0) as u64;
    }
    let mounts = p.values("--mount");
    if !mounts.is_empty() {
        config.mounts = mounts
            .iter()
            .map(|m| match m.strip_suffix(":w") {
                Some(path) => (PathBuf::from(path), true),
                None => (PathBuf::from(m), false),
            })
            .collect();
    }
    store.write_config(name, &config)
}

fn dispatch(store: &Store, args: &[String]) -> Result<i32> {
    let Some((command, rest)) = args.split_first() else {
        eprintln!("Usage: limactl [command]");
        return Ok(1);
    };
    let p = parse(rest);
    match command.as_str() {
        "create" => {
            let name = p
                .value("--name")
                .map(str::to_owned)
                .or_else(|| p.positional.first().map(|t| template_name(t)))
                .context("--name is required")?;
            ensure_login_key(store)?;
            let config = sim_config(store);
            {
                let _lock = store.lock()?;
                if store.exists(&name) {
                    bail!("instance {name:?} already exists");
                }
                store.create_image(&name, config.npm_cache.as_deref())?;
            }
            apply_flags(store, &name, &p)?;
            eprintln!(
                "time=\"-\" level=info msg=\"Run `limactl start {name}` to start the instance.\""
            );
            Ok(0)
        }
        "clone" => {
            let (src, dst) = (p.name(0)?, p.name(1)?);
            if store.run_state(src).is_some() {
                bail!("cannot clone a running instance {src:?}");
            }
            {
                let _lock = store.lock()?;
                store.clone_vm(src, dst)?;
            }
            apply_flags(store, dst, &p)?;
            Ok(0)
        }
        "edit" => {
            let name = p.name(0)?;
            if store.run_state(name).is_some() {
                bail!("cannot edit a running instance {name:?}");
            }
            apply_flags(store, name, &p)?;
            Ok(0)
        }
        "start" => {
            let name = p.name(0)?.to_owned();
            store.config(&name)?;
            ensure_login_key(store)?;
            if store.run_state(&name).is_some() {
                eprintln!(
                    "time=\"-\" level=info msg=\"The instance {name:?} is already running.\""
                );
                return Ok(0);
            }
            let timeout = p
                .value("--timeout")
                .and_then(|t| t.strip_suffix('s').or(Some(t)).map(str::to_owned))
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(600);
            let log = std::fs::File::create(store.vm_dir(&name).join("ha.stderr.log"))?;
            let exe = std::env::current_exe().context("find the simulator")?;
            {
                use std::os::unix::process::CommandExt;
                Command::new(exe)
                    .arg0("limactl")
                    .args(["__run", &name])
                    .process_group(0)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .context("start the instance")?;
            }
            let until = Instant::now() + Duration::from_secs(timeout);
            loop {
                if let Some(port) = store.run_state(&name).and_then(|s| s.ssh_local_port)
                    && ssh_answers(port)
                {
                    eprintln!(
                        "time=\"-\" level=info msg=\"READY. Run `limactl shell {name}` to open the shell.\""
                    );
                    return Ok(0);
                }
                if Instant::now() >= until {
                    bail!("did not receive an event with the \"running\" status");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        "__run" => {
            let name = p.name(0)?;
            let options = RunOptions {
                ssh_forward: true,
                ..RunOptions::default()
            };
            run_vm(store, name, &options)?;
            Ok(0)
        }
        "list" => {
            let names: Vec<String> = if p.positional.is_empty() {
                store.names()
            } else {
                p.positional.clone()
            };
            for name in names {
                let Ok(config) = store.config(&name) else {
                    eprintln!(
                        "time=\"-\" level=warning msg=\"No instance matching {name} found.\""
                    );
                    continue;
                };
                let state = store.run_state(&name);
                let row = serde_json::json!({
                    "name": name,
                    "status": if state.is_some() { "Running" } else { "Stopped" },
                    "dir": store.vm_dir(&name),
                    "vmType": "qemu",
                    "arch": "x86_64",
                    "cpus": config.cpu,
                    "memory": config.memory_mib * 1024 * 1024,
                    "sshLocalPort": state.as_ref().and_then(|s| s.ssh_local_port).unwrap_or(0),
                    "sshAddress": "127.0.0.1",
                });
                if p.options.iter().any(|(f, _)| f == "--json") {
                    println!("{row}");
                } else {
                    println!("{name}\t{}", row["status"].as_str().unwrap_or_default());
                }
            }
            Ok(0)
        }
        "stop" => {
            let name = p.name(0)?;
            store.config(name)?;
            stop_vm(store, name, Duration::from_secs(30))?;
            Ok(0)
        }
        "delete" | "rm" | "remove" => {
            let force = p.options.iter().any(|(f, _)| f == "--force" || f == "-f");
            for name in &p.positional {
                if store.run_state(name).is_some() {
                    if !force {
                        bail!("expected status \"Stopped\", got \"Running\" (hint: try --force)");
                    }
                    stop_vm(store, name, Duration::from_secs(5))?;
                }
                let _lock = store.lock()?;
                store.delete(name)?;
                eprintln!("time=\"-\" level=info msg=\"Deleted {name:?}\"");
            }
            Ok(0)
        }
        other => {
            eprintln!("Error: unknown command {other:?} for \"limactl\"");
            Ok(1)
        }
    }
}

/// `template://default` or `/path/to/debian.yaml` → `default`, `debian`.
fn template_name(template: &str) -> String {
    let base = template.rsplit(['/', ':']).next().unwrap_or(template);
    base.trim_end_matches(".yaml")
        .trim_end_matches(".yml")
        .to_owned()
}

/// Whether an SSH server greets on 127.0.0.1:`port`.
fn ssh_answers(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"SSH-"
}
