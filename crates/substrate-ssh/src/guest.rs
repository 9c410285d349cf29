//! The harness inside a guest: the host services a VM reaches through SSH, the install (skipped
//! on a prepared image), the detached start, the forward and the health wait.
//!
//! Guest layout (under the login's home):
//!
//! - `.computeragent/harness/<bundle hash>/`: `harness.mjs`, `package.json`, the lockfile,
//!   `node_modules/`, and `.ready` once the install finished. A prepared image carries this
//!   directory, so a boot on it uploads and installs nothing.
//! - `.computeragent/run/harness.log`: the harness's output.
//! - `work/`: the session workdirs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use substrate_core::{
    BootPhase, BootSpec, Endpoint, EnvVars, Error, HarnessClient, NetworkPolicy, Result, Secret,
};
use substrate_egress::{
    BrokerConfig, BrokerPlan, CredentialBroker, EgressPolicy, EgressProxy, ProxyConfig,
};

use crate::session::{ForwardTarget, LocalForward, OutputStream, SshSession, tail};

/// The port the harness listens on, on the guest's own 127.0.0.1.
pub const HARNESS_GUEST_PORT: u16 = 7780;

/// The egress proxy's port on the guest's loopback (a remote forward to the host's proxy).
pub const EGRESS_GUEST_PORT: u16 = 3128;

/// The credential broker's port on the guest's loopback (a remote forward to the host's broker).
pub const BROKER_GUEST_PORT: u16 = 3129;

/// The default state directory of a VM runtime: `$XDG_STATE_HOME/computeragent/<runtime>`, or
/// `~/.local/state/computeragent/<runtime>`. Private to the user and kept across reboots,
/// because it holds the host keys recorded on first use.
pub fn default_state_dir(runtime: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("computeragent").join(runtime)
}

/// Lowest Node.js major version the harness runs on.
pub const MIN_NODE_MAJOR: u32 = 20;

/// The harness's directory in the guest, relative to the login's home.
pub fn harness_dir() -> String {
    format!(".computeragent/harness/{}", harness_bundle::bundle_hash())
}

/// What the egress proxy of a boot resolves with (tests pin names and servers).
#[derive(Debug, Clone, Default)]
pub struct EgressOptions {
    /// Names answered without DNS.
    pub hosts: std::collections::HashMap<String, Vec<std::net::IpAddr>>,
    /// Name servers instead of the host's resolv.conf.
    pub name_servers: Option<Vec<SocketAddr>>,
}

/// The host side of a VM boot's boundary services: the credential broker and, under `allow`,
/// the egress proxy, each on a Unix socket in the boot's host directory, reached from the
/// guest through SSH remote forwards. Stops with `Drop`.
#[derive(Debug)]
pub struct HostServices {
    broker: Option<CredentialBroker>,
    egress: Option<EgressProxy>,
    engine_envs: EnvVars,
}

impl HostServices {
    /// Starts what `spec` needs in `run_dir` (a directory only the caller reaches).
    pub fn start(spec: &BootSpec, run_dir: &Path, egress: &EgressOptions) -> Result<Self> {
        let plan = BrokerPlan::for_spec(spec, &format!("http://127.0.0.1:{BROKER_GUEST_PORT}"))?;
        let broker = match &plan {
            Some(plan) => {
                let path = run_dir.join("broker.sock");
                Some(
                    CredentialBroker::bind(&path, plan, BrokerConfig::new(spec.audit.clone()))
                        .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?,
                )
            }
            None => None,
        };
        let egress = match &spec.network {
            NetworkPolicy::Allow(rules) => {
                let mut config =
                    ProxyConfig::new(EgressPolicy::from_rules(rules)?, spec.audit.clone());
                config.hosts = egress.hosts.clone();
                config.name_servers = egress.name_servers.clone();
                let path = run_dir.join("egress.sock");
                Some(
                    EgressProxy::bind(&path, config)
                        .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?,
                )
            }
            _ => None,
        };
        let engine_envs = plan.map_or_else(|| spec.engine_envs.clone(), |p| p.engine_envs);
        Ok(Self {
            broker,
            egress,
            engine_envs,
        })
    }

    /// The engine's variables: the caller's, with brokered keys replaced by placeholders.
    pub fn engine_envs(&self) -> &EnvVars {
        &self.engine_envs
    }

    /// Opens the remote forwards on `ssh` and returns the variables that point the guest's
    /// clients at them.
    pub async fn connect(&self, ssh: &SshSession) -> Result<Vec<(String, String)>> {
        let mut env = Vec::new();
        if let Some(broker) = &self.broker {
            ssh.forward_remote(BROKER_GUEST_PORT, ForwardTarget::Unix(broker.path().into()))
                .await?;
        }
        if let Some(egress) = &self.egress {
            ssh.forward_remote(EGRESS_GUEST_PORT, ForwardTarget::Unix(egress.path().into()))
                .await?;
            let proxy = format!("http://127.0.0.1:{EGRESS_GUEST_PORT}");
            for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                env.push((name.to_owned(), proxy.clone()));
            }
            for name in ["NO_PROXY", "no_proxy"] {
                env.push((name.to_owned(), "localhost,127.0.0.1,::1".to_owned()));
            }
        }
        Ok(env)
    }
}

/// What the install step found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The login's home directory in the guest.
    pub home: String,
    /// Whether the image already carried the harness (nothing was uploaded or installed).
    pub prepared: bool,
}

/// Makes sure the harness of this build is in the guest: nothing to do on a prepared image;
/// otherwise checks Node, uploads the harness, `package.json` and the lockfile (phase
/// `upload`) and runs `npm ci` (phase `install`).
pub async fn ensure_harness(ssh: &SshSession, spec: &BootSpec) -> Result<Installed> {
    let dir = harness_dir();
    let out = ssh
        .run_checked(
            &format!(
                "mkdir -p .computeragent/run work; printf '%s\\n' \"$HOME\"; \
                 if [ -f {dir}/.ready ]; then echo prepared; \
                 else node --version 2>/dev/null || echo none; fi"
            ),
            b"",
        )
        .await?;
    let text = String::from_utf8_lossy(&out);
    let mut lines = text.lines();
    let home = lines.next().unwrap_or_default().trim().to_owned();
    let state = lines.next().unwrap_or_default().trim().to_owned();
    if !home.starts_with('/') {
        return Err(Error::invalid(
            "guest",
            format!("the login's $HOME is {home:?}, not an absolute path"),
        ));
    }
    if state == "prepared" {
        return Ok(Installed {
            home,
            prepared: true,
        });
    }
    check_node(&state)?;
    let dir = &dir;
    spec.run_phase(BootPhase::Upload, |probe| async move {
        ssh.run_checked(&format!("mkdir -p {dir}"), b"").await?;
        for (name, data) in [
            ("harness.mjs", harness_bundle::HARNESS_MJS),
            (
                "package.json",
                harness_bundle::SANDBOX_PACKAGE_JSON.as_bytes(),
            ),
            (
                "package-lock.json",
                harness_bundle::SANDBOX_PACKAGE_LOCK.as_bytes(),
            ),
        ] {
            probe.saw(format!("uploading {name}"));
            ssh.upload(&format!("{dir}/{name}"), data, 0o644).await?;
        }
        Ok(())
    })
    .await?;
    spec.run_phase(BootPhase::Install, |probe| async move {
        let mut last = String::new();
        let mut stderr = Vec::new();
        let status = ssh
            .exec_streaming(
                &format!(
                    "cd {dir} && npm ci --omit=dev --no-audit --no-fund --loglevel=error \
                     && touch .ready"
                ),
                b"",
                |stream, data| {
                    if stream == OutputStream::Stderr {
                        stderr.extend_from_slice(data);
                    }
                    if let Some(line) = String::from_utf8_lossy(data).lines().last() {
                        last = line.to_owned();
                        probe.saw(format!("npm: {last}"));
                    }
                },
            )
            .await?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::ProcessFailed {
                command: format!("ssh {} npm ci (in {dir})", ssh.target()),
                status: status.to_string(),
                stderr: tail(&stderr, 2000),
            })
        }
    })
    .await?;
    Ok(Installed {
        home,
        prepared: false,
    })
}

fn check_node(version: &str) -> Result<()> {
    let major = version
        .strip_prefix('v')
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= MIN_NODE_MAJOR => Ok(()),
        Some(_) => Err(Error::NotInstalled {
            tool: format!("Node.js {MIN_NODE_MAJOR}+ in the guest (found {version})"),
            hint: "install a newer Node.js in the base image, or build a prepared image".into(),
        }),
        None => Err(Error::NotInstalled {
            tool: format!("Node.js {MIN_NODE_MAJOR}+ in the guest"),
            hint: "the image has no `node` on PATH: install Node.js in the base image, or \
                   build a prepared image"
                .into(),
        }),
    }
}

/// A harness running in a guest, reached through a local forward.
#[derive(Debug)]
pub struct GuestHarness {
    /// Its pid in the guest.
    pub pid: u32,
    /// The host end of the forward.
    pub forward: LocalForward,
    /// Where its output goes in the guest.
    pub log: String,
}

impl GuestHarness {
    /// The endpoint to hand a [`HarnessClient`].
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Tcp(format!("http://{}", self.forward.addr()))
    }
}

/// Starts the harness detached in the guest (phase `spawn`), opens the forward (phase
/// `forward`) and waits for its health check (phase `health`), failing early with the
/// harness's log when it exits. Secrets travel in the detached start's stdin only.
pub async fn start_harness(
    ssh: &SshSession,
    spec: &BootSpec,
    installed: &Installed,
    token: &Secret,
    engine_envs: &EnvVars,
    extra_env: &[(String, String)],
) -> Result<GuestHarness> {
    let home = &installed.home;
    let dir = format!("{home}/{}", harness_dir());
    let log = format!("{home}/.computeragent/run/harness.log");
    let mut vars: BTreeMap<String, String> = engine_envs.expose_map();
    for (name, value) in extra_env {
        vars.insert(name.clone(), value.clone());
    }
    vars.insert("HARNESS_TOKEN".into(), token.expose().to_owned());
    vars.insert("PORT".into(), HARNESS_GUEST_PORT.to_string());
    vars.insert("HARNESS_WORKDIR_ROOT".into(), format!("{home}/work"));
    vars.insert("HARNESS_NODE_MODULES".into(), format!("{dir}/node_modules"));
    let secrets =
        serde_json::to_vec(&vars).map_err(|e| Error::invalid("engine envs", e.to_string()))?;
    let pid = spec
        .run_phase(BootPhase::Spawn, |_| async {
            // A clean environment: only what the harness needs, plus the JSON on fd 3.
            let command = format!(
                "env -i HOME=\"$HOME\" USER=\"$(id -un)\" PATH=\"$PATH\" LANG=C.UTF-8 \
                 HARNESS_ENV_FD=3 node {dir}/harness.mjs"
            );
            ssh.spawn_detached(&command, &log, &secrets).await
        })
        .await?;
    let forward = spec
        .run_phase(BootPhase::Forward, |_| async {
            ssh.forward_local(HARNESS_GUEST_PORT).await
        })
        .await?;
    let harness = GuestHarness {
        pid,
        forward,
        log: log.clone(),
    };
    let client = HarnessClient::new(harness.endpoint(), Some(token.clone()))?;
    let deadline = spec.deadlines.get(BootPhase::Health);
    let waited = spec
        .run_phase(BootPhase::Health, |probe| async move {
            tokio::select! {
                health = client.wait_healthy(deadline, Some(&probe)) => health.map(drop),
                dead = watch_exit(ssh, pid, &log) => Err(dead),
            }
        })
        .await;
    match waited {
        Ok(()) => Ok(harness),
        // A harness alive but silent: what it printed is the best clue.
        Err(Error::BootTimeout {
            phase,
            deadline,
            last_seen,
        }) => {
            let printed = ssh
                .run(&format!("tail -c 2000 {}", harness.log), b"")
                .await
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|e| format!("(cannot read it: {e})"));
            Err(Error::BootTimeout {
                phase,
                deadline,
                last_seen: format!("{last_seen}; the harness's output: {printed}"),
            })
        }
        Err(e) => Err(e),
    }
}

/// Resolves once the process `pid` in the guest is gone, with an error carrying its log.
async fn watch_exit(ssh: &SshSession, pid: u32, log: &str) -> Error {
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        match ssh.run(&format!("kill -0 {pid}"), b"").await {
            Ok(out) if out.status.success() => continue,
            Ok(_) => {
                let text = ssh
                    .run(&format!("tail -c 3000 {log}"), b"")
                    .await
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                return Error::ProcessFailed {
                    command: format!("the harness in {} (pid {pid})", ssh.target()),
                    status: "exited during boot".into(),
                    stderr: text,
                };
            }
            // The connection broke: the health wait will tell.
            Err(_) => std::future::pending::<()>().await,
        }
    }
}

/// Runs a shell script in the guest as the login (phase `script`): a project's runtime script
/// before the harness starts, or a setup script while an image is built. Its output goes to
/// the progress sink line by line; a non-zero exit fails the phase with the script's status
/// and the tail of its output. The script travels on stdin, never in a command line.
pub async fn run_script(
    ssh: &SshSession,
    spec: &BootSpec,
    name: &str,
    script: &[u8],
    cwd: Option<&str>,
) -> Result<()> {
    spec.run_phase(BootPhase::Script, |probe| async move {
        let path = format!(".computeragent/{name}");
        ssh.run_checked(
            &format!("mkdir -p .computeragent && cat > {path} && chmod 700 {path}"),
            script,
        )
        .await?;
        let cd = match cwd {
            Some(dir) => format!("cd {} && ", shell_escape::unix::escape(dir.into())),
            None => String::new(),
        };
        let mut output = Vec::new();
        let status = ssh
            .exec_streaming(
                &format!("{cd}sh \"$HOME/{path}\" </dev/null"),
                b"",
                |_, data| {
                    output.extend_from_slice(data);
                    for line in String::from_utf8_lossy(data).lines() {
                        probe.note(format!("{name}: {line}"));
                        probe.saw(format!("{name}: {line}"));
                    }
                },
            )
            .await?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::ProcessFailed {
                command: format!("{name} in {}", ssh.target()),
                status: status.to_string(),
                stderr: tail(&output, 2000),
            })
        }
    })
    .await
}

/// Whether the guest carries the installed harness of this build (what `prepare` leaves in an
/// image).
pub async fn is_prepared(ssh: &SshSession) -> Result<bool> {
    let out = ssh
        .run(&format!("test -f {}/.ready", harness_dir()), b"")
        .await?;
    Ok(out.status.success())
}

/// The longest socket path a boot binds, in bytes. `sun_path` holds 104 bytes on macOS and 108
/// on Linux, the terminating NUL included; a few bytes stay spare.
const MAX_SOCKET_PATH: usize = 100;

/// The longest socket name bound in a run directory (`egress.sock`).
const LONGEST_SOCKET_NAME: &str = "egress.sock";

/// A boot's private host directory (0700) for its sockets, removed with it.
///
/// It is `base/<name>`, unless a socket path there would not fit in `sun_path` (a deep home or
/// state directory): then the sockets live in a fresh private directory under the system's temp
/// directory and `base/<name>` is a symlink to it, so that [`HostRunDir::remove_leftover`] finds
/// both after a crash.
#[derive(Debug)]
pub struct HostRunDir {
    path: PathBuf,
    link: Option<PathBuf>,
}

impl HostRunDir {
    /// Creates the run directory of the boot `name`; `base` is created private (0700) when
    /// missing.
    pub fn create(base: &Path, name: &str) -> Result<Self> {
        private_dir(base, true)?;
        let path = base.join(name);
        if socket_fits(&path) {
            private_dir(&path, false)?;
            return Ok(Self { path, link: None });
        }
        let short = short_private_dir(&std::env::temp_dir())?;
        if let Err(e) = std::os::unix::fs::symlink(&short, &path) {
            let _ = std::fs::remove_dir_all(&short);
            return Err(Error::io(format!("link {}", path.display()), e));
        }
        tracing::debug!(dir = %short.display(), link = %path.display(),
            "sockets in a short private directory: the state directory is too deep for sun_path");
        Ok(Self {
            path: short,
            link: Some(path),
        })
    }

    /// Its path (where the sockets are).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes it now.
    pub fn remove(&self) -> Result<()> {
        remove_tree(&self.path)?;
        if let Some(link) = &self.link {
            remove_file(link)?;
        }
        Ok(())
    }

    /// Removes what a crashed boot `name` left in `base`: the directory, or the symlink and the
    /// short directory it points to.
    pub fn remove_leftover(base: &Path, name: &str) -> Result<()> {
        let path = base.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(&path) {
                    remove_tree(&target)?;
                }
                remove_file(&path)
            }
            Ok(_) => remove_tree(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("inspect {}", path.display()), e)),
        }
    }
}

impl Drop for HostRunDir {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

fn socket_fits(dir: &Path) -> bool {
    dir.join(LONGEST_SOCKET_NAME).as_os_str().len() <= MAX_SOCKET_PATH
}

fn private_dir(path: &Path, recursive: bool) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(recursive)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))
}

/// A new directory `computeragent-<random>` in `parent`, created exclusively (never an
/// existing one another user planted) and private.
fn short_private_dir(parent: &Path) -> Result<PathBuf> {
    let token = Secret::random_token()?;
    let suffix: String = token.expose().chars().take(12).collect();
    let path = parent.join(format!("computeragent-{suffix}"));
    private_dir(&path, false)?;
    if !socket_fits(&path) {
        let _ = std::fs::remove_dir(&path);
        return Err(Error::io(
            format!(
                "create a socket directory: even {} is too deep for a socket path; set TMPDIR to a shorter directory",
                path.display()
            ),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        ));
    }
    Ok(path)
}

fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deep_state_directory_puts_the_sockets_in_a_short_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = std::env::temp_dir().join(format!("ca-rundir-{}", std::process::id()));
        let shallow = tmp.join("s");
        let dir = HostRunDir::create(&shallow, "vm-1").unwrap();
        assert_eq!(dir.path(), shallow.join("vm-1"));
        drop(dir);
        assert!(!shallow.join("vm-1").exists());

        let deep = tmp.join("d".repeat(60)).join("state");
        let dir = HostRunDir::create(&deep, "computeragent-12345-project-0123abcd").unwrap();
        let short = dir.path().to_path_buf();
        assert!(socket_fits(&short), "{}", short.display());
        assert_ne!(short.parent(), Some(deep.as_path()));
        let mode = std::fs::metadata(&short).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let link = deep.join("computeragent-12345-project-0123abcd");
        assert_eq!(std::fs::read_link(&link).unwrap(), short);
        std::os::unix::net::UnixListener::bind(short.join(LONGEST_SOCKET_NAME)).unwrap();

        // A crash leaves both; the reaper's cleanup finds the short directory through the link.
        std::mem::forget(dir);
        HostRunDir::remove_leftover(&deep, "computeragent-12345-project-0123abcd").unwrap();
        assert!(!short.exists() && std::fs::symlink_metadata(&link).is_err());
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn node_versions_are_checked() {
        check_node("v20.1.0").unwrap();
        check_node("v22.0.0").unwrap();
        assert!(
            check_node("v18.19.0")
                .unwrap_err()
                .to_string()
                .contains("found v18")
        );
        assert!(
            check_node("none")
                .unwrap_err()
                .to_string()
                .contains("no `node`")
        );
    }
}
