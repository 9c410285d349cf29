//! `container exec [--interactive] [--tty] [--env-file F] [--env K=V] [--workdir D] ID CMD…`:
//! a process in a running container: its namespaces (mount, PID, network, UTS, IPC), its
//! root, the container's user with no supplementary groups and no capabilities, the
//! environment given here (the container's own is never kept on disk, so exec does not
//! inherit it), the caller's stdio. With `--tty` the caller's terminal is the process's (the
//! real CLI relays it to a terminal inside; either way keys, Ctrl-C and window sizes reach
//! the process). Its exit status is the command's.

use std::fs;
use std::os::fd::AsFd as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::Command;

use anyhow::{Context, Result, bail};
use nix::sched::CloneFlags;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use super::args::{DEBUG, Opt, not_found, parse, usage};
use super::store::ContainerStore;

const USAGE: &str = "container exec [<options>] <container-id> <arguments> ...";

const OPTIONS: &[Opt] = &[
    DEBUG,
    (&["--interactive", "-i"], false),
    (&["--tty", "-t"], false),
    (&["--env-file"], true),
    (&["--env", "-e"], true),
    (&["--workdir", "-w", "--cwd"], true),
];

extern "C" fn ignore(_: nix::libc::c_int) {}

pub(super) fn exec(store: &ContainerStore, args: &[String]) -> Result<i32> {
    let p = parse(args, OPTIONS, true, USAGE)?;
    let Some((id, command)) = p.positional.split_first() else {
        return Err(usage("Missing expected argument '<container-id>'", USAGE));
    };
    if command.is_empty() {
        return Err(usage("Missing expected argument '<arguments> ...'", USAGE));
    }
    let config = store
        .config(id)
        .ok_or_else(|| not_found(&format!("container {id}")))?;
    let state = store.state(id).filter(|s| s.status == "running");
    let Some(main) = state.and_then(|s| super::daemon::container_process(s.pid)) else {
        bail!("invalidState: \"container {id} is not running\"");
    };
    let image = store
        .image(&config.image)
        .with_context(|| format!("notFound: \"image {} not found\"", config.image))?;
    let env = super::run::environment(&image, config.user.0, &p)?;
    let workdir = p.value("--workdir").unwrap_or(&config.workdir).to_owned();

    // The container's namespaces and root, opened before any is entered.
    let open = |what: &str| {
        fs::File::open(format!("/proc/{main}/{what}"))
            .with_context(|| format!("internalError: \"cannot reach container {id}: {what}\""))
    };
    let namespaces = [
        (open("ns/ipc")?, CloneFlags::CLONE_NEWIPC),
        (open("ns/uts")?, CloneFlags::CLONE_NEWUTS),
        (open("ns/net")?, CloneFlags::CLONE_NEWNET),
        (open("ns/pid")?, CloneFlags::CLONE_NEWPID),
        (open("ns/mnt")?, CloneFlags::CLONE_NEWNS),
    ];
    let root = open("root")?;
    for (fd, kind) in &namespaces {
        nix::sched::setns(fd.as_fd(), *kind)
            .with_context(|| format!("internalError: \"cannot join container {id}\""))?;
    }
    nix::unistd::fchdir(&root).context("internalError: \"cannot enter the container's root\"")?;
    nix::unistd::chroot(".").context("internalError: \"cannot enter the container's root\"")?;

    // The terminal's signals are the process's: this one outlives them (a handler, unlike
    // an ignored signal, is reset in the child).
    let handler = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTSTP] {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        #[allow(unsafe_code)]
        unsafe { sigaction(signal, &handler) }.context("internalError: \"signals\"")?;
    }
    let (uid, gid) = config.user;
    let mut child = Command::new(&command[0]);
    child
        .args(&command[1..])
        .env_clear()
        .envs(env.iter().filter_map(|kv| kv.split_once('=')))
        .current_dir(&workdir);
    if uid != 0 {
        // Dropping root drops the supplementary groups and every capability with it.
        child.uid(uid).gid(gid);
    }
    let status = match child.spawn() {
        Ok(mut child) => child.wait()?,
        Err(e) => {
            eprintln!(
                "Error: internalError: \"failed to exec {} in {id}: {e}\"",
                command[0]
            );
            return Ok(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
