//! A boot: create or clone, start, SSH port, SSH, runtime script, harness, forward, health —
//! and the teardown that deletes the instance, also after a failure part-way.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use substrate_core::{
    AuditSink, BootPhase, BootSpec, BootedHarness, BoundaryEvent, Error, Result, Secret,
    SubstrateKind, Teardown, TeardownReport, Terminal, TerminalRequest,
};
use substrate_ssh::guest::{self, GuestHarness, HostRunDir, HostServices};
use substrate_ssh::host_cli::{self, Tool, owner_pid, process_alive};
use substrate_ssh::{HostKeyPolicy, SshAuth, SshSession, SshTarget};

use crate::argv::{InstanceShape, parse_list};
use crate::{LimaBase, LimaSubstrate};

/// `limactl` on the host.
pub(crate) const LIMACTL: Tool = Tool {
    install_hint: "install Lima (https://lima-vm.io: `brew install lima` on macOS, the release \
                   tarball on Linux)",
};

/// What [`LimaSubstrate::reap_leftovers`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// The instances deleted.
    pub instances: Vec<String>,
}

pub(crate) async fn boot(sub: &LimaSubstrate, spec: BootSpec) -> Result<BootedHarness> {
    if let Err(e) = reap(sub).await {
        tracing::debug!(error = %e, "could not look for leftovers of crashed runs");
    }
    let token = Secret::random_token()?;
    let name = host_cli::vm_name(&sub.prefix, &spec.label)?;
    let mut vm = Instance::new(sub, &spec, name);
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
                BootedHarness::new(SubstrateKind::Lima, endpoint, token, Box::new(vm))
                    .with_terminals(std::sync::Arc::new(terminals)),
            )
        }
        Err(e) => Err(vm.fail(sub, e).await),
    }
}

/// A program on a terminal in a fresh instance of its own: the boot up to the installed
/// harness and the forwards, then the program on an SSH PTY instead of the harness.
pub(crate) async fn open_terminal(
    sub: &LimaSubstrate,
    spec: BootSpec,
    request: TerminalRequest,
) -> Result<Terminal> {
    request.check()?;
    if let Err(e) = reap(sub).await {
        tracing::debug!(error = %e, "could not look for leftovers of crashed runs");
    }
    let name = host_cli::vm_name(&sub.prefix, &spec.label)?;
    let mut vm = Instance::new(sub, &spec, name);
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

fn missing_services() -> Error {
    Error::invalid("boot", "the host services were not started")
}

/// One instance of one boot, and everything that has to go with it.
#[derive(Debug)]
struct Instance {
    lima: crate::Limactl,
    name: String,
    audit: AuditSink,
    label: String,
    created: bool,
    ssh: Option<SshSession>,
    harness: Option<GuestHarness>,
    services: Option<HostServices>,
    run_dir: Option<HostRunDir>,
    done: bool,
}

impl Instance {
    /// Stage (the host services), then create or clone, start, SSH, the runtime script, the
    /// installed harness and the forwards: what a harness boot and a terminal share.
    async fn bring_up(
        &mut self,
        sub: &LimaSubstrate,
        spec: &BootSpec,
    ) -> Result<(SshSession, guest::Installed, Vec<(String, String)>)> {
        self.services = Some(
            spec.run_phase(BootPhase::Stage, |_| async {
                let run_dir = HostRunDir::create(&sub.state_dir, &self.name)?;
                let services = HostServices::start(spec, run_dir.path(), &Default::default())?;
                self.run_dir = Some(run_dir);
                Ok(services)
            })
            .await?,
        );
        let shape = InstanceShape {
            cpus: spec.limits.cpu_millis.map(|m| m.div_ceil(1000).max(1)),
            memory_gib: spec
                .limits
                .memory_bytes
                .map(|b| b.div_ceil(1 << 20) as f64 / 1024.0),
            mounts: sub.mounts.clone(),
        };
        let ssh = self.start(sub, spec, &sub.base, &shape).await?;
        if let Some(script) = &sub.runtime_script {
            let cwd = sub
                .mounts
                .iter()
                .find(|m| m.writable)
                .map(|m| m.path.to_string_lossy().into_owned());
            guest::run_script(&ssh, spec, "runtime.sh", script, cwd.as_deref()).await?;
        }
        let installed = guest::ensure_harness(&ssh, spec).await?;
        let services = self.services.as_ref().ok_or_else(missing_services)?;
        let extra_env = services.connect(&ssh).await?;
        Ok((ssh, installed, extra_env))
    }

    /// After a failed boot: keeps the instance when asked to, else tears everything down.
    async fn fail(&mut self, sub: &LimaSubstrate, error: Error) -> Error {
        if sub.keep_on_failure && self.created {
            tracing::warn!(
                instance = %self.name,
                %error,
                "boot failed; the instance is kept for debugging: `limactl shell {0}`, \
                 then `limactl delete --force {0}`",
                self.name
            );
            self.done = true;
        } else if let Err(cleanup) = self.shutdown().await {
            tracing::error!(error = %cleanup, "cleanup after a failed boot failed");
        }
        error
    }

    fn new(sub: &LimaSubstrate, spec: &BootSpec, name: String) -> Self {
        Self {
            lima: sub.cli(),
            name,
            audit: spec.audit.clone(),
            label: spec.label.clone(),
            created: false,
            ssh: None,
            harness: None,
            services: None,
            run_dir: None,
            done: false,
        }
    }

    /// Create or clone, start, and log in.
    async fn start(
        &mut self,
        sub: &LimaSubstrate,
        spec: &BootSpec,
        base: &LimaBase,
        shape: &InstanceShape,
    ) -> Result<SshSession> {
        let lima = &self.lima.clone();
        let name = &self.name.clone();
        // A failed create may still leave an instance behind: teardown deletes it if so.
        self.created = true;
        spec.run_phase(BootPhase::Clone, |probe| async move {
            let cmd = match base {
                LimaBase::Clone(src) => {
                    probe.saw(format!("cloning {src} to {name}"));
                    lima.clone_instance(src, name, shape)
                }
                LimaBase::Template(template) => {
                    probe.saw(format!("creating {name} from {template}"));
                    lima.create(name, template, shape)
                }
            };
            LIMACTL.run(&cmd).await.map(drop)
        })
        .await?;
        let deadline = spec.deadlines.get(BootPhase::Start);
        spec.run_phase(BootPhase::Start, |_| async move {
            LIMACTL.run(&lima.start(name, deadline)).await.map(drop)
        })
        .await?;
        let (host, port) = spec
            .run_phase(BootPhase::WaitIp, |probe| async move {
                loop {
                    let out = LIMACTL.run(&lima.list(Some(name))).await?;
                    let listed = parse_list(&out.stdout)?;
                    match listed.iter().find(|i| &i.name == name) {
                        Some(i) if i.status == "Running" && i.ssh_local_port != 0 => {
                            let host = i
                                .ssh_address
                                .clone()
                                .filter(|a| !a.is_empty())
                                .unwrap_or_else(|| "127.0.0.1".into());
                            return Ok((host, i.ssh_local_port));
                        }
                        Some(i) => probe.saw(format!("status {}", i.status)),
                        None => probe.saw("not listed"),
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await?;
        let user = sub.user.clone().unwrap_or_else(default_user);
        let auth = match &sub.auth {
            Some(auth) => auth.clone(),
            None => {
                let home = self.lima.home().ok_or_else(|| {
                    Error::invalid("LIMA_HOME", "neither LIMA_HOME nor HOME is set")
                })?;
                vec![SshAuth::KeyFile {
                    path: home.join("_config/user"),
                    passphrase: None,
                }]
            }
        };
        // Each instance makes its own host key on first boot: the first one seen is pinned
        // for the rest of this boot.
        let known = self
            .run_dir
            .as_ref()
            .map(|d| d.path().join("known_hosts"))
            .ok_or_else(missing_services)?;
        let policy = HostKeyPolicy::TrustOnFirstUse {
            file: known,
            name: name.clone(),
        };
        let mut target = SshTarget::new(host, port, user, auth, policy);
        // cloud-init may add the login's key after sshd is up.
        target.retry_auth = matches!(base, LimaBase::Template(_));
        spec.run_phase(BootPhase::WaitSsh, |probe| async move {
            SshSession::connect_with_retry(&target, Some(&probe)).await
        })
        .await
    }

    async fn delete(&mut self) -> Result<()> {
        self.harness = None;
        if let Some(ssh) = self.ssh.take() {
            ssh.close().await;
        }
        self.services = None;
        if self.created {
            let cmd = self.lima.delete(&self.name);
            let out = LIMACTL.output(&cmd).await?;
            if !out.status.success() && self.exists().await? {
                return Err(host_cli::failed(&cmd, &out));
            }
            self.created = false;
        }
        if let Some(dir) = self.run_dir.take() {
            dir.remove()?;
        }
        Ok(())
    }

    async fn exists(&self) -> Result<bool> {
        let out = LIMACTL.run(&self.lima.list(None)).await?;
        Ok(parse_list(&out.stdout)?.iter().any(|i| i.name == self.name))
    }
}

/// Lima names the guest's user after the host's.
fn default_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "lima".into())
}

#[async_trait]
impl Teardown for Instance {
    async fn shutdown(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.delete().await;
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

impl Drop for Instance {
    fn drop(&mut self) {
        if self.done || !self.created {
            return;
        }
        // Best effort when `shutdown` never ran.
        let _ = self.lima.delete(&self.name).to_command().output();
    }
}

pub(crate) async fn build_base(
    sub: &LimaSubstrate,
    template: &str,
    name: &str,
    setup_script: Option<&[u8]>,
    spec: BootSpec,
) -> Result<()> {
    let listed = parse_list(&LIMACTL.run(&sub.cli().list(None)).await?.stdout)?;
    if listed.iter().any(|i| i.name == name) {
        return Err(Error::invalid(
            "base instance name",
            format!(
                "`{name}` exists already; delete it with `limactl delete --force {name}` first"
            ),
        ));
    }
    let mut vm = Instance::new(sub, &spec, name.to_owned());
    let result = async {
        vm.run_dir = Some(HostRunDir::create(
            &sub.state_dir,
            &host_cli::vm_name(&sub.prefix, "build")?,
        )?);
        let base = LimaBase::Template(template.to_owned());
        let ssh = vm
            .start(sub, &spec, &base, &InstanceShape::default())
            .await?;
        if let Some(script) = setup_script {
            guest::run_script(&ssh, &spec, "setup.sh", script, None).await?;
        }
        guest::ensure_harness(&ssh, &spec).await?;
        ssh.run_checked("sync", b"").await?;
        ssh.close().await;
        LIMACTL.run(&sub.cli().stop(name)).await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            // The instance is the base now: keep it.
            vm.created = false;
            vm.done = true;
            if let Some(dir) = vm.run_dir.take() {
                dir.remove()?;
            }
            Ok(())
        }
        Err(e) => {
            if let Err(cleanup) = vm.shutdown().await {
                tracing::error!(error = %cleanup, "cleanup after a failed build failed");
            }
            Err(e)
        }
    }
}

pub(crate) async fn reap(sub: &LimaSubstrate) -> Result<Reaped> {
    let out = LIMACTL.run(&sub.cli().list(None)).await?;
    let mut reaped = Reaped::default();
    for instance in parse_list(&out.stdout)? {
        let Some(pid) = owner_pid(&sub.prefix, &instance.name) else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        let _ = HostRunDir::remove_leftover(&sub.state_dir, &instance.name);
        if LIMACTL.run(&sub.cli().delete(&instance.name)).await.is_ok() {
            tracing::info!(instance = %instance.name, "deleted an instance left by a crashed run");
            reaped.instances.push(instance.name);
        }
    }
    Ok(reaped)
}
