//! `container run --detach`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::args::{
    DEBUG, Opt, host_arch, not_found, parse, parse_memory, parse_publish, parse_volume, usage, uuid,
};
use super::store::{self, ContainerConfig, ContainerStore, DEFAULT_CPUS, DEFAULT_MEMORY};
use crate::guestsim::vm::write_atomic;

const RUN_USAGE: &str = "container run [<options>] <image> [<arguments> ...]";

const RUN_OPTIONS: &[Opt] = &[
    DEBUG,
    (&["--detach", "-d"], false),
    (&["--name"], true),
    (&["--cpus", "-c"], true),
    (&["--memory", "-m"], true),
    (&["--env-file"], true),
    (&["--env", "-e"], true),
    (&["--volume", "-v"], true),
    (&["--workdir", "-w", "--cwd"], true),
    (&["--read-only"], false),
    (&["--tmpfs"], true),
    (&["--remove", "--rm"], false),
    (&["--publish", "-p"], true),
    (&["--label", "-l"], true),
    (&["--entrypoint"], true),
    (&["--user", "-u"], true),
    (&["--uid"], true),
    (&["--gid"], true),
    (&["--network"], true),
    (&["--cidfile"], true),
    (&["--interactive", "-i"], false),
    (&["--platform"], true),
    (&["--arch", "-a"], true),
    (&["--os"], true),
    (&["--scheme"], true),
    (&["--progress"], true),
    // Known to the real CLI, not simulated.
    (&["--tty", "-t"], false),
    (&["--mount"], true),
    (&["--dns"], true),
    (&["--dns-domain"], true),
    (&["--dns-option"], true),
    (&["--dns-search"], true),
    (&["--no-dns"], false),
    (&["--kernel", "-k"], true),
    (&["--publish-socket"], true),
    (&["--ssh"], false),
    (&["--virtualization"], false),
    (&["--ulimit"], true),
];

/// `container run --detach`: validates everything, reserves the id, forks the container's
/// daemon and waits until it says the container runs (or why it does not).
pub(super) fn run(store: &ContainerStore, args: &[String]) -> Result<i32> {
    let p = parse(args, RUN_OPTIONS, true, RUN_USAGE)?;
    for unsupported in [
        "--tty",
        "--mount",
        "--dns",
        "--dns-domain",
        "--dns-option",
        "--dns-search",
        "--no-dns",
        "--kernel",
        "--publish-socket",
        "--ssh",
        "--virtualization",
        "--ulimit",
    ] {
        if p.has(unsupported) {
            bail!("unsupported: \"{unsupported} is not simulated\"");
        }
    }
    let Some((image_ref, command_args)) = p.positional.split_first() else {
        return Err(usage("Missing expected argument '<image>'", RUN_USAGE));
    };
    if !p.has("--detach") {
        bail!("unsupported: \"the simulator runs containers detached only: pass --detach (-d)\"");
    }
    if let Some(os) = p
        .value("--os")
        .or(p.value("--platform").and_then(|pl| pl.split('/').next()))
        && os != "linux"
    {
        bail!("unsupported: \"platform {os} is not available for image {image_ref}\"");
    }
    if let Some(arch) = p
        .value("--arch")
        .or(p.value("--platform").and_then(|pl| pl.split('/').nth(1)))
    {
        let arch = match arch {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        if arch != host_arch() {
            bail!("unsupported: \"platform linux/{arch} is not available on this host\"");
        }
    }
    if let Some(network) = p.value("--network") {
        let name = network.split(',').next().unwrap_or(network);
        if name != "default" {
            return Err(not_found(&format!("network {name}")));
        }
    }
    let image = store
        .image(image_ref)
        .ok_or_else(|| not_found(&format!("image {image_ref}")))?;

    let id = match p.value("--name") {
        Some(name) => {
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && name.len() <= 128;
            if !valid {
                bail!(
                    "invalidArgument: \"invalid container name {name:?}: use letters, digits, \
                     '-', '_' and '.', starting with a letter or digit\""
                );
            }
            name.to_owned()
        }
        None => uuid(),
    };
    let cpus = match p.value("--cpus") {
        Some(c) => c
            .parse::<u32>()
            .ok()
            .filter(|c| *c > 0)
            .with_context(|| format!("invalidArgument: \"invalid number of CPUs {c:?}\""))?,
        None => DEFAULT_CPUS,
    };
    let memory_bytes = match p.value("--memory") {
        Some(m) => parse_memory(m)?,
        None => DEFAULT_MEMORY,
    };
    let (mut uid, mut gid) = image.uid_gid()?;
    if let Some(user) = p.value("--user") {
        (uid, gid) = store::parse_user(user)?;
    }
    if let Some(u) = p.value("--uid") {
        uid = store::parse_user(u)?.0;
    }
    if let Some(g) = p.value("--gid") {
        gid = store::parse_user(g)?.0;
    }
    let workdir = p
        .value("--workdir")
        .map(str::to_owned)
        .unwrap_or_else(|| image.workdir.clone());
    if !workdir.starts_with('/') {
        bail!("invalidArgument: \"the working directory {workdir:?} must be absolute\"");
    }
    let command: Vec<String> = match p.value("--entrypoint") {
        Some(entrypoint) => std::iter::once(entrypoint.to_owned())
            .chain(command_args.iter().cloned())
            .collect(),
        None if !command_args.is_empty() => command_args.to_vec(),
        None => image.cmd.clone(),
    };
    if command.is_empty() {
        bail!("invalidArgument: \"no command given and image {image_ref} has none\"");
    }

    let env = environment(&image, uid, &p)?;

    let mut volumes = Vec::new();
    for spec in p.values("--volume") {
        volumes.push(parse_volume(spec)?);
    }
    let mut tmpfs = Vec::new();
    for path in p.values("--tmpfs") {
        if !path.starts_with('/') {
            bail!("invalidArgument: \"tmpfs path {path:?} must be absolute\"");
        }
        tmpfs.push(path.to_owned());
    }
    let mut published = Vec::new();
    for spec in p.values("--publish") {
        published.push(parse_publish(spec)?);
    }
    let mut labels = BTreeMap::new();
    for label in p.values("--label") {
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        if k.is_empty() {
            bail!("invalidArgument: \"invalid label {label:?}\"");
        }
        labels.insert(k.to_owned(), v.to_owned());
    }
    let config = ContainerConfig {
        id: id.clone(),
        image: image.reference.clone(),
        command,
        workdir,
        user: (uid, gid),
        labels,
        published,
        cpus,
        memory_bytes,
        read_only: p.has("--read-only"),
        tmpfs,
        volumes,
        remove: p.has("--remove"),
    };

    // The id is taken by making its directory: atomic across processes.
    let dir = store.container_dir(&id);
    fs::create_dir_all(store.root().join("containers"))?;
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("exists: \"container with id {id} already exists\"")
        }
        Err(e) => return Err(e.into()),
    }
    let started = start_daemon(store, &config, &env);
    if let Err(e) = started {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    if let Some(cidfile) = p.value("--cidfile") {
        fs::write(cidfile, &id)?;
    }
    println!("{id}");
    Ok(0)
}

/// Forks the daemon of `config`'s container and waits for its word.
fn start_daemon(store: &ContainerStore, config: &ContainerConfig, env: &[String]) -> Result<()> {
    let dir = store.container_dir(&config.id);
    write_atomic(
        &dir.join("config.json"),
        &serde_json::to_vec_pretty(config)?,
    )?;
    let log = fs::File::create(dir.join("daemon.log"))?;
    let exe = std::env::current_exe().context("find the simulator")?;
    let mut child = Command::new(exe)
        .arg0("container")
        .arg("__daemon")
        .arg(store.root())
        .arg(&config.id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("internalError: \"start the container's daemon\"")?;
    // The environment (secrets included) goes through a pipe, never to disk.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&serde_json::to_vec(env)?);
    }
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let line = line.trim_end();
    if line == "ok" {
        return Ok(());
    }
    let _ = child.wait();
    if let Some(message) = line.strip_prefix("err ") {
        bail!("{message}");
    }
    let said = fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    bail!(
        "internalError: \"the container's daemon exited before it ran the container: {}\"",
        said.trim()
    )
}

/// A process's environment (`K=V`), later entries winning: defaults, the image's, the env
/// files (`--env-file`), then `--env`; a bare name takes the caller's value.
pub(super) fn environment(
    image: &store::ImageConfig,
    uid: u32,
    p: &super::args::Parsed,
) -> Result<Vec<String>> {
    let home = match uid {
        0 => "/root".to_owned(),
        u if Some(u) == image.uid_gid().ok().map(|(u, _)| u) => "/home/node".to_owned(),
        _ => "/".to_owned(),
    };
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), home),
    ];
    let mut set = |key: &str, value: String| {
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => env.push((key.to_owned(), value)),
        };
    };
    for kv in &image.env {
        if let Some((k, v)) = kv.split_once('=') {
            set(k, v.to_owned());
        }
    }
    for file in p.values("--env-file") {
        let text = fs::read_to_string(file)
            .with_context(|| format!("invalidArgument: \"cannot read the env file {file}\""))?;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) => set(k.trim_end(), v.to_owned()),
                None => {
                    if let Ok(v) = std::env::var(line.trim_end()) {
                        set(line.trim_end(), v);
                    }
                }
            }
        }
    }
    for kv in p.values("--env") {
        match kv.split_once('=') {
            Some((k, v)) => set(k, v.to_owned()),
            None => {
                if let Ok(v) = std::env::var(kv) {
                    set(kv, v);
                }
            }
        }
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}
