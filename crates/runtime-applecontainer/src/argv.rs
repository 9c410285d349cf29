//! Every `container` call the runtime makes, as data: pure builders from arguments to a
//! [`CommandSpec`], snapshot-tested on every OS, and parsers of the JSON the CLI prints.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use substrate_core::{CommandSpec, Error, Result};

/// A host directory mounted into the container (`--volume HOST:GUEST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The host directory.
    pub host: PathBuf,
    /// Where it appears in the container.
    pub guest: String,
    /// Read-only.
    pub read_only: bool,
}

/// A published port (`-p HOST_IP:HOST_PORT:CONTAINER_PORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    /// The host address it listens on (the runtime only ever uses 127.0.0.1).
    pub host_ip: IpAddr,
    /// The host port.
    pub host_port: u16,
    /// The port in the container.
    pub container_port: u16,
}

impl Publish {
    /// `127.0.0.1:host_port` → `container_port`.
    pub fn loopback(host_port: u16, container_port: u16) -> Self {
        Self {
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port,
            container_port,
        }
    }
}

/// What `container run` is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunArgs {
    /// The container's name (its id).
    pub name: String,
    /// The image reference.
    pub image: String,
    /// CPUs.
    pub cpus: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// A `KEY=VALUE` file the CLI reads before it returns (secrets never go in the argv).
    pub env_file: Option<PathBuf>,
    /// Host directories.
    pub volumes: Vec<Volume>,
    /// The initial working directory.
    pub workdir: Option<String>,
    /// Mount the root filesystem read-only.
    pub read_only: bool,
    /// tmpfs mounts.
    pub tmpfs: Vec<String>,
    /// Remove the container when it stops.
    pub remove: bool,
    /// Published ports.
    pub publish: Vec<Publish>,
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// The command; empty runs the image's own.
    pub command: Vec<String>,
}

/// The `container` calls.
#[derive(Debug, Clone)]
pub struct Container {
    program: PathBuf,
}

impl Container {
    /// Calls `program`.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    /// The program.
    pub fn program(&self) -> &Path {
        &self.program
    }

    fn command(&self) -> CommandSpec {
        CommandSpec::new(self.program.clone())
    }

    /// `container system status`: exit 0 when the service answers.
    pub fn system_status(&self) -> CommandSpec {
        self.command().args(["system", "status"])
    }

    /// `container system start`, for messages: a person runs it once per login.
    pub fn system_start(&self) -> CommandSpec {
        self.command().args(["system", "start"])
    }

    /// `container image inspect REF`: exit 0 when the image is in the local store.
    pub fn image_inspect(&self, image: &str) -> CommandSpec {
        self.command().args(["image", "inspect", image])
    }

    /// `container image list --format json`.
    pub fn image_list(&self) -> CommandSpec {
        self.command().args(["image", "list", "--format", "json"])
    }

    /// `container image pull REF`.
    pub fn image_pull(&self, image: &str) -> CommandSpec {
        self.command().args(["image", "pull", image])
    }

    /// `container build --tag TAG --file FILE CONTEXT`.
    pub fn build(&self, tag: &str, file: &Path, context: &Path) -> CommandSpec {
        self.command()
            .args(["build", "--tag", tag, "--file"])
            .arg(file.as_os_str())
            .arg(context.as_os_str())
    }

    /// `container network inspect NAME`: the network's subnet and gateway.
    pub fn network_inspect(&self, network: &str) -> CommandSpec {
        self.command().args(["network", "inspect", network])
    }

    /// `container run --detach …`: prints the container's id once it runs.
    pub fn run(&self, run: &RunArgs) -> CommandSpec {
        let mut cmd = self
            .command()
            .args(["run", "--detach", "--name", run.name.as_str()]);
        if let Some(cpus) = run.cpus {
            cmd = cmd.arg("--cpus").arg(cpus.to_string());
        }
        if let Some(mib) = run.memory_mib {
            cmd = cmd.arg("--memory").arg(format!("{mib}M"));
        }
        if let Some(file) = &run.env_file {
            cmd = cmd.arg("--env-file").arg(file.as_os_str());
        }
        for volume in &run.volumes {
            let mut value = volume.host.as_os_str().to_owned();
            value.push(":");
            value.push(&volume.guest);
            if volume.read_only {
                value.push(":ro");
            }
            cmd = cmd.arg("--volume").arg(value);
        }
        if let Some(dir) = &run.workdir {
            cmd = cmd.arg("--workdir").arg(dir);
        }
        if run.read_only {
            cmd = cmd.arg("--read-only");
        }
        for path in &run.tmpfs {
            cmd = cmd.arg("--tmpfs").arg(path);
        }
        if run.remove {
            cmd = cmd.arg("--rm");
        }
        for p in &run.publish {
            let host = match p.host_ip {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            };
            cmd = cmd
                .arg("--publish")
                .arg(format!("{host}:{}:{}/tcp", p.host_port, p.container_port));
        }
        for (key, value) in &run.labels {
            cmd = cmd.arg("--label").arg(format!("{key}={value}"));
        }
        cmd.arg(&run.image).args(run.command.iter())
    }

    /// `container exec [--env-file FILE] [--workdir DIR] ID CMD…`.
    pub fn exec(
        &self,
        id: &str,
        env_file: Option<&Path>,
        workdir: Option<&str>,
        command: &[String],
    ) -> CommandSpec {
        let mut cmd = self.command().arg("exec");
        if let Some(file) = env_file {
            cmd = cmd.arg("--env-file").arg(file.as_os_str());
        }
        if let Some(dir) = workdir {
            cmd = cmd.arg("--workdir").arg(dir);
        }
        cmd.arg(id).args(command.iter())
    }

    /// `container exec --interactive --tty --env-file FILE --workdir DIR ID COMMAND…`: a
    /// program on the caller's terminal in a running container.
    pub fn exec_terminal(
        &self,
        id: &str,
        env_file: &Path,
        workdir: &str,
        command: &[std::ffi::OsString],
    ) -> CommandSpec {
        self.command()
            .args(["exec", "--interactive", "--tty", "--env-file"])
            .arg(env_file.as_os_str())
            .arg("--workdir")
            .arg(workdir)
            .arg(id)
            .args(command.iter().cloned())
    }

    /// `container stop --time SECONDS ID`: SIGTERM, then SIGKILL after the grace time.
    pub fn stop(&self, id: &str, grace: Duration) -> CommandSpec {
        self.command()
            .args(["stop", "--time"])
            .arg(grace.as_secs().max(1).to_string())
            .arg(id)
    }

    /// `container delete --force ID`.
    pub fn delete(&self, id: &str) -> CommandSpec {
        self.command().args(["delete", "--force", id])
    }

    /// `container inspect ID`.
    pub fn inspect(&self, id: &str) -> CommandSpec {
        self.command().args(["inspect", id])
    }

    /// `container list --all --format json`.
    pub fn list(&self) -> CommandSpec {
        self.command().args(["list", "--all", "--format", "json"])
    }

    /// `container logs ID`.
    pub fn logs(&self, id: &str) -> CommandSpec {
        self.command().args(["logs", id])
    }
}

/// One container as `container inspect` and `container list --format json` print it (the
/// fields the runtime reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContainerInfo {
    /// `running`, `stopped`, …
    #[serde(default)]
    pub status: String,
    /// Its configuration.
    pub configuration: Configuration,
    /// Its network attachments (empty unless it runs).
    #[serde(default)]
    pub networks: Vec<Attachment>,
}

impl ContainerInfo {
    /// Whether it runs.
    pub fn running(&self) -> bool {
        self.status.eq_ignore_ascii_case("running")
    }
}

/// The configuration part of [`ContainerInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Configuration {
    /// The container's id (its name).
    pub id: String,
}

/// A network attachment of [`ContainerInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    /// `ADDRESS/PREFIX`.
    #[serde(default)]
    pub address: Option<String>,
    /// The gateway (older releases call it `gateway`, newer ones `ipv4Gateway`).
    #[serde(default, alias = "ipv4Gateway")]
    pub gateway: Option<String>,
}

/// Parses `container inspect` or `container list --format json`.
pub fn parse_containers(json: &[u8]) -> Result<Vec<ContainerInfo>> {
    serde_json::from_slice(json)
        .map_err(|e| Error::Decode(format!("`container` printed no container list: {e}")))
}

/// The IPv4 gateway in `container network inspect` output: the first `ipv4Gateway` or
/// `gateway` value anywhere in it, so that releases that move the field still parse.
pub fn parse_gateway(json: &[u8]) -> Result<Ipv4Addr> {
    let value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| Error::Decode(format!("`container network inspect` printed no JSON: {e}")))?;
    find_gateway(&value).ok_or_else(|| {
        Error::Decode(format!(
            "`container network inspect` names no IPv4 gateway: {}",
            String::from_utf8_lossy(json)
                .chars()
                .take(400)
                .collect::<String>()
        ))
    })
}

fn find_gateway(value: &serde_json::Value) -> Option<Ipv4Addr> {
    match value {
        serde_json::Value::Object(map) => {
            for key in ["ipv4Gateway", "gateway"] {
                if let Some(ip) = map
                    .get(key)
                    .and_then(serde_json::Value::as_str)
                    .and_then(|s| s.parse().ok())
                {
                    return Some(ip);
                }
            }
            map.values().find_map(find_gateway)
        }
        serde_json::Value::Array(items) => items.iter().find_map(find_gateway),
        _ => None,
    }
}
