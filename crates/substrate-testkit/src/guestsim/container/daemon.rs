//! The daemon of one running container, forked by `container run --detach`: it binds the
//! published ports, puts the container on the network, mounts its filesystem, starts its
//! process in a bwrap jail, tells `run` it is up — and when the process exits or `stop`
//! asks, tears all of it down again.

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigSet, Signal};
use serde::{Deserialize, Serialize};

use super::net::{self, Lease};
use super::store::{ContainerConfig, ContainerState, ContainerStore};
use crate::guestsim::vm::{set_mode, signal_pending};

/// How `stop` wants the process stopped (`containers/<id>/stop.json`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct StopRequest {
    /// The signal for the process.
    pub(crate) signal: i32,
    /// How long it has before SIGKILL.
    pub(crate) timeout_ms: u64,
}

impl Default for StopRequest {
    fn default() -> Self {
        Self {
            signal: Signal::SIGTERM as i32,
            timeout_ms: 5000,
        }
    }
}

/// What the daemon set up, removed again when dropped (on every path).
#[derive(Debug, Default)]
struct Guard {
    jail: Option<Child>,
    mounted: Option<PathBuf>,
    lease: Option<Lease>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut jail) = self.jail.take() {
            if matches!(jail.try_wait(), Ok(None)) {
                let _ = jail.kill();
            }
            let _ = jail.wait();
        }
        if let Some(mnt) = self.mounted.take() {
            let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(lease) = self.lease.take() {
            net::teardown(lease.n);
        }
    }
}

/// Runs container `id` of `store` until its process exits; returns the exit code of the
/// daemon. Reports `ok` or `err <message>` on stdout (a pipe `run` reads) once, when the
/// container runs or could not start.
pub(crate) fn main(store: &ContainerStore, id: &str) -> i32 {
    // Out of the caller's session, and signals taken synchronously so cleanup always runs.
    let _ = nix::unistd::setsid();
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGHUP);
    let mut guard = Guard::default();
    let started = signals
        .thread_block()
        .map_err(anyhow::Error::from)
        .and_then(|()| start(store, id, &mut guard));
    let mut report = std::io::stdout();
    let started_at = match started {
        Ok(at) => at,
        Err(e) => {
            drop(guard);
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("container {id} could not start: {message}");
            let _ = writeln!(report, "err {message}");
            return 1;
        }
    };
    let _ = writeln!(report, "ok");
    let _ = report.flush();
    let code = match guard.jail.as_mut() {
        Some(jail) => supervise(store, id, &signals, jail),
        None => 255,
    };
    drop(guard);
    finish(store, id, started_at, code);
    0
}

/// Sets the container up; returns when its process runs (or already exited on its own).
fn start(store: &ContainerStore, id: &str, guard: &mut Guard) -> Result<u64> {
    let config = store
        .config(id)
        .with_context(|| format!("notFound: \"container {id} not found\""))?;
    let mut env_json = String::new();
    std::io::stdin()
        .read_to_string(&mut env_json)
        .context("read the container's environment")?;
    let env: Vec<String> = serde_json::from_str(&env_json).context("parse the environment")?;
    if store.image(&config.image).is_none() {
        bail!("notFound: \"image {} not found\"", config.image);
    }
    let faults = store.faults(&config.image);
    let dir = store.container_dir(id);

    // Published ports first: a taken one fails the run before anything else exists.
    let listeners = net::bind(&config.published)?;

    net::ensure_bridge()?;
    let lease = Lease::take()?;
    let n = lease.n;
    guard.lease = Some(lease);
    net::setup(n)?;

    // The filesystem: an overlay of the image in a mount namespace of this daemon (it
    // vanishes with it). Before any thread exists: unshare needs a single-threaded process.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    let rootfs = store.image_dir(&config.image).join("rootfs");
    let mnt = dir.join("mnt");
    for sub in ["upper", "work", "mnt"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        rootfs.display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    nix::mount::mount(
        Some("overlay"),
        &mnt,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .context("mount the container's filesystem (overlayfs)")?;
    guard.mounted = Some(mnt.clone());

    let hostname: String = id.chars().take(63).collect();
    fs::create_dir_all(mnt.join("etc"))?;
    fs::write(mnt.join("etc/hostname"), format!("{hostname}\n"))?;
    fs::write(
        mnt.join("etc/hosts"),
        format!(
            "127.0.0.1 localhost\n::1 localhost\n{} {hostname}\n",
            net::address(n)
        ),
    )?;
    let tops: Vec<String> = fs::read_dir(&rootfs)?
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|t| t != "tmp")
        .collect();
    let top_of = |path: &str| {
        path.trim_start_matches('/')
            .split('/')
            .next()
            .map(str::to_owned)
    };
    let in_image = |path: &str| top_of(path).is_some_and(|t| tops.contains(&t));
    // Mount points inside the image's directories, made in the container's own layer (bwrap
    // cannot make them once a directory is bound read-only).
    for t in &config.tmpfs {
        if in_image(t) {
            fs::create_dir_all(mnt.join(t.trim_start_matches('/')))?;
        }
    }
    for v in &config.volumes {
        if in_image(&v.guest) {
            let point = mnt.join(v.guest.trim_start_matches('/'));
            if v.host.is_dir() {
                fs::create_dir_all(&point)?;
            } else if !point.exists() {
                if let Some(parent) = point.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::write(&point, "")?;
            }
        }
    }
    if in_image(&config.workdir) {
        fs::create_dir_all(mnt.join(config.workdir.trim_start_matches('/')))?;
    }

    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdio.log"))?;
    // The daemon blocks the signals it waits for, and a child inherits that mask: the
    // simulator re-executed as `__exec` clears it before it becomes `ip` (then bwrap, then
    // the command), so the container's process can be stopped with them.
    let mut jail = Command::new(std::env::current_exe().context("find the simulator")?);
    jail.arg0("container")
        .arg("__exec")
        .arg(which("ip")?)
        .args(["netns", "exec", &net::netns_name(n)])
        .arg(which("bwrap")?)
        .args([
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--die-with-parent",
        ])
        .args(["--hostname", &hostname, "--cap-add", "ALL"])
        .args(["--ro-bind", "/usr", "/usr"]);
    for link in ["bin", "sbin", "lib", "lib64", "lib32", "libx32"] {
        let host = Path::new("/").join(link);
        if let Ok(target) = fs::read_link(&host) {
            jail.arg("--symlink").arg(target).arg(&host);
        } else if host.is_dir() {
            jail.arg("--ro-bind").arg(&host).arg(&host);
        }
    }
    for top in &tops {
        jail.arg(if config.read_only {
            "--ro-bind"
        } else {
            "--bind"
        })
        .arg(mnt.join(top))
        .arg(format!("/{top}"));
    }
    if faults.node_exits || faults.node_hangs {
        let fake = dir.join("fake-node");
        let body = if faults.node_exits {
            "#!/bin/sh\necho 'node: simulated crash at startup' >&2\nexit 3\n"
        } else {
            "#!/bin/sh\nexec sleep 100000\n"
        };
        fs::write(&fake, body)?;
        set_mode(&fake, 0o755)?;
        jail.arg("--ro-bind").arg(&fake).arg("/usr/bin/node");
    }
    jail.args(["--proc", "/proc", "--dev", "/dev"]);
    let given = |path: &str| {
        config.tmpfs.iter().any(|t| t.trim_end_matches('/') == path)
            || config
                .volumes
                .iter()
                .any(|v| v.guest.trim_end_matches('/') == path)
    };
    if !given("/tmp") {
        jail.args(["--perms", "1777", "--tmpfs", "/tmp"]);
    }
    for t in &config.tmpfs {
        // bwrap's tmpfs is root's 0755 otherwise: the image's user could not write to it.
        jail.args(["--perms", "1777", "--tmpfs"]).arg(t);
    }
    for v in &config.volumes {
        if !in_image(&v.guest) {
            // The directories on the way to a mount point outside the image (on a tmpfs)
            // are world-traversable, as a container runtime makes them (bwrap would make
            // them root's alone).
            let mut dir = PathBuf::from("/");
            let parts: Vec<_> = Path::new(&v.guest).components().skip(1).collect();
            for (i, part) in parts.iter().enumerate() {
                dir.push(part);
                if i > 0 && i + 1 < parts.len() {
                    jail.args(["--perms", "0755", "--dir"]).arg(&dir);
                }
            }
        }
        jail.arg(if v.read_only { "--ro-bind" } else { "--bind" })
            .arg(&v.host)
            .arg(&v.guest);
    }
    if config.workdir != "/" && !in_image(&config.workdir) {
        jail.arg("--dir").arg(&config.workdir);
    }
    jail.arg("--chdir").arg(&config.workdir);
    if config.read_only {
        jail.args(["--remount-ro", "/"]);
    }
    jail.arg("--");
    let (uid, gid) = config.user;
    if uid != 0 {
        jail.arg(which("setpriv")?)
            .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
            .args([
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
            ]);
    }
    jail.args(&config.command)
        .env_clear()
        .envs(env.iter().filter_map(|kv| kv.split_once('=')))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    guard.jail = Some(jail.spawn().context("start the container's process")?);
    if let Some(jail) = guard.jail.as_mut() {
        wait_started(jail, &dir.join("stdio.log"))?;
    }

    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    store.write_state(
        id,
        &ContainerState {
            pid: std::process::id() as i32,
            status: "running".into(),
            address: Some(net::address(n)),
            lease: Some(n),
            started_at,
            exit_code: None,
        },
    )?;
    for (listener, port) in listeners {
        net::forward(listener, net::address(n), port);
    }
    Ok(started_at)
}

/// Runs `args` (program first) with no signal blocked, in place of this process.
pub(crate) fn exec_unblocked(args: &[String]) -> i32 {
    let _ = SigSet::all().thread_unblock();
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: container __exec PROGRAM [ARGS...]");
        return 64;
    };
    let error = Command::new(program).args(rest).exec();
    eprintln!("container __exec: cannot run {program}: {error}");
    127
}

/// Waits until the jail runs the container's command (bwrap set everything up), or fails
/// with bwrap's complaint when it could not.
fn wait_started(jail: &mut Child, log: &Path) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = jail.try_wait()? {
            // Exited already: bwrap's own failure, or a command that ended at once.
            let text = fs::read_to_string(log).unwrap_or_default();
            if status.code() == Some(1)
                && let Some(line) = text.lines().rev().find(|l| l.starts_with("bwrap: "))
            {
                bail!("internalError: \"the container could not start: {line}\"");
            }
            return Ok(());
        }
        if main_process(jail.id()).is_some() {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("internalError: \"the container's process did not start within 10 s\"");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The process of the container whose daemon is `daemon`, while it runs.
pub(super) fn container_process(daemon: i32) -> Option<i32> {
    children(daemon).into_iter().find_map(|child| {
        let exe = fs::read_link(format!("/proc/{child}/exe")).ok()?;
        if exe.file_name().is_some_and(|n| n == "bwrap") {
            main_process(u32::try_from(child).ok()?)
        } else {
            None
        }
    })
}

/// The container's own process: the child of bwrap's init (bwrap → its init in the new PID
/// namespace → the command), once it runs the command rather than bwrap.
fn main_process(bwrap: u32) -> Option<i32> {
    let init = *children(bwrap as i32).first()?;
    let main = *children(init).first()?;
    let exe = fs::read_link(format!("/proc/{main}/exe")).ok()?;
    let is_bwrap = exe.file_name().is_some_and(|n| n == "bwrap");
    (!is_bwrap).then_some(main)
}

/// The children of `pid`.
fn children(pid: i32) -> Vec<i32> {
    if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(") ")
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                        .and_then(|ppid| ppid.parse::<i32>().ok())
                })
                == Some(pid)
        })
        .collect()
}

/// Waits for the process to exit, passing `stop`'s signal on and killing it when its time is
/// up; returns its exit code.
fn supervise(store: &ContainerStore, id: &str, signals: &SigSet, jail: &mut Child) -> i32 {
    let mut kill_at: Option<Instant> = None;
    loop {
        match jail.try_wait() {
            Ok(Some(status)) => return exit_code(status),
            Ok(None) => {}
            Err(_) => return 255,
        }
        if signal_pending(signals) {
            let _ = signals.wait();
            let request: StopRequest =
                fs::read_to_string(store.container_dir(id).join("stop.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
            let signal = Signal::try_from(request.signal).unwrap_or(Signal::SIGTERM);
            match main_process(jail.id()) {
                Some(pid) => {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
                }
                None => {
                    let _ = jail.kill();
                }
            }
            let at = Instant::now() + Duration::from_millis(request.timeout_ms);
            kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            let _ = jail.kill();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The exit code of a process, 128 + the signal when one killed it (as a shell says).
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Records the stop (or, with `--rm`, deletes the container).
fn finish(store: &ContainerStore, id: &str, started_at: u64, code: i32) {
    let _ = fs::remove_file(store.container_dir(id).join("stop.json"));
    let remove = store.config(id).is_some_and(|c: ContainerConfig| c.remove);
    if remove {
        if let Ok(_lock) = store.sim().lock() {
            let _ = fs::remove_dir_all(store.container_dir(id));
        }
        return;
    }
    let _ = store.write_state(
        id,
        &ContainerState {
            pid: std::process::id() as i32,
            status: "stopped".into(),
            address: None,
            lease: None,
            started_at,
            exit_code: Some(code),
        },
    );
}

/// `name` on PATH (or in the usual system directories): the container's environment
/// replaces PATH, so the jail's tools are named by absolute path.
fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is missing (apt-get install bubblewrap iproute2)"))
}
