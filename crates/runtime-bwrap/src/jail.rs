//! The jail as data: a config struct and the pure function that turns it into bwrap's argv.
//!
//! Compiled on every OS and snapshot-tested; only the launcher that spawns it is Linux-only.
//! Nothing secret is ever part of this argv: the boot token and engine keys reach the harness
//! through an inherited pipe (`HARNESS_ENV_FD`).

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use substrate_core::CommandSpec;

/// The uid and gid the sandbox's processes have inside it: not root.
pub const SANDBOX_UID: u32 = 1000;
/// See [`SANDBOX_UID`].
pub const SANDBOX_GID: u32 = 1000;
/// The user name `/etc/passwd` of the sandbox gives [`SANDBOX_UID`].
pub const SANDBOX_USER: &str = "agent";
/// Where the per-boot workdir appears: HOME and the harness's session root.
pub const WORKDIR: &str = "/workdir";
/// Where the per-boot run directory (the harness's socket) appears.
pub const RUN_DIR: &str = "/run/harness";
/// The harness's socket inside the sandbox.
pub const SOCKET: &str = "/run/harness/harness.sock";
/// Where the harness, its node and its node_modules appear (read-only).
pub const HARNESS_DIR: &str = "/opt/harness";
/// The hostname inside the sandbox.
pub const HOSTNAME: &str = "sandbox";
/// `PATH` inside the sandbox.
pub const PATH: &str =
    "/opt/harness/bin:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// How a top-level system path is made visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemEntry {
    /// A directory bound read-only at the same path.
    ReadOnly(PathBuf),
    /// A symlink (merged-/usr layouts: `/bin -> usr/bin`), recreated as it is on the host.
    Symlink {
        /// The link's target, as the host has it.
        target: PathBuf,
        /// The link's path.
        link: PathBuf,
    },
}

/// A read-only bind the caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOnlyBind {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the sandbox.
    pub dest: PathBuf,
}

/// A project directory bound into the sandbox, read-write or read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectBind {
    /// Host path.
    pub source: PathBuf,
    /// Path inside (the host path, so that paths mean the same on both sides).
    pub dest: PathBuf,
    /// Whether the sandbox may write it.
    pub writable: bool,
}

/// Whether the sandbox gets its own network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JailNetwork {
    /// Its own namespace: loopback only. Egress, when allowed, goes through a Unix socket in
    /// the run directory.
    Isolated,
    /// The host's network namespace (unsafe: every host service and every other sandbox's
    /// loopback port is reachable).
    Host,
}

/// Everything that decides one sandbox's argv.
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// The bwrap binary.
    pub bwrap: PathBuf,
    /// System directories and symlinks, bound read-only.
    pub system: Vec<SystemEntry>,
    /// The short list of `/etc` files bound read-only when the host has them.
    pub etc_files: Vec<PathBuf>,
    /// Fds (inherited by bwrap) carrying the sandbox's own `/etc/passwd` and `/etc/group`.
    pub passwd_fd: i32,
    /// See `passwd_fd`.
    pub group_fd: i32,
    /// The host's `node` binary.
    pub node: PathBuf,
    /// The host copy of `harness.mjs`.
    pub harness: PathBuf,
    /// The staged `node_modules`.
    pub node_modules: PathBuf,
    /// Host directory bound read-write at [`RUN_DIR`].
    pub run_dir: PathBuf,
    /// Host directory bound read-write at [`WORKDIR`].
    pub workdir: PathBuf,
    /// Further read-only binds.
    pub extra_ro: Vec<ReadOnlyBind>,
    /// A project bound at its own path.
    pub project: Option<ProjectBind>,
    /// Network namespace.
    pub network: JailNetwork,
    /// Size cap of the private `/tmp` (tmpfs), bytes.
    pub tmp_bytes: Option<u64>,
    /// Fds of the seccomp programs.
    pub seccomp_fds: Vec<i32>,
    /// Fd on which bwrap reports the sandbox's pid (JSON).
    pub info_fd: Option<i32>,
    /// What runs inside.
    pub command: JailCommand,
    /// Further variables of the command. For the harness these are non-secret only (secrets
    /// go through `HARNESS_ENV_FD`); an exec's argv is delivered through `--args FD`.
    pub env: Vec<(OsString, OsString)>,
}

/// What a jail runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JailCommand {
    /// `node harness.mjs`, reading its secrets from this inherited fd.
    Harness {
        /// The fd of `HARNESS_ENV_FD`.
        env_fd: i32,
    },
    /// One command, in `/workdir`.
    Exec(Vec<OsString>),
}

/// Appends one bwrap option with its operands.
fn opt<S: AsRef<OsStr>>(cmd: &mut CommandSpec, name: &str, operands: &[S]) {
    cmd.push_arg(name);
    for operand in operands {
        cmd.push_arg(operand.as_ref());
    }
}

impl JailConfig {
    /// The bwrap command: namespaces, mounts, limits on privilege, then the command.
    pub fn command(&self) -> CommandSpec {
        let mut c = CommandSpec::new(&self.bwrap).env_clear();
        let none: [&str; 0] = [];

        // Namespaces and privilege.
        for ns in ["user", "pid", "ipc", "uts", "cgroup"] {
            opt(&mut c, &format!("--unshare-{ns}"), &none);
        }
        if self.network == JailNetwork::Isolated {
            opt(&mut c, "--unshare-net", &none);
        }
        opt(&mut c, "--disable-userns", &none);
        opt(&mut c, "--uid", &[SANDBOX_UID.to_string()]);
        opt(&mut c, "--gid", &[SANDBOX_GID.to_string()]);
        opt(&mut c, "--hostname", &[HOSTNAME]);
        opt(&mut c, "--die-with-parent", &none);
        opt(&mut c, "--new-session", &none);
        opt(&mut c, "--cap-drop", &["ALL"]);

        // Environment: nothing of the host's.
        opt(&mut c, "--clearenv", &none);
        let modules_dir = format!("{HARNESS_DIR}/node_modules");
        let mut env: Vec<(OsString, OsString)> = [
            ("PATH", PATH),
            ("HOME", WORKDIR),
            ("USER", SANDBOX_USER),
            ("LANG", "C.UTF-8"),
            ("TMPDIR", "/tmp"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        if let JailCommand::Harness { env_fd } = &self.command {
            env.extend(
                [
                    ("HARNESS_SOCKET", SOCKET.to_owned()),
                    ("HARNESS_WORKDIR_ROOT", WORKDIR.to_owned()),
                    ("HARNESS_NODE_MODULES", modules_dir.clone()),
                    ("HARNESS_ENV_FD", env_fd.to_string()),
                ]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into())),
            );
        }
        env.extend(self.env.iter().cloned());
        for (k, v) in &env {
            opt(&mut c, "--setenv", &[k, v]);
        }

        // The filesystem: system dirs, a short /etc, and the sandbox's own accounts.
        for entry in &self.system {
            match entry {
                SystemEntry::ReadOnly(dir) => opt(&mut c, "--ro-bind", &[dir, dir]),
                SystemEntry::Symlink { target, link } => opt(&mut c, "--symlink", &[target, link]),
            }
        }
        for file in &self.etc_files {
            opt(&mut c, "--ro-bind-try", &[file, file]);
        }
        opt(
            &mut c,
            "--ro-bind-data",
            &[&self.passwd_fd.to_string(), "/etc/passwd"],
        );
        opt(
            &mut c,
            "--ro-bind-data",
            &[&self.group_fd.to_string(), "/etc/group"],
        );
        opt(&mut c, "--proc", &["/proc"]);
        opt(&mut c, "--dev", &["/dev"]);
        opt(&mut c, "--tmpfs", &["/dev/shm"]);
        if let Some(bytes) = self.tmp_bytes {
            opt(&mut c, "--size", &[bytes.to_string()]);
        }
        opt(&mut c, "--tmpfs", &["/tmp"]);
        opt(
            &mut c,
            "--bind",
            &[self.run_dir.as_os_str(), RUN_DIR.as_ref()],
        );
        opt(
            &mut c,
            "--bind",
            &[self.workdir.as_os_str(), WORKDIR.as_ref()],
        );
        let node_dest = format!("{HARNESS_DIR}/bin/node");
        let harness_dest = format!("{HARNESS_DIR}/harness.mjs");
        opt(
            &mut c,
            "--ro-bind",
            &[self.node.as_os_str(), node_dest.as_ref()],
        );
        opt(
            &mut c,
            "--ro-bind",
            &[self.harness.as_os_str(), harness_dest.as_ref()],
        );
        opt(
            &mut c,
            "--ro-bind",
            &[self.node_modules.as_os_str(), modules_dir.as_ref()],
        );
        for bind in &self.extra_ro {
            opt(&mut c, "--ro-bind", &[&bind.source, &bind.dest]);
        }
        if let Some(project) = &self.project {
            let how = if project.writable {
                "--bind"
            } else {
                "--ro-bind"
            };
            opt(&mut c, how, &[&project.source, &project.dest]);
        }
        // The root and /dev are bwrap's own tmpfs: read-only once everything is mounted, so
        // that only /workdir, /tmp, /dev/shm and the run directory take writes.
        opt(&mut c, "--remount-ro", &["/dev"]);
        opt(&mut c, "--remount-ro", &["/"]);

        // Seccomp, status, and the command.
        for fd in &self.seccomp_fds {
            opt(&mut c, "--add-seccomp-fd", &[fd.to_string()]);
        }
        if let Some(fd) = self.info_fd {
            opt(&mut c, "--info-fd", &[fd.to_string()]);
        }
        opt(&mut c, "--chdir", &[WORKDIR]);
        c.push_arg("--");
        match &self.command {
            JailCommand::Harness { .. } => {
                c.push_arg(node_dest);
                c.push_arg(harness_dest);
            }
            JailCommand::Exec(argv) => {
                for arg in argv {
                    c.push_arg(arg);
                }
            }
        }
        c
    }
}

/// The sandbox's `/etc/passwd`: its own user and root, nothing of the host's accounts.
pub fn passwd() -> String {
    format!(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n\
         {SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_GID}:{SANDBOX_USER}:{WORKDIR}:/bin/bash\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
}

/// The sandbox's `/etc/group`.
pub fn group() -> String {
    format!("root:x:0:\n{SANDBOX_USER}:x:{SANDBOX_GID}:\nnogroup:x:65534:\n")
}

/// The `/etc` files a sandbox sees when the host has them: name resolution, TLS roots, time
/// zone, the dynamic loader's cache, Debian's alternatives. No shadow, no host accounts.
pub fn default_etc_files() -> Vec<PathBuf> {
    [
        "/etc/alternatives",
        "/etc/ca-certificates",
        "/etc/ssl",
        "/etc/pki",
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d",
        "/etc/localtime",
        "/etc/nsswitch.conf",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/os-release",
        "/etc/mime.types",
        "/etc/gitconfig",
        "/etc/bash.bashrc",
        "/etc/inputrc",
        "/etc/terminfo",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}
