//! Every `limactl` call the runtime makes, as data: pure builders from arguments to a
//! [`CommandSpec`], snapshot-tested on every OS.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use substrate_core::CommandSpec;

/// A host directory mounted into the instance at the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The host directory.
    pub path: PathBuf,
    /// Writable from inside (a project the agent works on); otherwise read-only.
    pub writable: bool,
}

/// CPU, memory and mounts of an instance (`--cpus`, `--memory`, `--mount`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceShape {
    /// CPUs.
    pub cpus: Option<u32>,
    /// Memory in GiB.
    pub memory_gib: Option<f64>,
    /// Mounts.
    pub mounts: Vec<Mount>,
}

impl InstanceShape {
    fn push(&self, mut cmd: CommandSpec) -> CommandSpec {
        if let Some(cpus) = self.cpus {
            cmd = cmd.arg(format!("--cpus={cpus}"));
        }
        if let Some(gib) = self.memory_gib {
            cmd = cmd.arg(format!("--memory={gib}"));
        }
        for mount in &self.mounts {
            let mut value = OsString::from("--mount=");
            value.push(mount.path.as_os_str());
            if mount.writable {
                value.push(":w");
            }
            cmd = cmd.arg(value);
        }
        cmd
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.cpus.is_none() && self.memory_gib.is_none() && self.mounts.is_empty()
    }
}

/// The `limactl` calls.
#[derive(Debug, Clone)]
pub struct Limactl {
    program: PathBuf,
    home: Option<PathBuf>,
}

impl Limactl {
    /// Calls `program`, with `LIMA_HOME` set when `home` is.
    pub fn new(program: impl Into<PathBuf>, home: Option<PathBuf>) -> Self {
        Self {
            program: program.into(),
            home,
        }
    }

    /// The directory Lima keeps its state in (`LIMA_HOME`, default `~/.lima`).
    pub fn home(&self) -> Option<PathBuf> {
        self.home.clone().or_else(|| {
            std::env::var_os("LIMA_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".lima")))
        })
    }

    fn command(&self) -> CommandSpec {
        let cmd = CommandSpec::new(self.program.clone());
        match &self.home {
            Some(home) => cmd.env("LIMA_HOME", home.clone()),
            None => cmd,
        }
    }

    /// `limactl create --name=NAME --tty=false [shape] TEMPLATE`.
    pub fn create(&self, name: &str, template: &str, shape: &InstanceShape) -> CommandSpec {
        let cmd = self.command().args([
            "create".to_owned(),
            format!("--name={name}"),
            "--tty=false".into(),
        ]);
        shape.push(cmd).arg(template)
    }

    /// `limactl clone SRC DST --tty=false [shape]`.
    pub fn clone_instance(&self, src: &str, dst: &str, shape: &InstanceShape) -> CommandSpec {
        let cmd = self.command().args(["clone", src, dst, "--tty=false"]);
        shape.push(cmd)
    }

    /// `limactl start NAME --tty=false --timeout=Ns` (returns once the instance is ready).
    pub fn start(&self, name: &str, timeout: Duration) -> CommandSpec {
        self.command().args([
            "start".to_owned(),
            name.to_owned(),
            "--tty=false".into(),
            format!("--timeout={}s", timeout.as_secs().max(1)),
        ])
    }

    /// `limactl list --json [NAME]`.
    pub fn list(&self, name: Option<&str>) -> CommandSpec {
        let cmd = self.command().args(["list", "--json"]);
        match name {
            Some(name) => cmd.arg(name),
            None => cmd,
        }
    }

    /// `limactl stop NAME`.
    pub fn stop(&self, name: &str) -> CommandSpec {
        self.command().args(["stop", name])
    }

    /// `limactl delete --force NAME` (stops it first if it runs).
    pub fn delete(&self, name: &str) -> CommandSpec {
        self.command().args(["delete", "--force", name])
    }
}

/// One line of `limactl list --json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ListedInstance {
    /// Its name.
    pub name: String,
    /// `Running`, `Stopped`, `Broken`, …
    #[serde(default)]
    pub status: String,
    /// The host port of its SSH server (0 when it does not run).
    #[serde(rename = "sshLocalPort", default)]
    pub ssh_local_port: u16,
    /// The address of that port (Lima 1.0+; `127.0.0.1` before).
    #[serde(rename = "sshAddress", default)]
    pub ssh_address: Option<String>,
}

/// Parses `limactl list --json` (one JSON object per line).
pub fn parse_list(out: &[u8]) -> substrate_core::Result<Vec<ListedInstance>> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).map_err(|e| {
                substrate_core::Error::Decode(format!(
                    "`limactl list --json` printed {line:?}, not an instance: {e}"
                ))
            })
        })
        .collect()
}
