//! Booting and tearing down one jail (Linux only).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use substrate_core::{
    AuditSink, BootPhase, BootSpec, BootedHarness, BoundaryEvent, Endpoint, EnvVars, Error,
    ExitReason, HarnessClient, Limit, LimitHit, NetworkPolicy, ProcessExit, Result, Secret,
    SubstrateKind, Teardown, TeardownReport, WorkdirPolicy,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use substrate_egress::{
    BrokerConfig, BrokerPlan, CredentialBroker, EgressPolicy, EgressProxy, ProxyConfig,
};

use crate::cgroup::Cgroup;
use crate::jail::{self, JailCommand, JailConfig, JailNetwork, ReadOnlyBind, SystemEntry};
use crate::version::{BwrapVersion, MIN_VERSION};
use crate::{BwrapSubstrate, reaper, seccomp};

/// Lines of bwrap's and the harness's stderr kept for error messages.
const STDERR_TAIL: usize = 40;
/// How long the harness gets to stop its engines after SIGTERM.
const GRACE: Duration = Duration::from_secs(3);
/// Host uids handed to sandboxes when the caller is root: far above any account or subuid range.
const SANDBOX_HOST_UID_BASE: u32 = 0x6000_0000;
const SANDBOX_HOST_UID_SPAN: u32 = 0x1000_0000;

/// Top-level paths bound read-only when they exist (directories) or recreated (symlinks).
const SYSTEM_PATHS: [&str; 7] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

pub(crate) async fn boot(sub: &BwrapSubstrate, spec: BootSpec) -> Result<BootedHarness> {
    let token = Secret::random_token()?;
    // Leftovers of crashed owners go first (boots of live processes are never touched).
    match reaper::reap_orphans(&sub.base_dir) {
        Ok(r) if !r.dirs.is_empty() => {
            tracing::info!(dirs = r.dirs.len(), "removed leftovers of crashed runs");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not look for leftovers of crashed runs"),
    }
    let pre = spec
        .run_phase(BootPhase::Preflight, |_| async { preflight(sub, &spec) })
        .await?;
    let mut teardown = BwrapTeardown::new(&spec);
    let result = async {
        let layout = spec
            .run_phase(BootPhase::Stage, |_| async {
                let layout = stage_layout(sub, &spec, &pre, &mut teardown)?;
                if let Some(policy) = &pre.egress {
                    teardown.egress = Some(start_egress(sub, &spec, policy, &layout)?);
                }
                if let Some(plan) = &pre.broker {
                    teardown.broker = Some(start_broker(&spec, plan, &layout)?);
                }
                Ok(layout)
            })
            .await?;
        start(sub, &spec, &pre, &layout, &token, &mut teardown).await?;
        Ok(layout)
    }
    .await;
    match result {
        Ok(layout) => Ok(BootedHarness::new(
            SubstrateKind::Bwrap,
            Endpoint::Unix(layout.socket),
            token,
            Box::new(teardown),
        )
        .with_terminals(Arc::new(crate::enter::EnterHost::new(layout.root)))),
        Err(e) => {
            if let Err(cleanup) = teardown.shutdown().await {
                tracing::error!(error = %cleanup, "cleanup after a failed boot failed");
            }
            Err(e)
        }
    }
}

/// Creates a boot's directories, mounts and cgroup, recording each in `teardown` as it is
/// made so that a failure part-way removes what exists.
fn stage_layout(
    sub: &BwrapSubstrate,
    spec: &BootSpec,
    pre: &Preflight,
    teardown: &mut BwrapTeardown,
) -> Result<Layout> {
    let mut layout = Layout::create(&sub.base_dir, &spec.label, pre.host_id)?;
    teardown.root = Some(layout.root.clone());
    layout.expose(&pre.unreachable, &mut teardown.mounts)?;
    if let Some(bytes) = spec.limits.disk_bytes {
        layout.cap_workdir(bytes, pre.host_id)?;
        teardown.mounts.push(layout.workdir.clone());
    }
    teardown.cgroup = Cgroup::create(&layout.name, &spec.limits)?;
    if let Some(cg) = &teardown.cgroup {
        layout.record_cgroups(cg.dirs())?;
    }
    Ok(layout)
}

/// What preflight found: resolved binaries, the bwrap version, who the sandbox runs as.
#[derive(Debug)]
struct Preflight {
    bwrap: PathBuf,
    node: PathBuf,
    network: JailNetwork,
    /// The allow-list, under `NetworkPolicy::Allow`.
    egress: Option<EgressPolicy>,
    /// The brokered credentials, when the boot has any.
    broker: Option<BrokerPlan>,
    /// `Some((uid, gid))` when the caller is root and bwrap runs as this unprivileged id.
    host_id: Option<(u32, u32)>,
    /// Bind sources that id cannot reach where they are.
    unreachable: Vec<PathBuf>,
}

fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn preflight(sub: &BwrapSubstrate, spec: &BootSpec) -> Result<Preflight> {
    let network = match &spec.network {
        NetworkPolicy::None => JailNetwork::Isolated,
        NetworkPolicy::Host => {
            tracing::warn!(
                label = %spec.label,
                "bwrap: network policy `host` shares the host's network namespace: the sandbox \
                 reaches every host service and every other sandbox's loopback port"
            );
            JailNetwork::Host
        }
        NetworkPolicy::Allow(_) => JailNetwork::Isolated,
        _ => {
            return Err(Error::Unsupported {
                what: String::from("this network policy"),
                reason: String::from("the bwrap runtime knows `none` and `host`"),
            });
        }
    };
    if let Some(bytes) = spec.limits.disk_bytes {
        crate::disk::check(bytes)?;
    }
    let egress = match &spec.network {
        NetworkPolicy::Allow(rules) => Some(EgressPolicy::from_rules(rules)?),
        _ => None,
    };
    let broker = BrokerPlan::for_spec(spec, &format!("http://127.0.0.1:{BROKER_RELAY_PORT}"))?;
    let bwrap = which(&sub.bwrap).ok_or_else(|| Error::NotInstalled {
        tool: sub.bwrap.display().to_string(),
        hint: String::from(
            "install bubblewrap 0.8 or newer (Debian/Ubuntu: `apt-get install bubblewrap`)",
        ),
    })?;
    let out = std::process::Command::new(&bwrap)
        .arg("--version")
        .output()
        .map_err(|e| Error::io(format!("run `{} --version`", bwrap.display()), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = BwrapVersion::parse(&text).ok_or_else(|| Error::NotInstalled {
        tool: bwrap.display().to_string(),
        hint: format!("`bwrap --version` printed {text:?}, not a bubblewrap version"),
    })?;
    if version < MIN_VERSION {
        return Err(Error::NotInstalled {
            tool: format!("bubblewrap {version}"),
            hint: format!(
                "bubblewrap {MIN_VERSION} or newer is needed (for --disable-userns); install a \
                 newer package or build it from https://github.com/containers/bubblewrap"
            ),
        });
    }
    let node = which(&sub.node)
        .and_then(|p| std::fs::canonicalize(p).ok())
        .ok_or_else(|| Error::NotInstalled {
            tool: sub.node.display().to_string(),
            hint: String::from("install Node.js 20 or newer (e.g. `apt-get install nodejs`)"),
        })?;
    if !sub.node_modules.join("@anthropic-ai").is_dir() {
        return Err(Error::invalid(
            "node_modules",
            format!(
                "{} holds no staged engine packages; run `cargo xtask stage DIR` and pass \
                 DIR/node_modules",
                sub.node_modules.display()
            ),
        ));
    }
    let mut unreachable = Vec::new();
    let host_id = if nix::unistd::geteuid().is_root() {
        let id = match &sub.project {
            // A fresh uid could not write the project: the sandbox runs as its owner.
            Some(project) if project.writable => project_owner(&project.source)?,
            _ => {
                let id = SANDBOX_HOST_UID_BASE + random_u32()? % SANDBOX_HOST_UID_SPAN;
                (id, id)
            }
        };
        check_reachable_by_others(&sub.base_dir)?;
        // Sources behind a directory others cannot search (a checkout under /root, say) are
        // bound, read-only, into the boot directory first, where the sandbox's uid reaches
        // them.
        let read_only_project = sub
            .project
            .as_ref()
            .filter(|p| !p.writable)
            .map(|p| &p.source);
        for path in [&node, &sub.node_modules]
            .into_iter()
            .chain(sub.extra_ro.iter().map(|b| &b.source))
            .chain(read_only_project)
        {
            if check_reachable_by_others(path).is_err() {
                unreachable.push(path.clone());
            }
        }
        Some(id)
    } else {
        None
    };
    Ok(Preflight {
        bwrap,
        node,
        network,
        egress,
        broker,
        host_id,
        unreachable,
    })
}

/// The owner of a project bound read-write when the caller is root.
fn project_owner(dir: &Path) -> Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)
        .map_err(|e| Error::io(format!("open the project {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(
            "project",
            format!("{} is not a directory", dir.display()),
        ));
    }
    if meta.uid() == 0 {
        return Err(Error::invalid(
            "project",
            format!(
                "{} is owned by root: a read-write project runs the sandbox as the project's \
                 owner, and never as root. Use the copy mode, or chown the project to a user",
                dir.display()
            ),
        ));
    }
    Ok((meta.uid(), meta.gid()))
}

fn random_u32() -> Result<u32> {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io("read /dev/urandom", e))?;
    Ok(u32::from_ne_bytes(b))
}

/// When root drops to a fresh uid for bwrap, every bind source must be reachable by "others":
/// each existing ancestor searchable, the path itself readable.
fn check_reachable_by_others(path: &Path) -> Result<()> {
    let mut cur = PathBuf::new();
    for comp in path.components() {
        cur.push(comp);
        let Ok(meta) = std::fs::metadata(&cur) else {
            // Not there yet (a base dir created at boot): its parent was checked.
            return Ok(());
        };
        let mode = meta.permissions().mode();
        let needed = if meta.is_dir() { 0o001 } else { 0o004 };
        if mode & needed == 0 {
            return Err(Error::invalid(
                "bwrap bind source",
                format!(
                    "{} is not reachable by the sandbox: as root, each sandbox runs as its own \
                     unprivileged uid, and {} has mode {:o}. Pick a directory others can \
                     traverse (the default is under the system temp dir), or run as a \
                     non-root user",
                    path.display(),
                    cur.display(),
                    mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// A label as it appears in boot directory names: alphanumerics and `-`, at most 24.
pub(crate) fn boot_label(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(24)
        .collect()
}

/// One boot's host directory: `<base>/<label>-<random>/{run/, workdir/, harness.mjs, owner}`.
#[derive(Debug)]
struct Layout {
    name: String,
    /// Host sources re-bound inside the boot directory (source → where the sandbox's uid
    /// reaches it).
    exposed: std::collections::HashMap<PathBuf, PathBuf>,
    root: PathBuf,
    run: PathBuf,
    workdir: PathBuf,
    harness: PathBuf,
    socket: PathBuf,
}

impl Layout {
    fn create(base: &Path, label: &str, host_id: Option<(u32, u32)>) -> Result<Self> {
        std::fs::create_dir_all(base)
            .map_err(|e| Error::io(format!("create {}", base.display()), e))?;
        if host_id.is_some() {
            // Sandboxes (other uids) must traverse it, never list it.
            std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| Error::io(format!("chmod {}", base.display()), e))?;
        }
        let safe = boot_label(label);
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "{}-",
                if safe.is_empty() { "boot" } else { &safe }
            ))
            .tempdir_in(base)
            .map_err(|e| Error::io(format!("create a boot directory in {}", base.display()), e))?;
        let root = dir.keep();
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| String::from("boot"));
        let io = |what: &str, p: &Path, e| Error::io(format!("{what} {}", p.display()), e);
        if host_id.is_some() {
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| io("chmod", &root, e))?;
        }
        reaper::write_owner(&root)?;
        let run = root.join("run");
        let workdir = root.join("workdir");
        for dir in [&run, &workdir] {
            std::fs::create_dir(dir).map_err(|e| io("create", dir, e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io("chmod", dir, e))?;
            if let Some((uid, gid)) = host_id {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                    .map_err(|e| io("chown", dir, e))?;
            }
        }
        let harness = harness_bundle::write_harness(&root)
            .map_err(|e| Error::io("write harness.mjs", std::io::Error::other(e.to_string())))?;
        std::fs::set_permissions(&harness, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| io("chmod", &harness, e))?;
        Ok(Self {
            name,
            exposed: std::collections::HashMap::new(),
            socket: run.join("harness.sock"),
            root,
            run,
            workdir,
            harness,
        })
    }

    /// Binds each of `sources` read-only under `<root>/binds/`, recording the mount points in
    /// `mounts` as they are made (so teardown undoes exactly what was done).
    fn expose(&mut self, sources: &[PathBuf], mounts: &mut Vec<PathBuf>) -> Result<()> {
        if sources.is_empty() {
            return Ok(());
        }
        let dir = self.root.join("binds");
        std::fs::create_dir(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
        for (i, source) in sources.iter().enumerate() {
            let target = dir.join(i.to_string());
            let made = if source.is_dir() {
                std::fs::create_dir(&target)
            } else {
                std::fs::File::create(&target).map(drop)
            };
            made.map_err(|e| Error::io(format!("create {}", target.display()), e))?;
            crate::disk::bind_read_only(source, &target)?;
            mounts.push(target.clone());
            self.exposed.insert(source.clone(), target);
        }
        Ok(())
    }

    /// Where the sandbox's bwrap finds `source`.
    fn source(&self, source: &Path) -> PathBuf {
        self.exposed
            .get(source)
            .cloned()
            .unwrap_or_else(|| source.to_path_buf())
    }

    /// Puts the workdir on its own `bytes`-sized filesystem, owned by the sandbox.
    fn cap_workdir(&self, bytes: u64, host_id: Option<(u32, u32)>) -> Result<()> {
        let owner = host_id.unwrap_or_else(|| {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        });
        crate::disk::mount_capped(&self.root, &self.workdir, bytes, owner)?;
        std::fs::set_permissions(&self.workdir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("chmod {}", self.workdir.display()), e))
    }

    fn record_cgroups(&self, dirs: &[PathBuf]) -> Result<()> {
        let text: String = dirs.iter().map(|d| format!("{}\n", d.display())).collect();
        let path = self.root.join(reaper::CGROUPS_FILE);
        std::fs::write(&path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))
    }
}

/// A pipe whose read end the sandbox inherits.
struct Inherited {
    read: OwnedFd,
}

impl Inherited {
    /// A pipe pre-filled with `data` (must fit the pipe buffer: small payloads only).
    fn with_data(data: &[u8]) -> Result<Self> {
        let (read, write) = pipe()?;
        let mut w = std::fs::File::from(write);
        w.write_all(data)
            .map_err(|e| Error::io("fill a pipe for bwrap", e))?;
        Ok(Self { read })
    }

    fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("create a pipe", std::io::Error::from(e)))
}

fn system_entries() -> Vec<SystemEntry> {
    let mut out = Vec::new();
    for p in SYSTEM_PATHS {
        let path = PathBuf::from(p);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(&path) {
                    out.push(SystemEntry::Symlink { target, link: path });
                }
            }
            Ok(m) if m.is_dir() => out.push(SystemEntry::ReadOnly(path)),
            _ => {}
        }
    }
    out
}

/// The JSON object the harness reads from `HARNESS_ENV_FD`: its token and the engine's
/// variables (secret or not: none of them belongs in an argv).
fn secret_env(token: &Secret, envs: &EnvVars) -> Result<Vec<u8>> {
    let mut map = serde_json::Map::new();
    for (name, value) in envs.iter() {
        map.insert(name.to_owned(), value.expose().into());
    }
    map.insert("HARNESS_TOKEN".into(), token.expose().into());
    serde_json::to_vec(&map).map_err(|e| Error::invalid("engine envs", e.to_string()))
}

/// The egress proxy's relay port on the sandbox's own loopback.
const EGRESS_RELAY_PORT: u16 = 3128;

/// The credential broker's relay port on the sandbox's own loopback.
const BROKER_RELAY_PORT: u16 = 3129;

/// Makes a host socket in the run directory usable by the sandbox: only the sandbox reaches
/// the run directory (mode 0700, its own uid), and the socket must accept that uid.
fn open_to_sandbox(path: &Path) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

/// Starts the boot's credential broker on `<run>/broker.sock`, reachable from inside as
/// `http://127.0.0.1:3129` through the harness's relay.
fn start_broker(spec: &BootSpec, plan: &BrokerPlan, layout: &Layout) -> Result<CredentialBroker> {
    let path = layout.run.join("broker.sock");
    let broker = CredentialBroker::bind(&path, plan, BrokerConfig::new(spec.audit.clone()))
        .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
    open_to_sandbox(&path)?;
    Ok(broker)
}

/// Starts the boot's egress proxy on `<run>/egress.sock`, reachable from inside as
/// `/run/harness/egress.sock`.
fn start_egress(
    sub: &BwrapSubstrate,
    spec: &BootSpec,
    policy: &EgressPolicy,
    layout: &Layout,
) -> Result<EgressProxy> {
    let mut config = ProxyConfig::new(policy.clone(), spec.audit.clone());
    config.hosts = sub.egress_hosts.clone();
    config.name_servers = sub.egress_name_servers.clone();
    let path = layout.run.join("egress.sock");
    let proxy = EgressProxy::bind(&path, config)
        .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
    open_to_sandbox(&path)?;
    Ok(proxy)
}

/// The harness's and engines' variables for the host services this boot has: the relays
/// (egress proxy, credential broker), and under `allow` the proxy for clients.
fn relay_env(pre: &Preflight) -> Vec<(OsString, OsString)> {
    let mut relays = Vec::new();
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    if pre.egress.is_some() {
        relays.push(format!("{EGRESS_RELAY_PORT}={}/egress.sock", jail::RUN_DIR));
        let proxy = format!("http://127.0.0.1:{EGRESS_RELAY_PORT}");
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.push((name.into(), proxy.clone().into()));
        }
        // The sandbox's own loopback (a dev server the agent starts, the broker's relay) is
        // not the host's.
        for name in ["NO_PROXY", "no_proxy"] {
            env.push((name.into(), "localhost,127.0.0.1,::1".into()));
        }
    }
    if pre.broker.is_some() {
        relays.push(format!("{BROKER_RELAY_PORT}={}/broker.sock", jail::RUN_DIR));
    }
    if !relays.is_empty() {
        env.push(("HARNESS_RELAYS".into(), relays.join(",").into()));
    }
    env
}

/// What to start in the jail.
enum Launch {
    /// The harness, with the JSON its `HARNESS_ENV_FD` pipe carries.
    Harness {
        secrets: Vec<u8>,
        env: Vec<(OsString, OsString)>,
    },
    /// One command; its variables travel with the argv through `--args FD`. With `tty`, that
    /// terminal (a PTY's replica side) is its stdin, stdout and stderr.
    Exec {
        argv: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
        tty: Option<OwnedFd>,
    },
}

/// A started jail.
struct Spawned {
    child: Child,
    info: OwnedFd,
    described: String,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

/// Writes `data` to a pipe from a thread (it may exceed the pipe's buffer); the read end is
/// for the sandbox.
fn feed(data: Vec<u8>) -> Result<OwnedFd> {
    let (read, write) = pipe()?;
    std::thread::spawn(move || {
        // EPIPE means bwrap died first; its exit is reported where it is awaited.
        let _ = std::fs::File::from(write).write_all(&data);
    });
    Ok(read)
}

/// Builds the jail's argv and spawns bwrap: in its cgroup, as the sandbox's host uid, with the
/// data pipes inherited.
fn spawn_jail(
    sub: &BwrapSubstrate,
    pre: &Preflight,
    layout: &Layout,
    cgroup: Option<&Cgroup>,
    launch: Launch,
) -> Result<Spawned> {
    let passwd = Inherited::with_data(jail::passwd().as_bytes())?;
    let group = Inherited::with_data(jail::group().as_bytes())?;
    let mut filters = Vec::new();
    for program in seccomp::filters()? {
        filters.push(Inherited::with_data(&program)?);
    }
    let (info_read, info_write) = pipe()?;
    let mut inherit: Vec<RawFd> = vec![passwd.fd(), group.fd(), info_write.as_raw_fd()];
    inherit.extend(filters.iter().map(Inherited::fd));
    let mut keep_open: Vec<OwnedFd> = Vec::new();
    let mut tty = None;
    let (command, env, exec_mode) = match launch {
        Launch::Harness { secrets, env } => {
            let fd = feed(secrets)?;
            let command = JailCommand::Harness {
                env_fd: fd.as_raw_fd(),
            };
            inherit.push(fd.as_raw_fd());
            keep_open.push(fd);
            (command, env, false)
        }
        Launch::Exec {
            argv,
            env,
            tty: terminal,
        } => {
            tty = terminal;
            (JailCommand::Exec(argv), env, true)
        }
    };
    let config = JailConfig {
        bwrap: pre.bwrap.clone(),
        system: system_entries(),
        etc_files: jail::default_etc_files(),
        passwd_fd: passwd.fd(),
        group_fd: group.fd(),
        node: layout.source(&pre.node),
        harness: layout.harness.clone(),
        node_modules: layout.source(&sub.node_modules),
        run_dir: layout.run.clone(),
        workdir: layout.workdir.clone(),
        extra_ro: sub
            .extra_ro
            .iter()
            .map(|b| ReadOnlyBind {
                source: layout.source(&b.source),
                dest: b.dest.clone(),
            })
            .collect(),
        project: sub.project.as_ref().map(|p| jail::ProjectBind {
            source: if p.writable {
                p.source.clone()
            } else {
                layout.source(&p.source)
            },
            dest: p.dest.clone(),
            writable: p.writable,
        }),
        network: pre.network,
        tmp_bytes: sub.tmp_bytes,
        seccomp_fds: filters.iter().map(Inherited::fd).collect(),
        info_fd: Some(info_write.as_raw_fd()),
        command,
        env,
    };
    let full = config.command();
    let mut std_cmd = if exec_mode {
        // The options — the command's variables among them — stay out of the host's process
        // list: bwrap reads them from a pipe. (bwrap takes the command itself only from its
        // real command line.)
        let args = full.get_args();
        let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
        let mut packed = Vec::new();
        for arg in &args[..split] {
            packed.extend_from_slice(arg.as_encoded_bytes());
            packed.push(0);
        }
        let fd = feed(packed)?;
        let mut cmd = std::process::Command::new(full.program());
        cmd.env_clear()
            .arg("--args")
            .arg(fd.as_raw_fd().to_string())
            .args(&args[split..]);
        inherit.push(fd.as_raw_fd());
        keep_open.push(fd);
        cmd
    } else {
        full.to_command()
    };
    let described = if exec_mode {
        format!("{} --args <argv>", pre.bwrap.display())
    } else {
        full.to_string()
    };
    match &tty {
        Some(tty) => {
            let io = |fd: &OwnedFd| {
                fd.try_clone()
                    .map(Stdio::from)
                    .map_err(|e| Error::io("share the terminal", e))
            };
            std_cmd.stdin(io(tty)?).stdout(io(tty)?).stderr(io(tty)?);
        }
        None => {
            std_cmd
                .stdin(Stdio::null())
                .stdout(if exec_mode {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stderr(Stdio::piped());
        }
    }
    std_cmd.process_group(0);
    if let Some((uid, gid)) = pre.host_id {
        std_cmd.uid(uid).gid(gid);
    }
    let cgroup_fds = cgroup.map(Cgroup::procs_fds).unwrap_or_default();
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and calls only fcntl(2) and
    // write(2), which are async-signal-safe; it allocates nothing (both vectors were built
    // before the fork and are only read).
    unsafe {
        std_cmd.pre_exec(move || {
            crate::cgroup::enter(&cgroup_fds)?;
            for fd in &inherit {
                if libc::fcntl(*fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut cmd = Command::from(std_cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotInstalled {
            tool: pre.bwrap.display().to_string(),
            hint: String::from("install bubblewrap (`apt-get install bubblewrap`)"),
        },
        _ => Error::io(format!("spawn `{described}`"), e),
    })?;
    // The child has its copies; ours go now, so that EOF and EPIPE mean what they should.
    drop((passwd, group, filters, info_write, keep_open, tty));
    let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
    // An exec's stderr belongs to its caller; the harness's is logged and its tail kept.
    let stderr_task = if exec_mode {
        None
    } else {
        child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(forward_stderr(stderr, stderr_tail.clone())))
    };
    Ok(Spawned {
        child,
        info: info_read,
        described,
        stderr_tail,
        stderr_task,
    })
}

/// Learns the sandbox's host pid from bwrap's info fd and records it for the reaper.
async fn record_sandbox_pid(info: OwnedFd, layout: &Layout) -> Option<i32> {
    let pid = tokio::task::spawn_blocking(move || read_child_pid(info))
        .await
        .ok()
        .flatten()?;
    let _ = std::fs::write(layout.root.join(reaper::SANDBOX_FILE), format!("{pid}\n"));
    Some(pid)
}

async fn start(
    sub: &BwrapSubstrate,
    spec: &BootSpec,
    pre: &Preflight,
    layout: &Layout,
    token: &Secret,
    teardown: &mut BwrapTeardown,
) -> Result<()> {
    let spawned = spec
        .run_phase(BootPhase::Spawn, |_| async {
            let envs = pre
                .broker
                .as_ref()
                .map_or(&spec.engine_envs, |b| &b.engine_envs);
            let secrets = secret_env(token, envs)?;
            let env = relay_env(pre);
            spawn_jail(
                sub,
                pre,
                layout,
                teardown.cgroup.as_ref(),
                Launch::Harness { secrets, env },
            )
        })
        .await?;
    let Spawned {
        child,
        info,
        described,
        stderr_tail,
        stderr_task,
    } = spawned;
    teardown.child = Some(child);
    teardown.sandbox_pid = record_sandbox_pid(info, layout).await;

    let client = HarnessClient::new(Endpoint::Unix(layout.socket.clone()), Some(token.clone()))?;
    let deadline = spec.deadlines.get(BootPhase::Health);
    spec.run_phase(BootPhase::Health, |probe| async move {
        let Some(child) = teardown.child.as_mut() else {
            return Err(Error::invalid("boot", "no bwrap process"));
        };
        tokio::select! {
            health = client.wait_healthy(deadline, Some(&probe)) => health.map(drop),
            status = child.wait() => {
                let status = status.map_err(|e| Error::io("wait for bwrap", e))?;
                if let Some(task) = stderr_task {
                    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
                }
                Err(Error::ProcessFailed {
                    command: described,
                    status: status.to_string(),
                    stderr: tail_text(&stderr_tail),
                })
            }
        }
    })
    .await
}

/// What a command run in a fresh sandbox did.
#[derive(Clone)]
pub struct ExecOutput {
    /// How it ended.
    pub status: std::process::ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it (and bwrap) wrote to stderr.
    pub stderr: Vec<u8>,
    /// Processes the memory limit killed.
    pub oom_kills: u64,
    /// Forks the process limit refused.
    pub pids_limit_hits: u64,
    /// Why it ended, typed (also reported on the boot's audit sink).
    pub reason: ExitReason,
}

impl std::fmt::Debug for ExecOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecOutput")
            .field("status", &self.status)
            .field("reason", &self.reason)
            .field("stdout", &String::from_utf8_lossy(&self.stdout))
            .field("stderr", &String::from_utf8_lossy(&self.stderr))
            .field("oom_kills", &self.oom_kills)
            .field("pids_limit_hits", &self.pids_limit_hits)
            .finish()
    }
}

/// How a command in its own jail ended.
#[derive(Debug, Clone, Copy)]
pub struct JailExit {
    /// bwrap's status (the command's exit code; a signal death as `128 + N`).
    pub status: std::process::ExitStatus,
    /// Why it ended, typed.
    pub reason: ExitReason,
    /// Processes the memory limit killed.
    pub oom_kills: u64,
    /// Forks the process limit refused.
    pub pids_limit_hits: u64,
}

/// Why a jailed command ended. bwrap's init passes a signal death on as exit code `128 + N`
/// (as shells do), so such codes count as the signal. A failure after the memory or pids limit
/// stopped something is put down to that limit.
fn exit_reason(
    status: std::process::ExitStatus,
    deadline: Option<Duration>,
    oom_kills: u64,
    pids_limit_hits: u64,
) -> ExitReason {
    use std::os::unix::process::ExitStatusExt;
    if let Some(d) = deadline {
        return ExitReason::Deadline(d);
    }
    if !status.success() && oom_kills > 0 {
        return ExitReason::OutOfMemory;
    }
    if !status.success() && pids_limit_hits > 0 {
        return ExitReason::PidsLimit;
    }
    match (status.code(), status.signal()) {
        (Some(code), _) if (129..=192).contains(&code) => ExitReason::Signaled(code - 128),
        (Some(code), _) => ExitReason::Exited(code),
        (None, Some(sig)) => ExitReason::Signaled(sig),
        (None, None) => ExitReason::Exited(-1),
    }
}

/// A command running in its own fresh jail. Dropping it kills the sandbox and removes its
/// directory and cgroup; [`JailProcess::wait`] and [`JailProcess::kill`] do so and report.
#[derive(Debug)]
pub struct JailProcess {
    teardown: BwrapTeardown,
    /// The command as a shell would show it, for its exit event.
    command: String,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    run_dir: PathBuf,
    workdir: PathBuf,
}

impl JailProcess {
    /// The command's standard output, once.
    pub fn take_stdout(&mut self) -> Option<tokio::process::ChildStdout> {
        self.stdout.take()
    }

    /// The command's (and bwrap's) standard error, once.
    pub fn take_stderr(&mut self) -> Option<tokio::process::ChildStderr> {
        self.stderr.take()
    }

    /// The host directory that is `/run/harness` inside.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The host directory that is `/workdir` inside.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The host pid of the sandbox's init (every process of the sandbox descends from it).
    pub fn sandbox_pid(&self) -> Option<i32> {
        self.teardown.sandbox_pid
    }

    /// Waits for the command to exit, then removes the sandbox.
    pub async fn wait(self) -> Result<JailExit> {
        self.wait_for(None).await
    }

    /// Waits for the command to exit — or, when `deadline` expires first, kills everything in
    /// the sandbox — then removes the sandbox. The exit, with its typed reason, is also
    /// reported on the boot's audit sink.
    pub async fn wait_for(mut self, deadline: Option<Duration>) -> Result<JailExit> {
        let Some(child) = self.teardown.child.as_mut() else {
            return Err(Error::invalid("exec", "the sandbox is already gone"));
        };
        let waited = match deadline {
            Some(limit) => tokio::time::timeout(limit, child.wait()).await.ok(),
            None => Some(child.wait().await),
        };
        let (status, expired) = match waited {
            Some(status) => (status.map_err(|e| Error::io("wait for bwrap", e))?, None),
            None => {
                // The sandbox's init takes its whole pid namespace with it.
                self.teardown.kill_all();
                let status = match self.teardown.child.as_mut() {
                    Some(child) => child
                        .wait()
                        .await
                        .map_err(|e| Error::io("wait for bwrap", e))?,
                    None => return Err(Error::invalid("exec", "the sandbox is already gone")),
                };
                (status, deadline)
            }
        };
        self.teardown.child = None;
        let (oom_kills, pids_limit_hits) = self
            .teardown
            .cgroup
            .as_ref()
            .map_or((0, 0), |cg| (cg.oom_kills(), cg.pids_limit_hits()));
        let reason = exit_reason(status, expired, oom_kills, pids_limit_hits);
        self.teardown
            .audit
            .emit(BoundaryEvent::ProcessExit(ProcessExit::new(
                self.command.clone(),
                reason,
                self.teardown.started.elapsed(),
            )));
        self.teardown.shutdown().await?;
        Ok(JailExit {
            status,
            reason,
            oom_kills,
            pids_limit_hits,
        })
    }

    /// Kills the sandbox and removes it.
    pub async fn kill(mut self) -> Result<()> {
        self.teardown.shutdown().await
    }
}

/// Puts the seed's tree into the workdir before the command starts, owned by the sandbox's
/// uid (symlinks as they are, special files left out): a handed-over seed's entries are
/// moved when they are on the workdir's filesystem, the rest copied.
fn seed_workdir(seed: crate::Seed<'_>, workdir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let io = |what: &str, p: &Path, e| Error::io(format!("{what} {}", p.display()), e);
    let (from, moved) = match seed {
        crate::Seed::Copy(from) => (from, false),
        crate::Seed::Move(from) => (from, true),
    };
    for entry in std::fs::read_dir(from).map_err(|e| io("read", from, e))? {
        let entry = entry.map_err(|e| io("read", from, e))?;
        let (source, target) = (entry.path(), workdir.join(entry.file_name()));
        if moved {
            match std::fs::rename(&source, &target) {
                Ok(()) => {
                    settle_moved(&target, owner)?;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {}
                Err(e) => return Err(io("move", &source, e)),
            }
        }
        copy_entry(&source, &target, owner)?;
    }
    Ok(())
}

/// Copies one entry of a seed (a whole tree for a directory), owned by `owner`.
fn copy_entry(source: &Path, target: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let io = |what: &str, p: &Path, e| Error::io(format!("{what} {}", p.display()), e);
    let chown = |p: &Path| -> Result<()> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| io("chown", p, e))?;
        }
        Ok(())
    };
    let mut stack = vec![(source.to_path_buf(), target.to_path_buf())];
    while let Some((source, target)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&source).map_err(|e| io("inspect", &source, e))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            std::fs::create_dir(&target).map_err(|e| io("create", &target, e))?;
            std::fs::set_permissions(
                &target,
                std::fs::Permissions::from_mode(meta.permissions().mode() & 0o777),
            )
            .map_err(|e| io("chmod", &target, e))?;
            chown(&target)?;
            for entry in std::fs::read_dir(&source).map_err(|e| io("read", &source, e))? {
                let entry = entry.map_err(|e| io("read", &source, e))?;
                stack.push((entry.path(), target.join(entry.file_name())));
            }
        } else if kind.is_symlink() {
            let link = std::fs::read_link(&source).map_err(|e| io("read link", &source, e))?;
            std::os::unix::fs::symlink(link, &target).map_err(|e| io("create", &target, e))?;
            chown(&target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target).map_err(|e| io("copy", &source, e))?;
            chown(&target)?;
        }
    }
    Ok(())
}

/// Makes a moved tree what a copy would have been: special files removed (a copy leaves them
/// out), the rest handed to the sandbox's uid when it has one (never following a symlink).
fn settle_moved(root: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let io = |what: &str, p: &Path, e| Error::io(format!("{what} {}", p.display()), e);
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io("inspect", &path, e))?;
        let kind = meta.file_type();
        if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
            std::fs::remove_file(&path).map_err(|e| io("remove", &path, e))?;
            continue;
        }
        if let Some((uid, gid)) = owner
            && (meta.uid(), meta.gid()) != (uid, gid)
        {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .map_err(|e| io("chown", &path, e))?;
        }
        if kind.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| io("read", &path, e))? {
                stack.push(entry.map_err(|e| io("read", &path, e))?.path());
            }
        }
    }
    Ok(())
}

/// The relay a single command runs under when its spec brokers a key: TCP listeners on the
/// sandbox's 127.0.0.1 piped to the broker's socket, then the command with the same stdio
/// (terminal signals are the command's, so the relay ignores them), its exit status passed on.
const RELAY_MJS: &str = r#"import net from "node:net";
import { spawn } from "node:child_process";
const args = process.argv.slice(2);
const split = args.indexOf("--");
for (const pair of args.slice(0, split)) {
  const [port, socket] = [Number(pair.slice(0, pair.indexOf("="))), pair.slice(pair.indexOf("=") + 1)];
  net.createServer((c) => { const u = net.connect(socket); c.pipe(u).pipe(c); u.on("error", () => c.destroy()); c.on("error", () => u.destroy()); })
    .listen(port, "127.0.0.1").unref();
}
for (const s of ["SIGINT", "SIGQUIT", "SIGTSTP", "SIGHUP"]) process.on(s, () => {});
const [cmd, ...rest] = args.slice(split + 1);
const child = spawn(cmd, rest, { stdio: "inherit" });
child.on("error", (e) => { console.error(`${cmd}: ${e.message}`); process.exit(127); });
child.on("exit", (code, signal) => process.exit(code ?? 128 + (signal ? ({ SIGKILL: 9, SIGTERM: 15, SIGINT: 2 }[signal] ?? 1) : 0)));
"#;

/// Starts one command in a fresh jail (same mounts, namespaces, filters and limits as a
/// harness boot).
pub(crate) async fn spawn(
    sub: &BwrapSubstrate,
    spec: &BootSpec,
    argv: Vec<OsString>,
    tty: Option<OwnedFd>,
    seed: Option<crate::Seed<'_>>,
) -> Result<JailProcess> {
    if argv.is_empty() {
        return Err(Error::invalid("exec", "no command given"));
    }
    let command = substrate_core::CommandSpec::new(argv[0].clone())
        .args(argv[1..].iter().cloned())
        .to_string();
    let pre = preflight(sub, spec)?;
    if pre.egress.is_some() {
        return Err(Error::Unsupported {
            what: String::from("network policy `allow` for a single command"),
            reason: String::from(
                "its relay lives in the harness; boot a harness, or use `none` or `host`",
            ),
        });
    }
    let mut teardown = BwrapTeardown::new(spec);
    let started = async {
        let layout = stage_layout(sub, spec, &pre, &mut teardown)?;
        if let Some(seed) = seed {
            seed_workdir(seed, &layout.workdir, pre.host_id)?;
        }
        // A model key stays on the host here too: the command gets the placeholders, and a
        // relay on its own 127.0.0.1 to the broker runs beside it.
        let (env_vars, argv) = match &pre.broker {
            Some(plan) => {
                teardown.broker = Some(start_broker(spec, plan, &layout)?);
                let relay = layout.run.join("relay.mjs");
                std::fs::write(&relay, RELAY_MJS)
                    .map_err(|e| Error::io(format!("write {}", relay.display()), e))?;
                let mut wrapped: Vec<OsString> = vec![
                    format!("{}/bin/node", jail::HARNESS_DIR).into(),
                    format!("{}/relay.mjs", jail::RUN_DIR).into(),
                    format!("{BROKER_RELAY_PORT}={}/broker.sock", jail::RUN_DIR).into(),
                    "--".into(),
                ];
                wrapped.extend(argv);
                (&plan.engine_envs, wrapped)
            }
            None => (&spec.engine_envs, argv),
        };
        let env = env_vars
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v.expose())))
            .collect();
        let mut spawned = spawn_jail(
            sub,
            &pre,
            &layout,
            teardown.cgroup.as_ref(),
            Launch::Exec { argv, env, tty },
        )?;
        let stdout = spawned.child.stdout.take();
        let stderr = spawned.child.stderr.take();
        teardown.child = Some(spawned.child);
        teardown.sandbox_pid = record_sandbox_pid(spawned.info, &layout).await;
        Ok::<_, Error>((layout, stdout, stderr))
    }
    .await;
    match started {
        Ok((layout, stdout, stderr)) => Ok(JailProcess {
            teardown,
            command,
            stdout,
            stderr,
            run_dir: layout.run,
            workdir: layout.workdir,
        }),
        Err(e) => {
            if let Err(cleanup) = teardown.shutdown().await {
                tracing::error!(error = %cleanup, "cleanup after a failed exec failed");
            }
            Err(e)
        }
    }
}

/// Runs one command in a fresh jail, collects its output and removes the jail.
pub(crate) async fn exec(
    sub: &BwrapSubstrate,
    spec: &BootSpec,
    argv: Vec<OsString>,
    deadline: Option<Duration>,
) -> Result<ExecOutput> {
    use tokio::io::AsyncReadExt;
    let mut process = spawn(sub, spec, argv, None, None).await?;
    let read_all = |pipe: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>| {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf).await;
            }
            buf
        })
    };
    let stdout = read_all(process.take_stdout().map(|p| Box::new(p) as _));
    let stderr = read_all(process.take_stderr().map(|p| Box::new(p) as _));
    let exit = process.wait_for(deadline).await?;
    Ok(ExecOutput {
        status: exit.status,
        reason: exit.reason,
        stdout: stdout.await.unwrap_or_default(),
        stderr: stderr.await.unwrap_or_default(),
        oom_kills: exit.oom_kills,
        pids_limit_hits: exit.pids_limit_hits,
    })
}

/// Reads bwrap's `--info-fd` JSON (`{"child-pid": N, …}`) until it parses or the fd closes.
fn read_child_pid(fd: OwnedFd) -> Option<i32> {
    let mut file = std::fs::File::from(fd);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&buf) {
            return v
                .get("child-pid")?
                .as_i64()
                .and_then(|p| i32::try_from(p).ok());
        }
        match file.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    tail.lock()
        .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

async fn forward_stderr(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "harness", "{line}");
        if let Ok(mut t) = tail.lock() {
            if t.len() == STDERR_TAIL {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

/// Stops the sandbox, removes its cgroup and (unless kept) its directory.
#[derive(Debug)]
struct BwrapTeardown {
    egress: Option<EgressProxy>,
    broker: Option<CredentialBroker>,
    /// Where limit hits, the harness's exit and the teardown are reported.
    audit: AuditSink,
    label: String,
    started: Instant,
    /// Whether the teardown was reported (once, however often `shutdown` runs).
    reported: bool,
    /// Host mounts this boot made (re-bound sources, a size-capped workdir), in order.
    mounts: Vec<PathBuf>,
    child: Option<Child>,
    sandbox_pid: Option<i32>,
    cgroup: Option<Cgroup>,
    root: Option<PathBuf>,
    keep: bool,
}

impl BwrapTeardown {
    /// Nothing created yet; reports go to `spec`'s audit sink.
    fn new(spec: &BootSpec) -> Self {
        Self {
            egress: None,
            broker: None,
            audit: spec.audit.clone(),
            label: spec.label.clone(),
            started: Instant::now(),
            reported: false,
            mounts: Vec::new(),
            child: None,
            sandbox_pid: None,
            cgroup: None,
            root: None,
            keep: spec.workdir == WorkdirPolicy::Keep,
        }
    }

    /// Reports what the cgroup's limits stopped over the sandbox's life (before it goes).
    fn report_limit_hits(&self) {
        let Some(cg) = self.cgroup.as_ref() else {
            return;
        };
        for (limit, count) in [
            (Limit::Memory, cg.oom_kills()),
            (Limit::Pids, cg.pids_limit_hits()),
        ] {
            if count > 0 {
                self.audit
                    .emit(BoundaryEvent::LimitHit(LimitHit::new(limit, count)));
            }
        }
    }

    /// The harness: the first child of the sandbox's init (bwrap's pid 1 inside).
    fn harness_pid(&self) -> Option<i32> {
        let init = self.sandbox_pid?;
        let children =
            std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    fn bwrap_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL to the sandbox's init ends its whole pid namespace; to bwrap, ends bwrap.
    fn kill_all(&mut self) {
        // Only while bwrap lives is the init pid certainly still the sandbox's.
        if self.bwrap_running()
            && let Some(pid) = self.sandbox_pid
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }

    /// Undoes the boot's host mounts, newest first (a kept boot keeps a capped workdir's image).
    fn unmount_all(&mut self) -> Result<()> {
        while let Some(mount) = self.mounts.last() {
            crate::disk::unmount(mount)?;
            self.mounts.pop();
        }
        if self.keep
            && let Some(root) = &self.root
            && root.join(crate::disk::IMAGE).exists()
        {
            tracing::info!(
                image = %root.join(crate::disk::IMAGE).display(),
                "the kept workdir is in this image: `mount -o loop IMAGE DIR` to look inside"
            );
        }
        Ok(())
    }

    fn remove_files(&mut self) -> Result<()> {
        if let Some(mount) = self.mounts.first() {
            // Never recurse into a mount that failed to go: it may be a host directory.
            return Err(Error::invalid(
                "teardown",
                format!(
                    "{} is still mounted; not removing the boot directory",
                    mount.display()
                ),
            ));
        }
        let Some(root) = self.root.take() else {
            return Ok(());
        };
        if self.keep {
            tracing::info!(dir = %root.display(), "keeping the boot directory as asked");
            return Ok(());
        }
        match std::fs::remove_dir_all(&root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                let err = Error::io(format!("remove {}", root.display()), e);
                self.root = Some(root);
                Err(err)
            }
        }
    }
}

#[async_trait]
impl Teardown for BwrapTeardown {
    async fn shutdown(&mut self) -> Result<()> {
        if self.child.is_some() {
            // SIGTERM lets the harness cancel its engines; then the whole namespace goes.
            if self.bwrap_running()
                && let Some(pid) = self.harness_pid()
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                if let Some(child) = self.child.as_mut() {
                    let _ = tokio::time::timeout(GRACE, child.wait()).await;
                }
            }
            self.kill_all();
            if let Some(mut child) = self.child.take()
                && let Ok(status) = child.wait().await
            {
                let reason = exit_reason(status, None, 0, 0);
                let ran = self.started.elapsed();
                self.audit.emit(BoundaryEvent::ProcessExit(ProcessExit::new(
                    "harness", reason, ran,
                )));
            }
            self.sandbox_pid = None;
        }
        let teardown_started = Instant::now();
        self.egress = None;
        self.broker = None;
        self.report_limit_hits();
        let unmounted = self.unmount_all();
        let cgroup = match self.cgroup.as_mut() {
            Some(cg) => cg.remove(),
            None => Ok(()),
        };
        self.cgroup = None;
        let files = self.remove_files();
        let outcome = unmounted.and(cgroup).and(files);
        if !self.reported {
            self.reported = true;
            self.audit.emit(BoundaryEvent::Teardown(TeardownReport::new(
                self.label.clone(),
                outcome.as_ref().err().map(ToString::to_string),
                teardown_started.elapsed(),
            )));
        }
        outcome
    }
}

impl Drop for BwrapTeardown {
    /// Best effort when `shutdown` never ran: kill everything, remove what can be removed.
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill_all();
        }
        if let Some(cg) = self.cgroup.as_mut() {
            let _ = cg.remove();
        }
        let _ = self.unmount_all();
        let _ = self.remove_files();
    }
}

#[async_trait::async_trait]
impl substrate_core::SandboxProcess for JailProcess {
    fn take_stdout(&mut self) -> Option<substrate_core::OutputStream> {
        JailProcess::take_stdout(self).map(|s| Box::pin(s) as substrate_core::OutputStream)
    }

    fn take_stderr(&mut self) -> Option<substrate_core::OutputStream> {
        JailProcess::take_stderr(self).map(|s| Box::pin(s) as substrate_core::OutputStream)
    }

    async fn wait(
        self: Box<Self>,
        deadline: Option<Duration>,
    ) -> Result<substrate_core::CommandEnd> {
        let exit = self.wait_for(deadline).await?;
        Ok(substrate_core::CommandEnd {
            code: exit.status.code(),
            reason: exit.reason,
        })
    }
}
