//! A simulated VM: its disk (overlay layers), and running it as a real Linux guest — a network
//! namespace of its own with a veth pair to the host, and Debian's OpenSSH sshd in a bwrap
//! jail whose `/etc`, `/home`, `/tmp`, `/var`, `/opt` and `/run` are the VM's own disk.
//!
//! Storage (under the simulator's home, `TART_HOME` or `LIMA_HOME`):
//!
//! - `vms/<name>/vm.json`: the VM's layers (lowest last), its origin image, cpu and memory;
//!   `upper/` and `work/`: its own writes (overlayfs); `run.json` while it runs.
//! - `layers/<id>/`: immutable layers shared by clones (a clone freezes its source's writes
//!   into a new layer, which is what makes clones cheap and independent).
//! - `sim/calls.jsonl`: every CLI call (argv); `sim/commands/<vm>.log`: every command the
//!   guest's sshd ran; `sim/faults/<image>.json`: injected faults; `sim/id_ed25519`: the key
//!   that the images authorize.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The login every simulated image has.
pub const GUEST_USER: &str = "admin";
/// Its password.
pub const GUEST_PASSWORD: &str = "admin";

/// Where leases of guest subnets live: global, since network namespaces and addresses are.
const LEASE_DIR: &str = "/run/guest-sim/leases";
/// How many /30 subnets of 10.213.0.0/16 there are.
const LEASES: u32 = 16_384;

/// Faults a test can inject into every VM cloned from an image.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Faults {
    /// `clone` fails.
    pub clone_fails: bool,
    /// The VM runs but never gets an address.
    pub no_ip: bool,
    /// sshd refuses every login.
    pub refuse_auth: bool,
    /// The VM gets a fresh host key on every start.
    pub regenerate_host_key: bool,
    /// `node` in the guest exits at once with an error.
    pub node_exits: bool,
    /// `node` in the guest hangs without listening.
    pub node_hangs: bool,
}

/// A VM's persistent description.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VmConfig {
    /// Immutable layers, topmost first.
    pub layers: Vec<PathBuf>,
    /// The image faults are looked up under (the root of its clone chain, or any image in it
    /// that has faults).
    pub lineage: Vec<String>,
    /// CPUs.
    pub cpu: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Host directories mounted into the guest at the same path: (path, writable).
    #[serde(default)]
    pub mounts: Vec<(PathBuf, bool)>,
}

/// A running VM's state, written once its address exists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// The `run` process.
    pub pid: i32,
    /// The guest's address, when it has one.
    pub ip: Option<Ipv4Addr>,
    /// The lease (subnet index).
    pub lease: u32,
    /// The host 127.0.0.1 port that leads to the guest's sshd, when asked for (Lima's
    /// `sshLocalPort`).
    #[serde(default)]
    pub ssh_local_port: Option<u16>,
}

/// The simulator's storage root.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Its root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Serializes changes to the store across simulator processes.
    pub fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>> {
        self.lock_named("lock")
    }

    /// An exclusive lock of the store's own, by name (e.g. for building an image once while
    /// other test processes wait). Blocks; held until dropped.
    pub fn lock_named(&self, name: &str) -> Result<nix::fcntl::Flock<fs::File>> {
        let dir = self.root.join("sim");
        fs::create_dir_all(&dir)?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(name))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("lock {name} of the simulator's store: {e}"))
    }

    /// A VM's directory.
    pub fn vm_dir(&self, name: &str) -> PathBuf {
        self.root.join("vms").join(name)
    }

    /// Whether a VM (or image) exists.
    pub fn exists(&self, name: &str) -> bool {
        self.vm_dir(name).join("vm.json").is_file()
    }

    /// Every VM's name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root.join("vms"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("vm.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// A VM's config.
    pub fn config(&self, name: &str) -> Result<VmConfig> {
        let path = self.vm_dir(name).join("vm.json");
        let text =
            fs::read_to_string(&path).with_context(|| format!("VM {name} does not exist"))?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    /// Writes a VM's config.
    pub fn write_config(&self, name: &str, config: &VmConfig) -> Result<()> {
        let dir = self.vm_dir(name);
        fs::create_dir_all(dir.join("upper"))?;
        fs::create_dir_all(dir.join("work"))?;
        write_atomic(&dir.join("vm.json"), &serde_json::to_vec_pretty(config)?)
    }

    /// A running VM's state, when its `run` process is alive.
    pub fn run_state(&self, name: &str) -> Option<RunState> {
        let text = fs::read_to_string(self.vm_dir(name).join("run.json")).ok()?;
        let state: RunState = serde_json::from_str(&text).ok()?;
        alive(state.pid).then_some(state)
    }

    /// The faults of every image in `lineage`, merged.
    pub fn faults(&self, lineage: &[String]) -> Faults {
        let mut merged = Faults::default();
        for image in lineage {
            let path = self.root.join("sim/faults").join(format!("{image}.json"));
            if let Ok(text) = fs::read_to_string(path)
                && let Ok(f) = serde_json::from_str::<Faults>(&text)
            {
                merged.clone_fails |= f.clone_fails;
                merged.no_ip |= f.no_ip;
                merged.refuse_auth |= f.refuse_auth;
                merged.regenerate_host_key |= f.regenerate_host_key;
                merged.node_exits |= f.node_exits;
                merged.node_hangs |= f.node_hangs;
            }
        }
        merged
    }

    /// Sets the faults of `image`.
    pub fn set_faults(&self, image: &str, faults: &Faults) -> Result<()> {
        let dir = self.root.join("sim/faults");
        fs::create_dir_all(&dir)?;
        write_atomic(
            &dir.join(format!("{image}.json")),
            &serde_json::to_vec(faults)?,
        )
    }

    /// Appends one CLI call to `sim/calls.jsonl`.
    pub fn record_call(&self, tool: &str, args: &[String]) {
        let dir = self.root.join("sim");
        let _ = fs::create_dir_all(&dir);
        let line = serde_json::json!({ "tool": tool, "args": args });
        if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("calls.jsonl"))
        {
            let _ = writeln!(f, "{line}");
        }
    }

    /// The key pair every image authorizes (created on first use).
    pub fn client_key(&self) -> Result<PathBuf> {
        let dir = self.root.join("sim");
        fs::create_dir_all(&dir)?;
        let key = dir.join("id_ed25519");
        let _lock = self.lock()?;
        if !key.is_file() {
            let tmp = dir.join(format!("id_ed25519.{}", std::process::id()));
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "guest-sim", "-f"])
                .arg(&tmp))?;
            fs::rename(format!("{}.pub", tmp.display()), dir.join("id_ed25519.pub"))?;
            fs::rename(&tmp, &key)?;
        }
        Ok(key)
    }

    /// Creates an image: a VM whose single layer is a minimal guest root with the `admin`
    /// login (password `admin`, and [`Store::client_key`] authorized: create it first), an sshd
    /// host key, and a login shell that records every command.
    ///
    /// With `npm_cache` (a host npm cache directory, e.g. `~/.npm`), the image carries a copy
    /// of it as an offline package mirror (`~/.npmrc` says `offline=true`): the guests have no
    /// route to a registry, as a VM behind a `none` policy has none.
    pub fn create_image(&self, name: &str, npm_cache: Option<&Path>) -> Result<()> {
        if self.exists(name) {
            bail!("VM {name} already exists");
        }
        let layer = self.new_layer_dir()?;
        let build = || -> Result<()> {
            guest_root(&layer, &self.root.join("sim/id_ed25519"))?;
            if let Some(cache) = npm_cache {
                let mirror = layer.join("var/cache/npm");
                fs::create_dir_all(&mirror)?;
                run(Command::new("cp")
                    .arg("-a")
                    .arg(cache.join("_cacache"))
                    .arg(&mirror))?;
                fs::write(
                    layer.join("home/admin/.npmrc"),
                    "cache=/var/cache/npm\noffline=true\nlogs-dir=/tmp/npm-logs\n\
                     update-notifier=false\nfund=false\naudit=false\n",
                )?;
                run(Command::new("chown")
                    .args(["-R", "1000:1000"])
                    .arg(&mirror)
                    .arg(layer.join("home/admin/.npmrc")))?;
            }
            self.write_config(
                name,
                &VmConfig {
                    layers: vec![layer.clone()],
                    lineage: vec![name.to_owned()],
                    cpu: 2,
                    memory_mib: 2048,
                    mounts: Vec::new(),
                },
            )
        };
        build().inspect_err(|_| {
            let _ = fs::remove_dir_all(&layer);
        })
    }

    fn new_layer_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join("layers").join(random_id());
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// `clone SRC DST`: DST sees SRC's disk as it is now and has its own writes from then on.
    pub fn clone_vm(&self, src: &str, dst: &str) -> Result<()> {
        let config = self.config(src)?;
        if self.exists(dst) {
            bail!("VM {dst} already exists");
        }
        if self.faults(&config.lineage).clone_fails {
            bail!("the disk of {src} could not be cloned (injected fault)");
        }
        let mut layers = config.layers.clone();
        let upper = self.vm_dir(src).join("upper");
        if fs::read_dir(&upper)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        {
            let layer = self.new_layer_dir()?;
            fs::remove_dir(&layer)?;
            if self.run_state(src).is_some() {
                // A running VM keeps writing: copy what it has now.
                run(Command::new("cp").arg("-a").arg(&upper).arg(&layer))?;
            } else {
                // A stopped one's writes become a layer both share, as a copy-on-write
                // clone shares blocks: instant, whatever their size.
                fs::rename(&upper, &layer)?;
                let _ = fs::remove_dir_all(self.vm_dir(src).join("work"));
                let mut frozen = config.clone();
                frozen.layers.insert(0, layer.clone());
                self.write_config(src, &frozen)?;
            }
            layers.insert(0, layer);
        }
        let mut lineage = config.lineage.clone();
        lineage.push(dst.to_owned());
        self.write_config(
            dst,
            &VmConfig {
                layers,
                lineage,
                ..config
            },
        )
    }

    /// Removes a VM that is not running, and every layer no VM uses any more.
    pub fn delete(&self, name: &str) -> Result<()> {
        if !self.exists(name) {
            bail!("VM {name} does not exist");
        }
        fs::remove_dir_all(self.vm_dir(name))?;
        let _ = fs::remove_file(self.root.join("sim/commands").join(format!("{name}.log")));
        self.collect_layers()
    }

    fn collect_layers(&self) -> Result<()> {
        let used: Vec<PathBuf> = self
            .names()
            .iter()
            .filter_map(|n| self.config(n).ok())
            .flat_map(|c| c.layers)
            .collect();
        for entry in fs::read_dir(self.root.join("layers"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !used.contains(&entry.path()) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }
}

/// Writes the minimal guest root into `dir`.
fn guest_root(dir: &Path, client_key: &Path) -> Result<()> {
    for sub in [
        "etc/ssh",
        "home/admin/.ssh",
        "tmp",
        "var/log",
        "var/tmp",
        "run/sshd",
        "opt/sim",
    ] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let hash = Command::new("openssl")
        .args(["passwd", "-6", GUEST_PASSWORD])
        .output()
        .context("run openssl (apt-get install openssl)")?;
    let hash = String::from_utf8(hash.stdout)?.trim().to_owned();
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n\
         admin:x:1000:1000:admin:/home/admin:/opt/sim/shell\n\
         sshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )?;
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\nadmin:x:1000:\nnogroup:x:65534:\n",
    )?;
    fs::write(
        dir.join("etc/shadow"),
        format!("root:*:19000:0:99999:7:::\nadmin:{hash}:19000:0:99999:7:::\n"),
    )?;
    set_mode(&dir.join("etc/shadow"), 0o600)?;
    fs::write(
        dir.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
    )?;
    fs::write(dir.join("etc/hostname"), "guest\n")?;
    fs::write(
        dir.join("etc/nsswitch.conf"),
        "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    )?;
    fs::write(dir.join("etc/resolv.conf"), "")?;
    // PAM for sshd's password and keyboard-interactive logins, checked against /etc/shadow.
    fs::create_dir_all(dir.join("etc/pam.d"))?;
    fs::write(
        dir.join("etc/pam.d/sshd"),
        "auth required pam_unix.so\naccount required pam_unix.so\n\
         password required pam_deny.so\nsession required pam_permit.so\n",
    )?;
    // The commands Debian provides through alternatives (awk, editor, …).
    if Path::new("/etc/alternatives").is_dir() {
        run(Command::new("cp")
            .arg("-a")
            .arg("/etc/alternatives")
            .arg(dir.join("etc")))?;
    }
    // The login shell records each command line, then runs it.
    fs::write(
        dir.join("opt/sim/shell"),
        "#!/bin/sh\nif [ \"$1\" = -c ]; then printf '%s\\n' \"$2\" >> /var/log/sim-commands.log; fi\nexec /bin/sh \"$@\"\n",
    )?;
    set_mode(&dir.join("opt/sim/shell"), 0o755)?;
    let public = fs::read_to_string(format!("{}.pub", client_key.display()))?;
    fs::write(dir.join("home/admin/.ssh/authorized_keys"), public)?;
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "guest", "-f"])
        .arg(dir.join("etc/ssh/ssh_host_ed25519_key")))?;
    run(Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(dir.join("home/admin")))?;
    set_mode(&dir.join("tmp"), 0o1777)?;
    set_mode(&dir.join("var/tmp"), 0o1777)?;
    Ok(())
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Runs a command, failing with its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// A random hex id.
pub fn random_id() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom_fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Whether process `pid` exists and has not exited (a zombie its parent has not reaped yet —
/// the runtime waits on `tart run` only after `tart stop` returned — counts as gone).
pub fn alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, Some('Z' | 'X'))
}

/// A subnet lease: index `n` owns 10.213.0.0/16's n-th /30.
struct Lease {
    n: u32,
    path: PathBuf,
}

impl Lease {
    fn take() -> Result<Self> {
        fs::create_dir_all(LEASE_DIR).context("create the lease directory (needs root)")?;
        let start = u32::from_le_bytes({
            let mut b = [0u8; 4];
            let _ = getrandom_fill(&mut b);
            b
        }) % LEASES;
        for i in 0..LEASES {
            let n = (start + i) % LEASES;
            let path = Path::new(LEASE_DIR).join(n.to_string());
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id())?;
                    return Ok(Self { n, path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A lease of a dead simulator is free again (its namespace goes too).
                    let owner = fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<i32>().ok());
                    if owner.is_some_and(|pid| !alive(pid)) {
                        let _ = Command::new("ip")
                            .args(["netns", "del", &netns_name(n)])
                            .output();
                        let _ = fs::remove_file(&path);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        bail!("no free guest subnet")
    }

    fn host_ip(&self) -> Ipv4Addr {
        let base = self.n * 4;
        Ipv4Addr::new(10, 213, (base >> 8) as u8, (base & 0xff) as u8 + 1)
    }

    fn guest_ip(&self) -> Ipv4Addr {
        let base = self.n * 4;
        Ipv4Addr::new(10, 213, (base >> 8) as u8, (base & 0xff) as u8 + 2)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The network namespace of lease `n`.
pub fn netns_name(n: u32) -> String {
    format!("gsim{n}")
}

/// What `run` was asked for beyond the VM itself.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Host directories shared into the guest: (tag or name, host path, read-only).
    pub mounts: Vec<(String, PathBuf, bool)>,
    /// Guest-side path mounts appear under (a tag `t` at `<base>/<t>`), or an explicit guest
    /// path per mount (Lima's `mountPoint`).
    pub mount_base: String,
    /// Listen on a host 127.0.0.1 port and carry each connection to the guest's sshd.
    pub ssh_forward: bool,
    /// Destinations (CIDR) the guest may open connections to despite `net_block`.
    pub net_allow: Vec<String>,
    /// Destinations (CIDR) the guest may not open connections to (tart's softnet): enforced
    /// with nftables in the guest's namespace, outside what the guest's user can change.
    pub net_block: Vec<String>,
}

/// Runs VM `name` in the foreground until SIGTERM/SIGINT (or sshd dies), then removes every
/// trace of the run: processes, namespace, lease, mounts, `run.json`.
pub fn run_vm(store: &Store, name: &str, options: &RunOptions) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let config = store.config(name)?;
    if store.run_state(name).is_some() {
        bail!("VM \"{name}\" is already running");
    }
    let faults = store.faults(&config.lineage);
    let dir = store.vm_dir(name);
    // Signals are taken synchronously so cleanup always runs.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGHUP);
    signals.thread_block()?;

    let lease = Lease::take()?;
    let ns = netns_name(lease.n);
    let host_if = format!("gsh{}", lease.n);
    let guest_if = format!("gsg{}", lease.n);
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    let cleanup_net = || {
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
    };
    let result = (|| -> Result<()> {
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        run(Command::new("ip").args([
            "link", "add", &host_if, "type", "veth", "peer", "name", &guest_if,
        ]))?;
        run(Command::new("ip").args(["link", "set", &guest_if, "netns", &ns]))?;
        run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/30", lease.host_ip()),
            "dev",
            &host_if,
        ]))?;
        run(Command::new("ip").args(["link", "set", &host_if, "up"]))?;
        let in_ns = |args: &[&str]| {
            run(Command::new("ip")
                .args(["netns", "exec", &ns, "ip"])
                .args(args))
        };
        in_ns(&[
            "addr",
            "add",
            &format!("{}/30", lease.guest_ip()),
            "dev",
            &guest_if,
        ])?;
        in_ns(&["link", "set", &guest_if, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        // The guests' network is IPv4 only, like a Tart or Lima VM's NAT.
        run(Command::new("ip").args([
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
        ]))?;
        if !options.net_block.is_empty() {
            softnet(&ns, &options.net_allow, &options.net_block)?;
        }

        // The disk: an overlay of the layers and the VM's own writes, in a mount namespace
        // of this process (it vanishes with the run).
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )?;
        let root = dir.join("mnt");
        fs::create_dir_all(&root)?;
        let lower: Vec<String> = config
            .layers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &root,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .context("mount the VM's disk (overlayfs)")?;

        let key = root.join("etc/ssh/ssh_host_ed25519_key");
        if faults.regenerate_host_key {
            let _ = fs::remove_file(&key);
            let _ = fs::remove_file(key.with_extension("pub"));
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "guest", "-f"])
                .arg(&key))?;
        }
        let auth = if faults.refuse_auth {
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication no\n"
        } else {
            "PasswordAuthentication yes\nKbdInteractiveAuthentication yes\nPubkeyAuthentication yes\n"
        };
        // Images made before PAM was configured log in without it.
        let pam = if root.join("etc/pam.d/sshd").is_file() {
            "yes"
        } else {
            "no"
        };
        fs::write(
            root.join("etc/ssh/sshd_config"),
            format!(
                "HostKey /etc/ssh/ssh_host_ed25519_key\nListenAddress {}\n\
                 AuthorizedKeysFile .ssh/authorized_keys\nPidFile none\nStrictModes no\n\
                 UsePAM {pam}\nPermitRootLogin no\n{auth}AllowTcpForwarding yes\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server\nLogLevel INFO\n",
                lease.guest_ip()
            ),
        )?;
        // The record of every command the guest ran, kept outside the VM.
        let records = store.root().join("sim/commands");
        fs::create_dir_all(&records)?;
        let record = records.join(format!("{name}.log"));
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&record)?;
        set_mode(&record, 0o666)?;

        let mut jail = Command::new("ip");
        jail.args(["netns", "exec", &ns, "bwrap"])
            .args([
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--die-with-parent",
            ])
            .args(["--hostname", "guest", "--cap-add", "ALL"])
            .args(["--ro-bind", "/usr", "/usr"]);
        for link in ["bin", "sbin", "lib", "lib64", "lib32", "libx32"] {
            let host = Path::new("/").join(link);
            if let Ok(target) = fs::read_link(&host) {
                jail.arg("--symlink").arg(target).arg(&host);
            } else if host.is_dir() {
                jail.arg("--ro-bind").arg(&host).arg(&host);
            }
        }
        for sub in ["etc", "home", "tmp", "var", "opt", "run"] {
            jail.arg("--bind")
                .arg(root.join(sub))
                .arg(format!("/{sub}"));
        }
        jail.arg("--bind")
            .arg(&record)
            .arg("/var/log/sim-commands.log");
        for (path, writable) in &config.mounts {
            jail.arg(if *writable { "--bind" } else { "--ro-bind" })
                .arg(path)
                .arg(path);
        }
        // The shares' root is world-traversable, as a guest's own mount point is (bwrap would
        // make the missing directories root's alone).
        if options
            .mounts
            .iter()
            .any(|(tag, _, _)| !tag.starts_with('/'))
        {
            let mut dir = PathBuf::from("/");
            for part in Path::new(&options.mount_base).components().skip(1) {
                dir.push(part);
                jail.args(["--perms", "0755", "--dir"]).arg(&dir);
            }
        }
        for (tag, host, read_only) in &options.mounts {
            let guest = if tag.starts_with('/') {
                tag.clone()
            } else {
                format!("{}/{tag}", options.mount_base)
            };
            jail.arg(if *read_only { "--ro-bind" } else { "--bind" })
                .arg(host)
                .arg(guest);
        }
        if faults.node_exits || faults.node_hangs {
            let fake = dir.join("fake-node");
            let body = if faults.node_exits {
                "#!/bin/sh\necho 'node: simulated crash at startup' >&2\nexit 3\n"
            } else {
                "#!/bin/sh\nexec sleep 100000\n"
            };
            fs::write(&fake, body)?;
            set_mode(&fake, 0o755)?;
            jail.arg("--ro-bind").arg(&fake).arg("/usr/bin/node");
        }
        jail.args(["--proc", "/proc", "--dev", "/dev"])
            .args(["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("sshd.log"))?);
        let mut sshd: Child = jail.spawn().context("start sshd in the guest")?;
        let ssh_local_port = if options.ssh_forward {
            Some(forward_ssh(lease.guest_ip())?)
        } else {
            None
        };
        let state = RunState {
            pid: std::process::id() as i32,
            ip: (!faults.no_ip).then(|| lease.guest_ip()),
            lease: lease.n,
            ssh_local_port,
        };
        write_atomic(&dir.join("run.json"), &serde_json::to_vec(&state)?)?;
        loop {
            if sshd.try_wait()?.is_some() {
                break;
            }
            if signal_pending(&signals) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = sshd.kill();
        let _ = sshd.wait();
        Ok(())
    })();
    let _ = fs::remove_file(dir.join("run.json"));
    let _ = fs::remove_file(dir.join("fake-node"));
    cleanup_net();
    drop(lease);
    result
}

/// Drops new connections from the guest to `block` (but to `allow`), replies to connections
/// the host opened (SSH) still pass.
fn softnet(ns: &str, allow: &[String], block: &[String]) -> Result<()> {
    use std::io::Write as _;
    let family = |cidr: &str| if cidr.contains(':') { "ip6" } else { "ip" };
    let mut rules = String::from(
        "table inet softnet {\n chain output {\n  type filter hook output priority 0; policy accept;\n  \
         oif \"lo\" accept\n  ct state established,related accept\n",
    );
    for cidr in allow {
        rules.push_str(&format!("  {} daddr {cidr} accept\n", family(cidr)));
    }
    for cidr in block {
        rules.push_str(&format!("  {} daddr {cidr} drop\n", family(cidr)));
    }
    rules.push_str(" }\n}\n");
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run nft (apt-get install nftables; `cargo xtask test` does)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft refused the softnet rules ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Listens on a host 127.0.0.1 port and pipes each connection to `guest`:22, on threads that
/// end with the run process.
fn forward_ssh(guest: Ipv4Addr) -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let port = listener.local_addr()?.port();
    // SSH is chatty in small packets: the forwarder sets no Nagle delay on either leg.
    super::container::net::forward(listener, guest, 22);
    Ok(port)
}

/// Whether one of `watched` (blocked) is pending for this thread.
pub(crate) fn signal_pending(watched: &nix::sys::signal::SigSet) -> bool {
    let Ok(status) = fs::read_to_string("/proc/thread-self/status") else {
        return false;
    };
    let pending = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let mask = pending("SigPnd:") | pending("ShdPnd:");
    watched.iter().any(|s| mask & (1u64 << (s as i32 - 1)) != 0)
}

/// Stops the `run` process of VM `name` (SIGTERM, then SIGKILL after `timeout`), and waits
/// until its cleanup is done.
pub fn stop_vm(store: &Store, name: &str, timeout: Duration) -> Result<()> {
    let Some(state) = store.run_state(name) else {
        return Ok(());
    };
    let pid = nix::unistd::Pid::from_raw(state.pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let started = Instant::now();
    while alive(state.pid) {
        if started.elapsed() > timeout {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(200));
            let _ = Command::new("ip")
                .args(["netns", "del", &netns_name(state.lease)])
                .output();
            let _ = fs::remove_file(store.vm_dir(name).join("run.json"));
            let _ = fs::remove_file(Path::new(LEASE_DIR).join(state.lease.to_string()));
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

/// The guest leases held right now (to prove a test left none).
pub fn leases() -> Vec<u32> {
    fs::read_dir(LEASE_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}
