//! Every `tart` call the runtime makes, as data: pure builders from arguments to a
//! [`CommandSpec`], snapshot-tested on every OS.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use substrate_core::CommandSpec;

/// A host directory shared into the VM (`tart run --dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDir {
    /// The share's name (in a Linux guest it appears under the virtiofs mount as this name).
    pub name: String,
    /// The host directory.
    pub path: PathBuf,
    /// Read-only.
    pub read_only: bool,
}

/// Where a Linux guest mounts Tart's shared directories (the virtiofs tag
/// `com.apple.virtio-fs.automount`); each share is a directory of it named as the share.
pub const LINUX_SHARES: &str = "/mnt/shared";

impl SharedDir {
    /// Where the share appears in a Linux guest.
    pub fn guest_path(&self) -> PathBuf {
        PathBuf::from(LINUX_SHARES).join(&self.name)
    }

    /// Whether the name can be a share's: letters, digits, `-` and `_` (it names a directory
    /// in the guest and goes into `tart run --dir NAME:PATH`).
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }
}

/// How `tart run` networks the VM.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TartNet {
    /// Tart's default shared NAT: the VM reaches the internet and the host.
    Nat,
    /// Softnet with every destination blocked: the VM answers the host's SSH and reaches
    /// nothing itself.
    SoftnetBlockAll,
}

/// The `tart` calls.
#[derive(Debug, Clone)]
pub struct Tart {
    program: PathBuf,
    home: Option<PathBuf>,
}

impl Tart {
    /// Calls `program`, with `TART_HOME` set when `home` is.
    pub fn new(program: impl Into<PathBuf>, home: Option<PathBuf>) -> Self {
        Self {
            program: program.into(),
            home,
        }
    }

    fn command(&self) -> CommandSpec {
        let cmd = CommandSpec::new(self.program.clone());
        match &self.home {
            Some(home) => cmd.env("TART_HOME", home.clone()),
            None => cmd,
        }
    }

    /// `tart clone SRC DST`.
    pub fn clone_vm(&self, src: &str, dst: &str) -> CommandSpec {
        self.command().args(["clone", src, dst])
    }

    /// `tart set NAME --cpu N --memory MiB`.
    pub fn set(&self, name: &str, cpus: Option<u32>, memory_mib: Option<u64>) -> CommandSpec {
        let mut cmd = self.command().args(["set", name]);
        if let Some(cpus) = cpus {
            cmd = cmd.args(["--cpu".to_owned(), cpus.to_string()]);
        }
        if let Some(mib) = memory_mib {
            cmd = cmd.args(["--memory".to_owned(), mib.to_string()]);
        }
        cmd
    }

    /// `tart run NAME --no-graphics [--dir …] [--net-softnet …]` (runs until the VM stops).
    pub fn run(&self, name: &str, dirs: &[SharedDir], net: &TartNet) -> CommandSpec {
        let mut cmd = self.command().args(["run", name, "--no-graphics"]);
        for dir in dirs {
            let mut value = OsString::from(format!("--dir={}:", dir.name));
            value.push(dir.path.as_os_str());
            if dir.read_only {
                value.push(":ro");
            }
            cmd = cmd.arg(value);
        }
        if let TartNet::SoftnetBlockAll = net {
            cmd = cmd.args(["--net-softnet", "--net-softnet-block=0.0.0.0/0"]);
        }
        cmd
    }

    /// `tart ip NAME --wait SECONDS`.
    pub fn ip(&self, name: &str, wait: Duration) -> CommandSpec {
        self.command()
            .args(["ip", name, "--wait"])
            .arg(wait.as_secs().max(1).to_string())
    }

    /// `tart stop NAME --timeout SECONDS`.
    pub fn stop(&self, name: &str, timeout: Duration) -> CommandSpec {
        self.command()
            .args(["stop", name, "--timeout"])
            .arg(timeout.as_secs().to_string())
    }

    /// `tart delete NAME`.
    pub fn delete(&self, name: &str) -> CommandSpec {
        self.command().args(["delete", name])
    }

    /// `tart list --source local --format json`.
    pub fn list(&self) -> CommandSpec {
        self.command()
            .args(["list", "--source", "local", "--format", "json"])
    }
}

/// One row of `tart list --format json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ListedVm {
    /// Its name.
    #[serde(rename = "Name")]
    pub name: String,
    /// `running`, `stopped`, … (absent in old tart versions).
    #[serde(rename = "State", default)]
    pub state: Option<String>,
    /// Whether it runs (absent in old tart versions).
    #[serde(rename = "Running", default)]
    pub running: Option<bool>,
}

/// Parses `tart list --format json`.
pub fn parse_list(json: &[u8]) -> substrate_core::Result<Vec<ListedVm>> {
    serde_json::from_slice(json).map_err(|e| {
        substrate_core::Error::Decode(format!("`tart list --format json` printed no VM list: {e}"))
    })
}
