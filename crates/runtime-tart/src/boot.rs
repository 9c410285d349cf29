//! A boot: clone, start, address, SSH, harness, forward, health — and the teardown that undoes
//! every step, also after a failure part-way.

use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use substrate_core::{
    AuditSink, BootPhase, BootSpec, BootedHarness, BoundaryEvent, Error, NetworkPolicy, Result,
    Secret, SubstrateKind, Teardown, TeardownReport, Terminal, TerminalRequest,
};
use substrate_ssh::guest::{self, GuestHarness, HostRunDir, HostServices};
use substrate_ssh::{HostKeyPolicy, SshSession, SshTarget};

use crate::TartSubstrate;
use crate::argv::{SharedDir, TartNet};
use substrate_ssh::host_cli::{self, Tool, owner_pid, process_alive};

/// `tart` on the host.
pub(crate) const TART: Tool = Tool {
    install_hint: "install Tart on a Mac with Apple Silicon (`brew install cirruslabs/cli/tart`); \
                   on Linux use the bwrap or lima runtime",
};

/// How long `tart stop` may take before the VM is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`TartSubstrate::reap_leftovers`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// The VMs stopped and deleted.
    pub vms: Vec<String>,
}

pub(crate) async fn boot(sub: &TartSubstrate, spec: BootSpec) -> Result<BootedHarness> {
    if let Err(e) = reap(sub).await {
        tracing::debug!(error = %e, "could not look for leftovers of crashed runs");
    }
    let token = Secret::random_token()?;
    let name = host_cli::vm_name(&sub.prefix, &spec.label)?;
    let mut vm = Vm::new(sub, &spec, name);
    let result = async {
        let (ssh, installed, extra_env) = vm.bring_up(sub, &spec).await?;
        let services = vm.services.as_ref().ok_or_else(missing_services)?;
        let harness = guest::start_harness(
            &ssh,
            &spec,
            &installed,
            &token,
            services.engine_envs(),
            &extra_env,
        )
        .await?;
        let terminals = substrate_ssh::terminal::GuestTerminals::new(
            ssh.clone(),
            installed,
            services.engine_envs(),
            &extra_env,
        );
        vm.ssh = Some(ssh);
        let endpoint = harness.endpoint();
        vm.harness = Some(harness);
        Ok((endpoint, terminals))
    }
    .await;
    match result {
        Ok((endpoint, terminals)) => {
            Ok(
                BootedHarness::new(SubstrateKind::Tart, endpoint, token, Box::new(vm))
                    .with_terminals(std::sync::Arc::new(terminals)),
            )
        }
        Err(e) => Err(vm.fail(sub, e).await),
    }
}

/// A program on a terminal in a fresh VM of its own: the boot up to the installed harness
/// and the forwards (so Claude Code's binary and the credential broker are there), then the
/// program on an SSH PTY instead of the harness.
pub(crate) async fn open_terminal(
    sub: &TartSubstrate,
    spec: BootSpec,
    request: TerminalRequest,
) -> Result<Terminal> {
    request.check()?;
    if let Err(e) = reap(sub).await {
        tracing::debug!(error = %e, "could not look for leftovers of crashed runs");
    }
    let name = host_cli::vm_name(&sub.prefix, &spec.label)?;
    let mut vm = Vm::new(sub, &spec, name);
    match vm.bring_up(sub, &spec).await {
        Ok((ssh, installed, extra_env)) => {
            let services = vm.services.as_ref().ok_or_else(missing_services)?;
            let engine_envs = services.engine_envs().clone();
            vm.ssh = Some(ssh.clone());
            substrate_ssh::terminal::open_terminal(
                &ssh,
                &installed,
                &engine_envs,
                &extra_env,
                request,
                Box::new(vm),
            )
            .await
        }
        Err(e) => Err(vm.fail(sub, e).await),
    }
}

/// Makes the VM's shared directories appear under [`LINUX_SHARES`](crate::LINUX_SHARES): a
/// Linux guest mounts Tart's virtiofs tag there (unless the image already does), as root
/// through `sudo -n`. Part of the `start` phase: the VM is not ready without its shares.
async fn mount_shares(ssh: &SshSession, spec: &BootSpec, dirs: &[SharedDir]) -> Result<()> {
    if dirs.is_empty() {
        return Ok(());
    }
    if let Some(bad) = dirs.iter().find(|d| !SharedDir::valid_name(&d.name)) {
        return Err(Error::invalid(
            "tart shared directory",
            format!(
                "`{}` is not a share name: use letters, digits, `-` and `_`",
                bad.name
            ),
        ));
    }
    let present = dirs
        .iter()
        .map(|d| format!("[ -d '{}' ]", d.guest_path().display()))
        .collect::<Vec<_>>()
        .join(" && ");
    let root = crate::LINUX_SHARES;
    let command = format!(
        "{present} || {{ sudo -n mkdir -p {root} && \
         sudo -n mount -t virtiofs com.apple.virtio-fs.automount {root} && {present}; }}"
    );
    spec.run_phase(BootPhase::Start, |probe| async move {
        probe.saw(format!("mounting the shared directories under {root}"));
        ssh.run_checked(&command, b"").await.map(drop)
    })
    .await
}

fn missing_services() -> Error {
    Error::invalid("boot", "the host services were not started")
}

/// One VM of one boot, and everything that has to go with it.
#[derive(Debug)]
struct Vm {
    tart: crate::Tart,
    name: String,
    audit: AuditSink,
    label: String,
    audit_snapshot: bool,
    cloned: bool,
    run: Option<tokio::process::Child>,
    ip: Option<String>,
    ssh: Option<SshSession>,
    harness: Option<GuestHarness>,
    services: Option<HostServices>,
    run_dir: Option<HostRunDir>,
    done: bool,
}

impl Vm {
    fn new(sub: &TartSubstrate, spec: &BootSpec, name: String) -> Self {
        Self {
            tart: sub.cli(),
            name,
            audit: spec.audit.clone(),
            label: spec.label.clone(),
            audit_snapshot: sub.audit_snapshot,
            cloned: false,
            run: None,
            ip: None,
            ssh: None,
            harness: None,
            services: None,
            run_dir: None,
            done: false,
        }
    }

    /// Stage (the host services), then clone, start, SSH, the installed harness and the
    /// forwards: what a harness boot and a terminal share.
    async fn bring_up(
        &mut self,
        sub: &TartSubstrate,
        spec: &BootSpec,
    ) -> Result<(SshSession, guest::Installed, Vec<(String, String)>)> {
        self.services = Some(
            spec.run_phase(BootPhase::Stage, |_| async {
                let run_dir = HostRunDir::create(&sub.state_dir, &self.name)?;
                let services = HostServices::start(spec, run_dir.path(), &sub.egress)?;
                self.run_dir = Some(run_dir);
                Ok(services)
            })
            .await?,
        );
        let ssh = self.start(sub, spec, &sub.image).await?;
        mount_shares(&ssh, spec, &sub.dirs).await?;
        let installed = guest::ensure_harness(&ssh, spec).await?;
        let services = self.services.as_ref().ok_or_else(missing_services)?;
        let extra_env = services.connect(&ssh).await?;
        Ok((ssh, installed, extra_env))
    }

    /// After a failed boot: keeps the VM when asked to, else tears everything down.
    async fn fail(&mut self, sub: &TartSubstrate, error: Error) -> Error {
        if sub.keep_on_failure && self.cloned {
            self.keep_for_debugging(&error);
        } else if let Err(cleanup) = self.shutdown().await {
            tracing::error!(error = %cleanup, "cleanup after a failed boot failed");
        }
        error
    }

    /// Clone, limits, start, address, SSH.
    async fn start(
        &mut self,
        sub: &TartSubstrate,
        spec: &BootSpec,
        image: &str,
    ) -> Result<SshSession> {
        let tart = &self.tart.clone();
        let name = &self.name.clone();
        // A failed clone may still leave a VM behind: teardown deletes it if it exists.
        self.cloned = true;
        spec.run_phase(BootPhase::Clone, |probe| async move {
            probe.saw(format!("cloning {image} to {name}"));
            TART.run(&tart.clone_vm(image, name)).await?;
            let cpus = spec.limits.cpu_millis.map(|m| m.div_ceil(1000).max(1));
            let memory = spec.limits.memory_bytes.map(|b| b.div_ceil(1 << 20));
            if cpus.is_some() || memory.is_some() {
                TART.run(&tart.set(name, cpus, memory)).await?;
            }
            Ok(())
        })
        .await?;
        let net = match spec.network {
            NetworkPolicy::Host => TartNet::Nat,
            _ => TartNet::SoftnetBlockAll,
        };
        let log = self
            .run_dir
            .as_ref()
            .map(|d| d.path().join("tart-run.log"))
            .ok_or_else(missing_services)?;
        let net = &net;
        let log = &log;
        let run = &mut self.run;
        spec.run_phase(BootPhase::Start, |_| async {
            let cmd = tart.run(name, &sub.dirs, net);
            let out = std::fs::File::create(log)
                .map_err(|e| Error::io(format!("create {}", log.display()), e))?;
            let err = out
                .try_clone()
                .map_err(|e| Error::io(format!("open {}", log.display()), e))?;
            let mut command = tokio::process::Command::from(cmd.to_command());
            command.stdin(Stdio::null()).stdout(out).stderr(err);
            *run = Some(command.spawn().map_err(|e| TART.spawn_error(&cmd, e))?);
            Ok(())
        })
        .await?;
        let ip = spec
            .run_phase(BootPhase::WaitIp, |probe| async move {
                loop {
                    let out = TART.output(&tart.ip(name, Duration::from_secs(1))).await?;
                    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                    if out.status.success() && text.parse::<std::net::IpAddr>().is_ok() {
                        return Ok(text);
                    }
                    probe.saw(format!("`tart ip` said: {text}"));
                    if let Some(status) = run.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                        return Err(Error::ProcessFailed {
                            command: tart.run(name, &sub.dirs, net).to_string(),
                            status: status.to_string(),
                            stderr: std::fs::read_to_string(log).unwrap_or_default(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await?;
        self.ip = Some(ip.clone());
        let policy = sub
            .host_keys
            .clone()
            .unwrap_or_else(|| HostKeyPolicy::TrustOnFirstUse {
                file: sub.state_dir.join("known_hosts"),
                name: format!("tart:{image}"),
            });
        let target = SshTarget::new(ip, 22, sub.user.clone(), sub.auth.clone(), policy);
        spec.run_phase(BootPhase::WaitSsh, |probe| async move {
            SshSession::connect_with_retry(&target, Some(&probe)).await
        })
        .await
    }

    fn keep_for_debugging(&mut self, error: &Error) {
        let ip = self.ip.clone().unwrap_or_else(|| "<no address yet>".into());
        tracing::warn!(
            vm = %self.name,
            %error,
            "boot failed; the VM is kept for debugging: `ssh admin@{ip}`, then `tart stop {0}` \
             and `tart delete {0}`",
            self.name
        );
        // `tart run` was spawned without kill-on-drop: letting go of it leaves the VM up.
        drop(self.run.take());
        self.done = true;
    }

    async fn stop_and_delete(&mut self) -> Result<()> {
        self.harness = None;
        if let Some(ssh) = self.ssh.take() {
            ssh.close().await;
        }
        self.services = None;
        if self.cloned {
            if self.run.is_some() {
                let _ = TART.output(&self.tart.stop(&self.name, STOP_TIMEOUT)).await;
            }
            if let Some(mut child) = self.run.take() {
                match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
                    Ok(_) => {}
                    Err(_) => {
                        let _ = child.kill().await;
                    }
                }
            }
            if self.audit_snapshot {
                let snapshot = format!("{}-audit", self.name);
                TART.run(&self.tart.clone_vm(&self.name, &snapshot)).await?;
                tracing::info!(vm = %self.name, %snapshot, "kept an audit snapshot");
            }
            let out = TART.output(&self.tart.delete(&self.name)).await?;
            if !out.status.success() && self.exists().await? {
                return Err(host_cli::failed(&self.tart.delete(&self.name), &out));
            }
            self.cloned = false;
        }
        if let Some(dir) = self.run_dir.take() {
            dir.remove()?;
        }
        Ok(())
    }

    async fn exists(&self) -> Result<bool> {
        let out = TART.run(&self.tart.list()).await?;
        Ok(crate::argv::parse_list(&out.stdout)?
            .iter()
            .any(|vm| vm.name == self.name))
    }
}

#[async_trait]
impl Teardown for Vm {
    async fn shutdown(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.stop_and_delete().await;
        self.audit.emit(BoundaryEvent::Teardown(TeardownReport::new(
            self.label.clone(),
            result.as_ref().err().map(ToString::to_string),
            started.elapsed(),
        )));
        result?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.done || !self.cloned {
            return;
        }
        // Best effort when `shutdown` never ran: stop and delete without waiting on tokio.
        let _ = self
            .tart
            .stop(&self.name, Duration::from_secs(5))
            .to_command()
            .output();
        let _ = self.tart.delete(&self.name).to_command().output();
    }
}

pub(crate) async fn prepare(
    sub: &TartSubstrate,
    base: &str,
    prepared: &str,
    spec: BootSpec,
) -> Result<()> {
    let listed = crate::argv::parse_list(&TART.run(&sub.cli().list()).await?.stdout)?;
    if listed.iter().any(|vm| vm.name == prepared) {
        return Err(Error::invalid(
            "prepared image name",
            format!("`{prepared}` exists already; delete it with `tart delete {prepared}` first"),
        ));
    }
    let name = host_cli::vm_name(&sub.prefix, "prepare")?;
    let mut vm = Vm::new(sub, &spec, name.clone());
    let result = async {
        vm.run_dir = Some(HostRunDir::create(&sub.state_dir, &name)?);
        let ssh = vm.start(sub, &spec, base).await?;
        guest::ensure_harness(&ssh, &spec).await?;
        if !guest::is_prepared(&ssh).await? {
            return Err(Error::invalid(
                "prepare",
                "the harness is not marked installed",
            ));
        }
        ssh.run_checked("sync", b"").await?;
        ssh.close().await;
        TART.output(&sub.cli().stop(&name, STOP_TIMEOUT)).await?;
        if let Some(mut child) = vm.run.take() {
            let _ = tokio::time::timeout(STOP_TIMEOUT, child.wait()).await;
        }
        TART.run(&sub.cli().clone_vm(&name, prepared)).await?;
        Ok(())
    }
    .await;
    let cleanup = vm.shutdown().await;
    result?;
    cleanup
}

pub(crate) async fn reap(sub: &TartSubstrate) -> Result<Reaped> {
    let out = TART.run(&sub.cli().list()).await?;
    let mut reaped = Reaped::default();
    for vm in crate::argv::parse_list(&out.stdout)? {
        let Some(pid) = owner_pid(&sub.prefix, &vm.name) else {
            continue;
        };
        if vm.name.ends_with("-audit") || process_alive(pid) {
            continue;
        }
        let _ = TART
            .output(&sub.cli().stop(&vm.name, Duration::from_secs(10)))
            .await;
        let _ = HostRunDir::remove_leftover(&sub.state_dir, &vm.name);
        if TART.run(&sub.cli().delete(&vm.name)).await.is_ok() {
            tracing::info!(vm = %vm.name, "deleted a VM left by a crashed run");
            reaped.vms.push(vm.name);
        }
    }
    Ok(reaped)
}
