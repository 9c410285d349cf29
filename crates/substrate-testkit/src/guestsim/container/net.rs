//! The "default" network: one bridge on the host with the gateway's address, a network
//! namespace per running container joined to it by a veth pair, address leases, and the
//! forwarders of published ports.

use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::store::PublishedPort;
use crate::guestsim::vm::{alive, getrandom_fill, run};

/// The bridge of the default network, in the host's namespace.
pub const BRIDGE: &str = "gsimbr0";
/// The default network's gateway: the bridge's address, the one host address a container
/// reaches.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 1);
/// The default network's subnet.
pub const SUBNET: &str = "10.214.0.0/24";
/// Where address leases live: global, as namespaces and addresses are.
const LEASE_DIR: &str = "/run/guest-sim/cleases";

/// The network namespace of lease `n`.
pub fn netns_name(n: u32) -> String {
    format!("csim{n}")
}

/// The host end of lease `n`'s veth pair (a port of the bridge).
pub fn host_link(n: u32) -> String {
    format!("gch{n}")
}

/// The container end of lease `n`'s veth pair.
fn guest_link(n: u32) -> String {
    format!("gcg{n}")
}

/// The container address of lease `n`.
pub fn address(n: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 214, 0, n as u8)
}

/// Creates the bridge with the gateway's address unless it exists; safe to race with other
/// processes doing the same.
pub fn ensure_bridge() -> Result<()> {
    fs::create_dir_all("/run/guest-sim").context("create /run/guest-sim (needs root)")?;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/guest-sim/cbridge.lock")?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("lock the bridge: {e}"))?;
    let exists = Command::new("ip")
        .args(["link", "show", "dev", BRIDGE])
        .output()
        .context("run ip (apt-get install iproute2)")?
        .status
        .success();
    if !exists {
        run(Command::new("ip").args(["link", "add", BRIDGE, "type", "bridge"]))?;
    }
    run(Command::new("ip").args(["addr", "replace", &format!("{GATEWAY}/24"), "dev", BRIDGE]))?;
    run(Command::new("ip").args(["link", "set", BRIDGE, "up"]))?;
    Ok(())
}

/// An address lease: `n` owns 10.214.0.n while its owner process lives.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) n: u32,
    path: PathBuf,
}

impl Lease {
    /// Takes a free lease, reclaiming those of dead owners.
    pub(crate) fn take() -> Result<Self> {
        fs::create_dir_all(LEASE_DIR).context("create the lease directory (needs root)")?;
        let mut b = [0u8; 1];
        let _ = getrandom_fill(&mut b);
        let start = u32::from(b[0]);
        for i in 0..253 {
            let n = 2 + (start + i) % 253;
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
                    let owner = fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<i32>().ok());
                    if owner.is_some_and(|pid| !alive(pid)) {
                        teardown(n);
                        let _ = fs::remove_file(&path);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        bail!("no free address on the default network ({SUBNET})")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Frees lease `n` if `pid` still owns it (after its owner died without doing so).
pub(crate) fn release(n: u32, pid: i32) {
    let path = Path::new(LEASE_DIR).join(n.to_string());
    let owner = fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok());
    if owner == Some(pid) {
        teardown(n);
        let _ = fs::remove_file(&path);
    }
}

/// The leases held right now, with their owners (to prove a test left none behind).
pub fn leases() -> Vec<(u32, i32)> {
    fs::read_dir(LEASE_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse().ok()?;
            let pid = fs::read_to_string(e.path()).ok()?.trim().parse().ok()?;
            Some((n, pid))
        })
        .collect()
}

/// Lease `n`'s namespace, joined to the bridge, with its address and a default route via the
/// gateway; IPv4 only, like the real network.
pub(crate) fn setup(n: u32) -> Result<()> {
    let (ns, host, guest) = (netns_name(n), host_link(n), guest_link(n));
    teardown(n);
    run(Command::new("ip").args(["netns", "add", &ns]))?;
    run(Command::new("ip").args(["link", "add", &host, "type", "veth", "peer", "name", &guest]))?;
    run(Command::new("ip").args(["link", "set", &host, "master", BRIDGE]))?;
    run(Command::new("ip").args(["link", "set", &host, "up"]))?;
    run(Command::new("ip").args(["link", "set", &guest, "netns", &ns]))?;
    let in_ns = |args: &[&str]| {
        run(Command::new("ip")
            .args(["netns", "exec", &ns, "ip"])
            .args(args))
    };
    in_ns(&["addr", "add", &format!("{}/24", address(n)), "dev", &guest])?;
    in_ns(&["link", "set", &guest, "up"])?;
    in_ns(&["link", "set", "lo", "up"])?;
    in_ns(&["route", "add", "default", "via", &GATEWAY.to_string()])?;
    run(Command::new("ip").args([
        "netns",
        "exec",
        &ns,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=1",
    ]))?;
    Ok(())
}

/// Removes lease `n`'s namespace and veth pair, whatever is left of them.
pub(crate) fn teardown(n: u32) {
    let _ = Command::new("ip")
        .args(["netns", "del", &netns_name(n)])
        .output();
    let _ = Command::new("ip")
        .args(["link", "del", &host_link(n)])
        .output();
}

/// Binds every published port on the host (before `run` reports success, so a taken port
/// fails the run).
pub(crate) fn bind(ports: &[PublishedPort]) -> Result<Vec<(TcpListener, u16)>> {
    ports
        .iter()
        .map(|p| {
            let addr = SocketAddr::new(p.host_address, p.host_port);
            TcpListener::bind(addr)
                .map(|l| (l, p.container_port))
                .map_err(|e| {
                    let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                        "address already in use".to_owned()
                    } else {
                        e.to_string()
                    };
                    anyhow::anyhow!(
                        "invalidArgument: \"cannot publish {addr} to container port {}: bind \
                         {addr}: {why}\"",
                        p.container_port
                    )
                })
        })
        .collect()
}

/// Carries each connection to `listener` to `guest:port`, a thread per direction, without
/// Nagle delays on either leg; the threads end with the daemon.
pub(crate) fn forward(listener: TcpListener, guest: Ipv4Addr, port: u16) {
    std::thread::spawn(move || {
        for inbound in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(outbound) = TcpStream::connect((guest, port)) else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (Ok(mut a_read), Ok(mut b_read)) = (inbound.try_clone(), outbound.try_clone())
                else {
                    return;
                };
                let (mut a_write, mut b_write) = (inbound, outbound);
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a_read, &mut b_write);
                    let _ = b_write.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut b_read, &mut a_write);
                let _ = a_write.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
}
