//! Memory, CPU and pids limits through a per-boot cgroup, v2 where the caller's cgroup is
//! delegated, v1 where per-controller hierarchies are all there is.
//!
//! The sandbox enters the cgroup before its first instruction: the spawning child writes `0`
//! (itself) to each `cgroup.procs` after fork and before exec of bwrap, so bwrap, the harness
//! and everything they start are limited from the start.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use substrate_core::{Error, ResourceLimits, Result};

/// The period `cpu_millis` is measured against (100 ms, the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup hierarchy this host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// Unified (cgroup2) at this mount point.
    V2(PathBuf),
    /// Per-controller hierarchies: controller name → mount point.
    V1(Vec<(String, PathBuf)>),
}

/// One boot's cgroup: a directory per hierarchy (one on v2, one per controller on v1).
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    procs: Vec<File>,
    v2: bool,
}

fn cannot_enforce(what: &str, detail: String) -> Error {
    Error::Unsupported {
        what: what.to_owned(),
        reason: format!(
            "{detail}. Limits need a writable cgroup: run as root, or on cgroup v2 inside a \
             delegated cgroup (e.g. `systemd-run --user --scope -p Delegate=yes …`); or boot \
             without limits"
        ),
    }
}

/// Reads the mount table and finds the cgroup hierarchies.
pub fn detect() -> Result<Hierarchy> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
    Ok(parse_mountinfo(&mounts))
}

fn parse_mountinfo(mounts: &str) -> Hierarchy {
    let mut v1 = Vec::new();
    let mut v2 = None;
    for line in mounts.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL…] - FSTYPE SOURCE SUPEROPTS
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).unwrap_or_default();
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or_default();
        let super_opts = right.nth(1).unwrap_or_default();
        match fstype {
            "cgroup2" if mount_point == "/sys/fs/cgroup" => v2 = Some(PathBuf::from(mount_point)),
            "cgroup" => {
                for opt in super_opts.split(',') {
                    if matches!(opt, "memory" | "pids" | "cpu") {
                        v1.push((opt.to_owned(), PathBuf::from(mount_point)));
                    }
                }
            }
            _ => {}
        }
    }
    match v2 {
        Some(root) => Hierarchy::V2(root),
        None => Hierarchy::V1(v1),
    }
}

/// This process's cgroup path in a hierarchy, from `/proc/self/cgroup`.
fn own_path(cgroup_file: &str, controller: Option<&str>) -> String {
    for line in cgroup_file.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let hit = match controller {
            None => controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        if hit {
            return path.to_owned();
        }
    }
    String::from("/")
}

fn write_file(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

impl Cgroup {
    /// Creates `substrate-<name>` under this process's cgroup with the limits applied, or
    /// `None` when no limit is asked for. Fails when a limit cannot be enforced.
    pub fn create(name: &str, limits: &ResourceLimits) -> Result<Option<Self>> {
        if limits.memory_bytes.is_none() && limits.cpu_millis.is_none() && limits.pids.is_none() {
            return Ok(None);
        }
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| Error::io("read /proc/self/cgroup", e))?;
        let leaf = format!("substrate-{name}");
        let mut cg = Cgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            v2: false,
        };
        let result = match detect()? {
            Hierarchy::V2(root) => cg.setup_v2(&root, &own, &leaf, limits),
            Hierarchy::V1(controllers) => cg.setup_v1(&controllers, &own, &leaf, limits),
        };
        match result {
            Ok(()) => Ok(Some(cg)),
            Err(e) => {
                if let Err(cleanup) = cg.remove() {
                    tracing::warn!(error = %cleanup, "removing a half-made cgroup failed");
                }
                Err(e)
            }
        }
    }

    fn make_dir(&mut self, dir: PathBuf, what: &str) -> Result<()> {
        std::fs::create_dir(&dir).map_err(|e| {
            cannot_enforce(
                what,
                format!("cannot create the cgroup {}: {e}", dir.display()),
            )
        })?;
        self.dirs.push(dir);
        Ok(())
    }

    fn set(&self, dir: &Path, file: &str, value: &str, what: &str) -> Result<()> {
        let path = dir.join(file);
        write_file(&path, value).map_err(|e| {
            cannot_enforce(
                what,
                format!("cannot write {value} to {}: {e}", path.display()),
            )
        })
    }

    fn open_procs(&mut self, dir: &Path, what: &str) -> Result<()> {
        let path = dir.join("cgroup.procs");
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| cannot_enforce(what, format!("cannot open {}: {e}", path.display())))?;
        self.procs.push(file);
        Ok(())
    }

    fn setup_v2(
        &mut self,
        root: &Path,
        own: &str,
        leaf: &str,
        limits: &ResourceLimits,
    ) -> Result<()> {
        let parent = root.join(own.trim_start_matches('/'));
        let mut wanted = Vec::new();
        if limits.memory_bytes.is_some() {
            wanted.push("memory");
        }
        if limits.cpu_millis.is_some() {
            wanted.push("cpu");
        }
        if limits.pids.is_some() {
            wanted.push("pids");
        }
        let available =
            std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
        for c in &wanted {
            if !available.split_whitespace().any(|a| a == *c) {
                return Err(cannot_enforce(
                    &format!("a {c} limit"),
                    format!(
                        "the {c} controller is not delegated to {}",
                        parent.display()
                    ),
                ));
            }
        }
        let enable: Vec<String> = wanted.iter().map(|c| format!("+{c}")).collect();
        self.set(
            &parent,
            "cgroup.subtree_control",
            &enable.join(" "),
            "resource limits",
        )?;
        let dir = parent.join(leaf);
        self.make_dir(dir.clone(), "resource limits")?;
        self.v2 = true;
        if let Some(bytes) = limits.memory_bytes {
            self.set(&dir, "memory.max", &bytes.to_string(), "a memory limit")?;
            // Swap would let a sandbox grow past its limit; refuse it where swap is accounted.
            if dir.join("memory.swap.max").exists() {
                self.set(&dir, "memory.swap.max", "0", "a memory limit")?;
            }
        }
        if let Some(millis) = limits.cpu_millis {
            let quota = u64::from(millis) * CPU_PERIOD_US / 1000;
            self.set(
                &dir,
                "cpu.max",
                &format!("{quota} {CPU_PERIOD_US}"),
                "a CPU limit",
            )?;
        }
        if let Some(pids) = limits.pids {
            self.set(&dir, "pids.max", &pids.to_string(), "a pids limit")?;
        }
        self.open_procs(&dir, "resource limits")
    }

    fn setup_v1(
        &mut self,
        controllers: &[(String, PathBuf)],
        own: &str,
        leaf: &str,
        limits: &ResourceLimits,
    ) -> Result<()> {
        let dir_for = |c: &str| {
            controllers
                .iter()
                .find(|(name, _)| name == c)
                .map(|(_, mount)| {
                    mount
                        .join(own_path(own, Some(c)).trim_start_matches('/'))
                        .join(leaf)
                })
        };
        let missing = |c: &str, what: &str| {
            cannot_enforce(what, format!("no cgroup v1 `{c}` hierarchy is mounted"))
        };
        if let Some(bytes) = limits.memory_bytes {
            let what = "a memory limit";
            let dir = dir_for("memory").ok_or_else(|| missing("memory", what))?;
            self.make_dir(dir.clone(), what)?;
            self.set(&dir, "memory.limit_in_bytes", &bytes.to_string(), what)?;
            if dir.join("memory.memsw.limit_in_bytes").exists() {
                self.set(
                    &dir,
                    "memory.memsw.limit_in_bytes",
                    &bytes.to_string(),
                    what,
                )?;
            }
            self.open_procs(&dir, what)?;
        }
        if let Some(millis) = limits.cpu_millis {
            let what = "a CPU limit";
            let dir = dir_for("cpu").ok_or_else(|| missing("cpu", what))?;
            self.make_dir(dir.clone(), what)?;
            self.set(&dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string(), what)?;
            let quota = u64::from(millis) * CPU_PERIOD_US / 1000;
            self.set(&dir, "cpu.cfs_quota_us", &quota.to_string(), what)?;
            self.open_procs(&dir, what)?;
        }
        if let Some(pids) = limits.pids {
            let what = "a pids limit";
            let dir = dir_for("pids").ok_or_else(|| missing("pids", what))?;
            self.make_dir(dir.clone(), what)?;
            self.set(&dir, "pids.max", &pids.to_string(), what)?;
            self.open_procs(&dir, what)?;
        }
        Ok(())
    }

    /// The `cgroup.procs` fds the spawning child writes `0` to before exec.
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// The cgroup directories (one on v2, one per limited controller on v1).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// How many times the memory limit killed a process (v1 `memory.oom_control`'s
    /// `oom_kill`, v2 `memory.events`' `oom_kill`).
    pub fn oom_kills(&self) -> u64 {
        for dir in &self.dirs {
            for (file, key) in [
                ("memory.events", "oom_kill"),
                ("memory.oom_control", "oom_kill"),
            ] {
                if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                    for line in text.lines() {
                        if let Some(v) = line.strip_prefix(key).map(str::trim)
                            && let Ok(n) = v.parse()
                        {
                            return n;
                        }
                    }
                }
            }
        }
        0
    }

    /// How many forks the process limit refused (`pids.events`' `max`, v1 and v2).
    pub fn pids_limit_hits(&self) -> u64 {
        self.dirs
            .iter()
            .filter_map(|dir| std::fs::read_to_string(dir.join("pids.events")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.strip_prefix("max ").and_then(|v| v.trim().parse().ok()))
                    .collect::<Vec<u64>>()
            })
            .max()
            .unwrap_or(0)
    }

    /// Kills whatever is still inside and removes the directories. Idempotent.
    pub fn remove(&mut self) -> Result<()> {
        self.procs.clear();
        let mut last_err = None;
        while let Some(dir) = self.dirs.pop() {
            if let Err(e) = remove_dir(&dir, self.v2) {
                last_err = Some(e);
            }
        }
        match last_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// Kills the members of one cgroup directory and removes it, retrying while they exit.
pub fn remove_dir(dir: &Path, v2: bool) -> Result<()> {
    for attempt in 0..100 {
        if v2 {
            let _ = write_file(&dir.join("cgroup.kill"), "1");
        }
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt == 99 => {
                return Err(Error::io(format!("remove the cgroup {}", dir.display()), e));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Ok(())
}

/// Writes `0` (the caller itself) to each fd. Runs in the child between fork and exec, so it
/// uses only `write(2)`.
#[allow(unsafe_code)]
pub fn enter(fds: &[RawFd]) -> std::io::Result<()> {
    for fd in fds {
        // SAFETY: `fd` is an open cgroup.procs file inherited from the parent; write(2) is
        // async-signal-safe and touches no memory but the two-byte buffer.
        let n = unsafe { libc::write(*fd, b"0".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_controllers_and_v2_roots() {
        let v1 = "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n\
                  31 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
                  32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(v1),
            Hierarchy::V1(vec![
                ("memory".into(), "/sys/fs/cgroup/memory".into()),
                ("pids".into(), "/sys/fs/cgroup/pids".into()),
            ])
        );
        let v2 = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_mountinfo(v2), Hierarchy::V2("/sys/fs/cgroup".into()));
    }

    #[test]
    fn v2_enables_the_controllers_and_writes_each_limit() {
        // A directory posing as a delegated cgroup2 subtree (/sys/fs/cgroup/app.slice/me).
        let root = tempfile::tempdir().unwrap();
        let own = root.path().join("app.slice/me");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(
            own.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let mut cg = Cgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            v2: false,
        };
        let limits = ResourceLimits::default()
            .memory(256 << 20)
            .cpu_millis(1500)
            .pids(100);
        // `cgroup.procs` of the new leaf is opened for writing: let it exist as a file.
        let leaf = own.join("substrate-x");
        let made = cg.setup_v2(root.path(), "/app.slice/me", "substrate-x", &limits);
        // A plain directory has no `cgroup.procs` to open (the kernel makes one): everything
        // before that last step was written.
        let err = made.unwrap_err();
        assert!(err.to_string().contains("cgroup.procs"), "{err}");
        let read = |f: &str| std::fs::read_to_string(leaf.join(f)).unwrap();
        assert_eq!(
            std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
            "+memory +cpu +pids"
        );
        assert_eq!(read("memory.max"), (256u64 << 20).to_string());
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("pids.max"), "100");
        assert!(cg.v2);
        assert_eq!(cg.dirs(), [leaf]);
    }

    #[test]
    fn v2_without_a_delegated_controller_names_it() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu\n").unwrap();
        let mut cg = Cgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            v2: false,
        };
        let err = cg
            .setup_v2(
                root.path(),
                "/",
                "substrate-x",
                &ResourceLimits::default().pids(10),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("pids controller is not delegated"),
            "{err}"
        );
        assert!(err.to_string().contains("Delegate=yes"), "{err}");
    }

    #[test]
    fn own_path_picks_the_controller_line() {
        let file = "9:name=systemd:/\n4:memory:/process_api/abc\n8:pids:/\n0::/user.slice/x\n";
        assert_eq!(own_path(file, Some("memory")), "/process_api/abc");
        assert_eq!(own_path(file, Some("pids")), "/");
        assert_eq!(own_path(file, None), "/user.slice/x");
    }
}
