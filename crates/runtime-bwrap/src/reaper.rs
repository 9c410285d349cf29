//! Leftovers of crashed parents: boot directories whose owner process is gone, with their
//! sandboxes and cgroups.
//!
//! Each boot directory records its owner (`owner`: pid and start time, so a reused pid is not
//! mistaken for it), the sandbox's host pid (`sandbox`) and its cgroups (`cgroups`).

use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use substrate_core::{Error, Result};

/// File naming the owning process: `<pid> <start time in clock ticks>`.
pub const OWNER_FILE: &str = "owner";
/// File naming the sandbox's init on the host.
pub const SANDBOX_FILE: &str = "sandbox";
/// File listing the boot's cgroup directories, one per line.
pub const CGROUPS_FILE: &str = "cgroups";

/// The start time of a process (field 22 of `/proc/PID/stat`), which with the pid names it
/// uniquely.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Records this process as the owner of a boot directory.
pub fn write_owner(dir: &Path) -> Result<()> {
    let pid = std::process::id();
    let start = i32::try_from(pid).ok().and_then(start_time).unwrap_or(0);
    let path = dir.join(OWNER_FILE);
    std::fs::write(&path, format!("{pid} {start}\n"))
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

fn owner_alive(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(OWNER_FILE)) else {
        // No owner file yet: a boot in its first microseconds, or not ours. Leave it.
        return true;
    };
    let mut parts = text.split_whitespace();
    let pid: Option<i32> = parts.next().and_then(|p| p.parse().ok());
    let start: Option<u64> = parts.next().and_then(|p| p.parse().ok());
    match (pid, start) {
        (Some(pid), Some(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// What one reaping pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Boot directories removed.
    pub dirs: Vec<PathBuf>,
    /// Sandboxes killed (host pids).
    pub sandboxes: Vec<i32>,
    /// Cgroups removed.
    pub cgroups: Vec<PathBuf>,
}

/// Removes every boot directory under `base` whose owner is gone, killing its sandbox if it
/// still runs and removing its cgroups. Boots of live processes are never touched.
pub fn reap_orphans(base: &Path) -> Result<Reaped> {
    let mut reaped = Reaped::default();
    let entries = match std::fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(reaped),
        Err(e) => return Err(Error::io(format!("read {}", base.display()), e)),
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() || owner_alive(&dir) {
            continue;
        }
        if let Some(pid) = std::fs::read_to_string(dir.join(SANDBOX_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            // Only a process that is still bwrap is ours to kill: the pid may have been reused.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "bwrap" && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                reaped.sandboxes.push(pid);
            }
        }
        if let Ok(list) = std::fs::read_to_string(dir.join(CGROUPS_FILE)) {
            for cg in list.lines().filter(|l| !l.is_empty()).map(PathBuf::from) {
                let v2 = cg.join("cgroup.kill").exists() || cg.join("memory.max").exists();
                if crate::cgroup::remove_dir(&cg, v2).is_ok() {
                    reaped.cgroups.push(cg);
                }
            }
        }
        for mount in crate::disk::mounts_under(&dir) {
            if let Err(e) = crate::disk::unmount(&mount) {
                tracing::warn!(mount = %mount.display(), error = %e, "could not unmount a leftover workdir");
            }
        }
        if !crate::disk::mounts_under(&dir).is_empty() {
            // Never recurse into a mount: it may be a host directory.
            tracing::warn!(dir = %dir.display(), "a leftover boot directory is still mounted; leaving it");
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => reaped.dirs.push(dir),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a leftover boot directory")
            }
        }
    }
    Ok(reaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable_and_stable() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let a = start_time(pid).unwrap();
        assert_eq!(start_time(pid), Some(a));
    }

    #[test]
    fn a_dead_owner_is_reaped_and_a_live_one_is_not() {
        let base = tempfile::tempdir().unwrap();
        let live = base.path().join("live");
        let dead = base.path().join("dead");
        std::fs::create_dir(&live).unwrap();
        std::fs::create_dir(&dead).unwrap();
        write_owner(&live).unwrap();
        // Our own pid with a start time that is not ours: a reused pid.
        std::fs::write(dead.join(OWNER_FILE), format!("{} 1\n", std::process::id())).unwrap();
        let reaped = reap_orphans(base.path()).unwrap();
        assert_eq!(reaped.dirs, vec![dead.clone()]);
        assert!(live.exists());
        assert!(!dead.exists());
    }
}
