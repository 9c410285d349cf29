//! The jail as data: a config struct and the pure function that turns it into bwrap's argv.
//!
//! Compiled on every OS and snapshot-tested; only the launcher that spawns it is Linux-only.
//! Nothing secret is ever part of this argv: the boot token and engine keys reach the harness
//! through an inherited pipe (`HARNESS_ENV_FD`).

use std::ffi::OsString;
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
    /// Network namespace.
    pub network: JailNetwork,
    /// Size cap of the private `/tmp` (tmpfs), bytes.
    pub tmp_bytes: Option<u64>,
    /// Fds of the seccomp programs.
    pub seccomp_fds: Vec<i32>,
    /// Fd on which bwrap reports the sandbox's pid (JSON).
    pub info_fd: Option<i32>,
    /// The fd the harness reads its secret variables from (inherited through bwrap).
    pub env_fd: i32,
    /// Non-secret variables of the harness, beyond the fixed ones.
    pub env: Vec<(OsString, OsString)>,
}

impl JailConfig {
    /// The bwrap command: namespaces, mounts, limits on privilege, then `node harness.mjs`.
    pub fn command(&self) -> CommandSpec {
        let mut c = CommandSpec::new(&self.bwrap).env_clear();
        let mut a = |args: &[&std::ffi::OsStr]| {
            for arg in args {
                c.push_arg(*arg);
            }
        };
        let s = |v: &str| -> OsString { v.into() };

        a(&[
            "--unshare-user".as_ref(),
            "--unshare-pid".as_ref(),
            "--unshare-ipc".as_ref(),
            "--unshare-uts".as_ref(),
            "--unshare-cgroup".as_ref(),
        ]);
        if self.network == JailNetwork::Isolated {
            a(&["--unshare-net".as_ref()]);
        }
        a(&["--disable-userns".as_ref()]);
        a(&[
            "--uid".as_ref(),
            s(&SANDBOX_UID.to_string()).as_os_str(),
            "--gid".as_ref(),
            s(&SANDBOX_GID.to_string()).as_os_str(),
            "--hostname".as_ref(),
            HOSTNAME.as_ref(),
            "--die-with-parent".as_ref(),
            "--new-session".as_ref(),
            "--cap-drop".as_ref(),
            "ALL".as_ref(),
            "--clearenv".as_ref(),
        ]);

        let modules_dir = format!("{HARNESS_DIR}/node_modules");
        let fixed_env: [(&str, OsString); 8] = [
            ("PATH", s(PATH)),
            ("HOME", s(WORKDIR)),
            ("USER", s(SANDBOX_USER)),
            ("LANG", s("C.UTF-8")),
            ("TMPDIR", s("/tmp")),
            ("HARNESS_SOCKET", s(SOCKET)),
            ("HARNESS_WORKDIR_ROOT", s(WORKDIR)),
            ("HARNESS_NODE_MODULES", s(&modules_dir)),
        ];
        for (k, v) in &fixed_env {
            a(&["--setenv".as_ref(), k.as_ref(), v.as_os_str()]);
        }
        let env_fd = self.env_fd.to_string();
        a(&[
            "--setenv".as_ref(),
            "HARNESS_ENV_FD".as_ref(),
            env_fd.as_ref(),
        ]);
        for (k, v) in &self.env {
            a(&["--setenv".as_ref(), k.as_os_str(), v.as_os_str()]);
        }

        for entry in &self.system {
            match entry {
                SystemEntry::ReadOnly(dir) => {
                    a(&["--ro-bind".as_ref(), dir.as_os_str(), dir.as_os_str()]);
                }
                SystemEntry::Symlink { target, link } => {
                    a(&["--symlink".as_ref(), target.as_os_str(), link.as_os_str()]);
                }
            }
        }
        for file in &self.etc_files {
            a(&["--ro-bind-try".as_ref(), file.as_os_str(), file.as_os_str()]);
        }
        let (passwd_fd, group_fd) = (self.passwd_fd.to_string(), self.group_fd.to_string());
        a(&[
            "--ro-bind-data".as_ref(),
            passwd_fd.as_ref(),
            "/etc/passwd".as_ref(),
        ]);
        a(&[
            "--ro-bind-data".as_ref(),
            group_fd.as_ref(),
            "/etc/group".as_ref(),
        ]);

        a(&[
            "--proc".as_ref(),
            "/proc".as_ref(),
            "--dev".as_ref(),
            "/dev".as_ref(),
        ]);
        if let Some(bytes) = self.tmp_bytes {
            let bytes = bytes.to_string();
            a(&["--size".as_ref(), bytes.as_ref()]);
        }
        a(&[
            "--tmpfs".as_ref(),
            "/tmp".as_ref(),
            "--tmpfs".as_ref(),
            "/run".as_ref(),
        ]);
        a(&[
            "--bind".as_ref(),
            self.run_dir.as_os_str(),
            RUN_DIR.as_ref(),
        ]);
        a(&[
            "--bind".as_ref(),
            self.workdir.as_os_str(),
            WORKDIR.as_ref(),
        ]);

        let node_dest = format!("{HARNESS_DIR}/bin/node");
        let harness_dest = format!("{HARNESS_DIR}/harness.mjs");
        a(&[
            "--ro-bind".as_ref(),
            self.node.as_os_str(),
            node_dest.as_ref(),
        ]);
        a(&[
            "--ro-bind".as_ref(),
            self.harness.as_os_str(),
            harness_dest.as_ref(),
        ]);
        a(&[
            "--ro-bind".as_ref(),
            self.node_modules.as_os_str(),
            modules_dir.as_ref(),
        ]);
        for bind in &self.extra_ro {
            a(&[
                "--ro-bind".as_ref(),
                bind.source.as_os_str(),
                bind.dest.as_os_str(),
            ]);
        }

        for fd in &self.seccomp_fds {
            let fd = fd.to_string();
            a(&["--add-seccomp-fd".as_ref(), fd.as_ref()]);
        }
        if let Some(fd) = self.info_fd {
            let fd = fd.to_string();
            a(&["--info-fd".as_ref(), fd.as_ref()]);
        }
        a(&[
            "--chdir".as_ref(),
            WORKDIR.as_ref(),
            "--".as_ref(),
            node_dest.as_ref(),
            harness_dest.as_ref(),
        ]);
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
