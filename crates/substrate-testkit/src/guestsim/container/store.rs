//! The simulated service's store: images, containers, faults and the service switch.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::guestsim::vm::{Store, alive, random_id, run, set_mode, write_atomic};

/// CPUs a container gets unless `--cpus` says otherwise (the real default).
pub const DEFAULT_CPUS: u32 = 4;
/// Memory a container gets unless `--memory` says otherwise (the real default, 1 GiB).
pub const DEFAULT_MEMORY: u64 = 1 << 30;

/// Top-level guest directories an image cannot carry: they come from the host (`/usr` and
/// its links) or from the sandbox (`/proc`, `/dev`, `/tmp`).
const RESERVED: [&str; 11] = [
    "usr", "proc", "dev", "sys", "tmp", "bin", "sbin", "lib", "lib32", "lib64", "libx32",
];

/// An image for the simulator to hold, as a test describes it: there is no registry and no
/// builder, so tests lay out what a Containerfile would.
#[derive(Debug, Clone, Default)]
pub struct ContainerImage {
    /// Its reference (`name:tag`; no tag means `:latest`).
    pub reference: String,
    /// Host files or directories (copied recursively, owned by root) and where they go.
    pub files: Vec<(PathBuf, String)>,
    /// Directories to create: (absolute path, uid, gid, mode), applied after the files.
    pub dirs: Vec<(String, u32, u32, u32)>,
    /// The default command.
    pub cmd: Vec<String>,
    /// The user (uid, gid) the command runs as; a non-root user is named `node`, with home
    /// `/home/node`.
    pub user: (u32, u32),
    /// Variables the image sets.
    pub env: Vec<(String, String)>,
    /// The default working directory.
    pub workdir: String,
}

/// Faults a test can inject into every container of an image.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ContainerFaults {
    /// `node` in the container exits at once with a message on stderr and status 3.
    pub node_exits: bool,
    /// `node` in the container hangs without listening.
    pub node_hangs: bool,
}

/// An image as the store keeps it (`images/<ref>/config.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Its reference, normalized (always with a tag).
    pub reference: String,
    /// The default command.
    pub cmd: Vec<String>,
    /// `uid:gid`.
    pub user: String,
    /// `KEY=VALUE` variables.
    pub env: Vec<String>,
    /// The default working directory.
    pub workdir: String,
}

impl ImageConfig {
    /// The user as numbers.
    pub fn uid_gid(&self) -> Result<(u32, u32)> {
        parse_user(&self.user)
    }
}

/// `uid[:gid]` (`root` and `node` as names too) → numbers; a missing gid is the uid.
pub(crate) fn parse_user(user: &str) -> Result<(u32, u32)> {
    let number = |s: &str| -> Result<u32> {
        match s {
            "root" => Ok(0),
            "node" => Ok(1000),
            _ => s
                .parse()
                .with_context(|| format!("invalidArgument: \"unknown user or group {s:?}\"")),
        }
    };
    match user.split_once(':') {
        Some((u, g)) => Ok((number(u)?, number(g)?)),
        None => {
            let u = number(user)?;
            Ok((u, u))
        }
    }
}

/// A host directory bound into a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Volume {
    /// The host path.
    pub host: PathBuf,
    /// Where it appears in the container.
    pub guest: String,
    /// Bound read-only.
    pub read_only: bool,
}

/// A published port.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishedPort {
    /// The host address it listens on.
    pub host_address: IpAddr,
    /// The host port.
    pub host_port: u16,
    /// The port in the container.
    pub container_port: u16,
}

/// A container's description as `run` made it (`containers/<id>/config.json`). The
/// environment is not in it: it goes to the container's daemon through a pipe, so secrets
/// from an env file never land on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Its id (`--name`).
    pub id: String,
    /// The image reference, normalized.
    pub image: String,
    /// The process's argv.
    pub command: Vec<String>,
    /// Its working directory.
    pub workdir: String,
    /// Its user (uid, gid).
    pub user: (u32, u32),
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Published ports.
    pub published: Vec<PublishedPort>,
    /// CPUs (recorded, not enforced).
    pub cpus: u32,
    /// Memory in bytes (recorded, not enforced).
    pub memory_bytes: u64,
    /// The image's directories are read-only.
    pub read_only: bool,
    /// tmpfs mounts.
    pub tmpfs: Vec<String>,
    /// Bind mounts.
    pub volumes: Vec<Volume>,
    /// Deleted when its process exits.
    pub remove: bool,
}

/// A container's run state (`containers/<id>/state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    /// The container's daemon (it owns the namespace, mounts and forwarders).
    pub pid: i32,
    /// `running` or `stopped`.
    pub status: String,
    /// Its address on the default network while it runs.
    pub address: Option<Ipv4Addr>,
    /// Its address lease.
    pub lease: Option<u32>,
    /// When it started (seconds since the epoch).
    pub started_at: u64,
    /// The process's exit status once it stopped (128 + signal when killed).
    pub exit_code: Option<i32>,
}

impl ContainerState {
    /// Whether it runs: its state says so and its daemon lives.
    pub fn running(&self) -> bool {
        self.status == "running" && alive(self.pid)
    }
}

/// `name` → `name:latest`; a reference with a tag or digest stays as it is.
pub fn normalize_reference(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') || last.contains('@') {
        reference.to_owned()
    } else {
        format!("{reference}:latest")
    }
}

/// A reference as one directory name.
fn escape(reference: &str) -> String {
    reference
        .bytes()
        .enumerate()
        .map(|(i, b)| {
            if b.is_ascii_alphanumeric() || (i > 0 && matches!(b, b'.' | b'_' | b'-')) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The simulated service's store.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    store: Store,
}

impl ContainerStore {
    /// The store under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            store: Store::new(root),
        }
    }

    /// The store of this process, as the real CLI finds its service: `container-sim-home` next
    /// to `argv[0]` as invoked (the link, not the simulator it points to), else
    /// `$HOME/.container-sim`.
    pub fn locate() -> Self {
        let argv0 = std::env::args_os().next().map(PathBuf::from);
        let dir = argv0.and_then(|a| {
            if a.components().count() > 1 {
                a.parent().map(Path::to_path_buf)
            } else {
                // Called through PATH: the first directory that has it.
                std::env::var_os("PATH")
                    .and_then(|path| std::env::split_paths(&path).find(|d| d.join(&a).exists()))
            }
        });
        if let Some(root) = dir
            .and_then(|d| fs::read_to_string(d.join("container-sim-home")).ok())
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
        {
            return Self::new(root);
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        Self::new(PathBuf::from(home).join(".container-sim"))
    }

    /// Its root.
    pub fn root(&self) -> &Path {
        self.store.root()
    }

    /// The generic store (locks, call records).
    pub(crate) fn sim(&self) -> &Store {
        &self.store
    }

    /// Whether the service (the apiserver) is up.
    pub fn service_up(&self) -> bool {
        !self.root().join("sim/service-down").exists()
    }

    /// Turns the service on or off (`container system start` turns it on).
    pub fn set_service(&self, up: bool) -> Result<()> {
        let flag = self.root().join("sim/service-down");
        if up {
            match fs::remove_file(&flag) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            }
        } else {
            fs::create_dir_all(self.root().join("sim"))?;
            fs::write(&flag, "")?;
            Ok(())
        }
    }

    /// The directory of image `reference`.
    pub fn image_dir(&self, reference: &str) -> PathBuf {
        self.root()
            .join("images")
            .join(escape(&normalize_reference(reference)))
    }

    /// Image `reference`, when the store has it.
    pub fn image(&self, reference: &str) -> Option<ImageConfig> {
        let text = fs::read_to_string(self.image_dir(reference).join("config.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Every image, by reference.
    pub fn images(&self) -> Vec<ImageConfig> {
        let mut images: Vec<ImageConfig> = fs::read_dir(self.root().join("images"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read_to_string(e.path().join("config.json")).ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect();
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        images
    }

    /// Creates `image` unless the store has its reference, once across processes: built in a
    /// directory of its own and renamed into place under a lock.
    pub fn ensure_image(&self, image: &ContainerImage) -> Result<()> {
        let reference = normalize_reference(&image.reference);
        if self.image(&reference).is_some() {
            return Ok(());
        }
        let _lock = self.store.lock_named("image.lock")?;
        if self.image(&reference).is_some() {
            return Ok(());
        }
        let images = self.root().join("images");
        fs::create_dir_all(&images)?;
        let build = images.join(format!(".build-{}", random_id()));
        let result = build_image(image, &reference, &build).and_then(|()| {
            fs::rename(&build, self.image_dir(&reference))
                .with_context(|| format!("move image {reference} into place"))
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&build);
        }
        result
    }

    /// The faults of image `reference`.
    pub fn faults(&self, reference: &str) -> ContainerFaults {
        fs::read_to_string(self.faults_path(reference))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Sets the faults of image `reference` (for containers started from now on).
    pub fn set_faults(&self, reference: &str, faults: &ContainerFaults) -> Result<()> {
        let path = self.faults_path(reference);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        write_atomic(&path, &serde_json::to_vec(faults)?)
    }

    fn faults_path(&self, reference: &str) -> PathBuf {
        self.root()
            .join("sim/faults")
            .join(format!("{}.json", escape(&normalize_reference(reference))))
    }

    /// The directory of container `id`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root().join("containers").join(id)
    }

    /// Every container's id, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(self.root().join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("config.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }

    /// Container `id`'s description, when it exists.
    pub fn config(&self, id: &str) -> Option<ContainerConfig> {
        let text = fs::read_to_string(self.container_dir(id).join("config.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Container `id`'s run state, once it started.
    pub fn state(&self, id: &str) -> Option<ContainerState> {
        let text = fs::read_to_string(self.container_dir(id).join("state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes container `id`'s run state.
    pub(crate) fn write_state(&self, id: &str, state: &ContainerState) -> Result<()> {
        write_atomic(
            &self.container_dir(id).join("state.json"),
            &serde_json::to_vec_pretty(state)?,
        )
    }

    /// Every CLI call recorded so far, as argv lists.
    pub fn calls(&self) -> Vec<Vec<String>> {
        fs::read_to_string(self.root().join("sim/calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| serde_json::from_value(v["args"].clone()).ok())
            .collect()
    }
}

/// The guest path `path` below the image's root, refusing what an image cannot carry.
fn inside(rootfs: &Path, path: &str) -> Result<PathBuf> {
    let guest = Path::new(path);
    if !guest.is_absolute() {
        bail!("image path {path:?} is not absolute");
    }
    let mut parts = Vec::new();
    for c in guest.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(p) => parts.push(p.to_owned()),
            _ => bail!("image path {path:?} must be plain (no `.` or `..`)"),
        }
    }
    let Some(top) = parts.first().and_then(|p| p.to_str()) else {
        bail!("image path {path:?} is the root itself");
    };
    if RESERVED.contains(&top) {
        bail!(
            "image path {path:?} is under /{top}, which the simulator takes from the host or \
             the sandbox"
        );
    }
    Ok(parts.iter().fold(rootfs.to_path_buf(), |p, c| p.join(c)))
}

/// Lays out `image` in `dir`: `rootfs/` (with a minimal `/etc`) and `config.json`.
fn build_image(image: &ContainerImage, reference: &str, dir: &Path) -> Result<()> {
    if image.reference.trim().is_empty() {
        bail!("an image needs a reference");
    }
    let rootfs = dir.join("rootfs");
    for sub in ["etc", "tmp", "var/tmp", "root"] {
        fs::create_dir_all(rootfs.join(sub))?;
    }
    let (uid, gid) = image.user;
    write_etc(&rootfs.join("etc"), uid, gid)?;
    if uid != 0 {
        let home = rootfs.join("home/node");
        fs::create_dir_all(&home)?;
        std::os::unix::fs::chown(&home, Some(uid), Some(gid))?;
    }
    for (path, _, _, _) in &image.dirs {
        fs::create_dir_all(inside(&rootfs, path)?)?;
    }
    for (src, path) in &image.files {
        let dst = inside(&rootfs, path)?;
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)?;
        }
        if src.is_dir() {
            fs::create_dir_all(&dst)?;
            run(Command::new("cp")
                .args(["-a", "--no-preserve=ownership"])
                .arg(format!("{}/.", src.display()))
                .arg(&dst))?;
        } else {
            run(Command::new("cp")
                .args(["--preserve=mode,timestamps", "--"])
                .arg(src)
                .arg(&dst))
            .with_context(|| format!("copy {} into the image", src.display()))?;
        }
    }
    for (path, uid, gid, mode) in &image.dirs {
        let dst = inside(&rootfs, path)?;
        std::os::unix::fs::chown(&dst, Some(*uid), Some(*gid))?;
        set_mode(&dst, *mode)?;
    }
    set_mode(&rootfs.join("tmp"), 0o1777)?;
    set_mode(&rootfs.join("var/tmp"), 0o1777)?;
    set_mode(&rootfs.join("root"), 0o700)?;
    let config = ImageConfig {
        reference: reference.to_owned(),
        cmd: image.cmd.clone(),
        user: format!("{uid}:{gid}"),
        env: image.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        workdir: if image.workdir.is_empty() {
            "/".into()
        } else {
            image.workdir.clone()
        },
    };
    fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}

/// The guest's `/etc`: root and the image's user (`node`), name resolution from files only,
/// and the host's alternatives and CA certificates.
fn write_etc(etc: &Path, uid: u32, gid: u32) -> Result<()> {
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    if uid != 0 {
        passwd.push_str(&format!("node:x:{uid}:{gid}:node:/home/node:/bin/sh\n"));
    }
    if gid != 0 {
        group.push_str(&format!("node:x:{gid}:\n"));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    fs::write(etc.join("passwd"), passwd)?;
    fs::write(etc.join("group"), group)?;
    fs::write(etc.join("hosts"), "127.0.0.1 localhost\n::1 localhost\n")?;
    fs::write(etc.join("hostname"), "container\n")?;
    fs::write(
        etc.join("nsswitch.conf"),
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
    )?;
    fs::write(etc.join("resolv.conf"), "")?;
    for shared in ["alternatives", "ssl"] {
        let host = Path::new("/etc").join(shared);
        if host.is_dir() {
            run(Command::new("cp").arg("-a").arg(&host).arg(etc))?;
        }
    }
    Ok(())
}
