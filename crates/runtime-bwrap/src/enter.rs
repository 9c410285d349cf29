//! A terminal inside a sandbox that is already running (a warm sandbox of the server, say):
//! the debug shell. The program joins the jail's namespaces and cgroups and takes on what
//! bwrap gave the jail's own processes — the sandbox's uid and gid and no supplementary
//! groups, no capabilities, no_new_privs and the same seccomp filters — before it runs, on a
//! fresh PTY the caller owns.
//!
//! Joining is done in the forked child before exec: clear the host groups (while still host
//! root), join ipc, uts, net, cgroup, pid and mount, then the user namespace; become the
//! sandbox's user; set no_new_privs; load the filters. A pid namespace takes only children,
//! so the program runs under `setsid --fork`, whose child is inside it.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use substrate_core::{
    CommandEnd, Error, ExitReason, Result, Terminal, TerminalRequest, TerminalSandbox,
};

use crate::jail::{self, SANDBOX_GID, SANDBOX_UID, SANDBOX_USER, WORKDIR};
use crate::reaper::{CGROUPS_FILE, SANDBOX_FILE};

/// The namespaces joined, in order. Host root joins the others first (some are owned by the
/// jail's nested user namespace, where the outer one's capabilities do not reach), and its
/// user namespace last, as `nsenter` does.
const NAMESPACES: [(&str, libc::c_int); 7] = [
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
    ("user", libc::CLONE_NEWUSER),
];

/// The boot directory under `base` of the live sandbox labelled `id` (its directory name is
/// `<label>-<random>`).
pub(crate) fn find_boot(base: &Path, id: &str) -> Result<PathBuf> {
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return Err(Error::invalid(
            "sandbox id",
            format!("`{id}` is not a sandbox id"),
        ));
    }
    let label = crate::launcher::boot_label(id);
    let entries = std::fs::read_dir(base)
        .map_err(|e| Error::io(format!("list the sandboxes in {}", base.display()), e))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name
            .strip_prefix(&label)
            .is_some_and(|rest| rest.starts_with('-') && !rest[1..].contains('-'))
        {
            found.push(entry.path());
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::invalid(
            "sandbox id",
            format!(
                "no live bwrap sandbox `{id}` under {} (ids are the labels of boots: a \
                 server's `sbx_…`)",
                base.display()
            ),
        )),
        _ => Err(Error::invalid(
            "sandbox id",
            format!("`{id}` names more than one sandbox; give the whole id"),
        )),
    }
}

/// The sandbox's init on the host, if it still runs.
fn sandbox_pid(boot: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(boot.join(SANDBOX_FILE))
        .map_err(|e| Error::io(format!("read the sandbox's pid in {}", boot.display()), e))?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| Error::invalid("sandbox", format!("{} names no pid", boot.display())))?;
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(Error::invalid(
            "sandbox",
            format!("the sandbox of {} is not running", boot.display()),
        ));
    }
    Ok(pid)
}

/// The seccomp programs as the kernel takes them.
fn programs() -> Result<Vec<Vec<libc::sock_filter>>> {
    let mut all = Vec::new();
    for bytes in crate::seccomp::filters()? {
        let program: Vec<libc::sock_filter> = bytes
            .chunks_exact(8)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        all.push(program);
    }
    Ok(all)
}

/// Opens `request` on a fresh PTY inside the live sandbox `boot` (see the module's doc).
pub(crate) async fn open(boot: PathBuf, request: TerminalRequest) -> Result<Terminal> {
    request.check()?;
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Unsupported {
            what: "a terminal in a running bwrap sandbox".into(),
            reason: "joining a sandbox's namespaces takes root on the host".into(),
        });
    }
    let pid = sandbox_pid(&boot)?;
    let mut namespaces: Vec<(OwnedFd, libc::c_int)> = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = format!("/proc/{pid}/ns/{name}");
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}"));
        let theirs = std::fs::metadata(&path).map_err(|e| Error::io(format!("open {path}"), e))?;
        use std::os::unix::fs::MetadataExt;
        if ours.is_ok_and(|m| m.ino() == theirs.ino() && m.dev() == theirs.dev()) {
            // A namespace the sandbox shares with the host (the network under `host`).
            continue;
        }
        let file = File::open(&path).map_err(|e| Error::io(format!("open {path}"), e))?;
        namespaces.push((OwnedFd::from(file), flag));
    }
    let mut cgroups: Vec<OwnedFd> = Vec::new();
    if let Ok(text) = std::fs::read_to_string(boot.join(CGROUPS_FILE)) {
        for dir in text.lines().filter(|l| !l.is_empty()) {
            let procs = Path::new(dir).join("cgroup.procs");
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|e| Error::io(format!("open {}", procs.display()), e))?;
            cgroups.push(OwnedFd::from(file));
        }
    }
    let programs = programs()?;
    let workdir = CString::new(WORKDIR).map_err(|e| Error::invalid("workdir", e.to_string()))?;
    let (main, replica) = substrate_core::pty::open_pty(request.size)?;

    let mut command = std::process::Command::new("setsid");
    command
        .args(["--fork", "--ctty", "--wait"])
        .args(&request.argv)
        .env_clear()
        .env("HOME", WORKDIR)
        .env("USER", SANDBOX_USER)
        .env("LOGNAME", SANDBOX_USER)
        .env("PATH", jail::PATH)
        .env("LANG", "C.UTF-8")
        .env("TERM", &request.term)
        .env(
            "HARNESS_NODE_MODULES",
            format!("{}/node_modules", jail::HARNESS_DIR),
        );
    let io = |fd: &OwnedFd| {
        fd.try_clone()
            .map(std::process::Stdio::from)
            .map_err(|e| Error::io("share the terminal", e))
    };
    command
        .stdin(io(&replica)?)
        .stdout(io(&replica)?)
        .stderr(io(&replica)?);
    let ns: Vec<(RawFd, libc::c_int)> = namespaces
        .iter()
        .map(|(fd, flag)| (fd.as_raw_fd(), *flag))
        .collect();
    let cg: Vec<RawFd> = cgroups.iter().map(AsRawFd::as_raw_fd).collect();
    for program in &programs {
        if u16::try_from(program.len()).is_err() {
            return Err(Error::invalid("seccomp", "a filter program is too long"));
        }
    }
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked, single-threaded child before exec. It calls
    // only async-signal-safe system calls (write, setgroups, setns, setres[ug]id, chdir,
    // prctl, seccomp) on descriptors and buffers built before the fork, which stay alive
    // until `spawn` returns, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            crate::cgroup::enter(&cg)?;
            let check = |r: libc::c_long| {
                if r == -1 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            // The host's groups go while we are still host root.
            check(libc::setgroups(0, std::ptr::null()).into())?;
            for (fd, flag) in &ns {
                check(libc::setns(*fd, *flag).into())?;
            }
            check(libc::setresgid(SANDBOX_GID, SANDBOX_GID, SANDBOX_GID).into())?;
            check(libc::setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID).into())?;
            check(libc::chdir(workdir.as_ptr()).into())?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into())?;
            for program in &programs {
                let prog = libc::sock_fprog {
                    len: program.len() as u16,
                    filter: program.as_ptr().cast_mut(),
                };
                check(libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const libc::sock_fprog,
                ))?;
            }
            Ok(())
        });
    }
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|e| Error::io("start a program in the running sandbox", e))?;
    drop((namespaces, cgroups, replica));
    let workdir_on_host = boot.join("workdir");
    let (output, input, resizer) = substrate_core::pty::streams(main)?;
    Ok(Terminal::new(
        output,
        input,
        resizer,
        Box::new(Entered {
            child,
            workdir: workdir_on_host,
        }),
    ))
}

/// Terminals inside one booted sandbox (its boot directory names it).
#[derive(Debug)]
pub(crate) struct EnterHost {
    boot: PathBuf,
}

impl EnterHost {
    pub(crate) fn new(boot: PathBuf) -> Self {
        Self { boot }
    }
}

#[async_trait]
impl substrate_core::TerminalHost for EnterHost {
    async fn open_terminal(&self, request: TerminalRequest) -> Result<Terminal> {
        open(self.boot.clone(), request).await
    }
}

/// A program inside a sandbox that outlives it: closing ends the program, not the sandbox.
#[derive(Debug)]
struct Entered {
    child: tokio::process::Child,
    workdir: PathBuf,
}

#[async_trait]
impl TerminalSandbox for Entered {
    async fn wait(&mut self) -> Result<CommandEnd> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| Error::io("wait for the program", e))?;
        use std::os::unix::process::ExitStatusExt;
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => CommandEnd {
                code: Some(code),
                reason: ExitReason::Exited(code),
            },
            (None, Some(signal)) => CommandEnd {
                code: Some(128 + signal),
                reason: ExitReason::Signaled(signal),
            },
            (None, None) => CommandEnd {
                code: None,
                reason: ExitReason::Exited(-1),
            },
        })
    }

    async fn workdir_on_host(&mut self, _scratch: &Path) -> Result<PathBuf> {
        Ok(self.workdir.clone())
    }

    async fn close(&mut self) -> Result<()> {
        // The program is `setsid`'s child (inside the pid namespace) and leads its own
        // session and process group: that group goes first, then `setsid`. The rest of its
        // session goes with the terminal (SIGHUP when the PTY's main side closes).
        if let Some(pid) = self.child.id()
            && let Ok(children) =
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        {
            for child in children
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        Ok(())
    }
}
