//! A boot: service and image checks, the host's credential broker on the network's gateway,
//! `container run` with the secrets in a 0600 env file that is gone once the CLI read it, the
//! health wait — and the teardown that stops and deletes the container on every path.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use substrate_core::{
    AuditSink, BootPhase, BootSpec, BootedHarness, BoundaryEvent, Endpoint, EnvVars, Error,
    HarnessClient, Result, Secret, SubstrateKind, Teardown, TeardownReport, Terminal,
    TerminalRequest,
};
use substrate_egress::{BrokerConfig, BrokerPlan, CredentialBroker};
use substrate_ssh::guest::HostRunDir;
use substrate_ssh::host_cli::{self, Tool, owner_pid, process_alive};

use crate::AppleContainerSubstrate;
use crate::argv::{Container, Publish, RunArgs, parse_containers, parse_gateway};
use crate::image::HARNESS_PORT;
use crate::relay::TcpRelay;
use crate::terminal::ContainerTerminals;

/// `container` on the host.
pub(crate) const CONTAINER: Tool = Tool {
    install_hint: "install Apple's `container` on macOS 26 or later \
                   (https://github.com/apple/container/releases), then `container system start`",
};

/// How long `container stop` waits before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The network every container joins (the service's NAT network).
const NETWORK: &str = "default";

/// What [`AppleContainerSubstrate::reap_leftovers`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// The containers deleted.
    pub containers: Vec<String>,
}

pub(crate) async fn boot(sub: &AppleContainerSubstrate, spec: BootSpec) -> Result<BootedHarness> {
    boot_with_terminals(sub, spec)
        .await
        .map(|(harness, _)| harness)
}

/// A program on a terminal in a container of its own: the boot, then the program beside the
/// harness; closing the terminal removes the container.
pub(crate) async fn open_terminal(
    sub: &AppleContainerSubstrate,
    spec: BootSpec,
    request: TerminalRequest,
) -> Result<Terminal> {
    request.check()?;
    let (harness, terminals) = boot_with_terminals(sub, spec).await?;
    terminals.open(request, Some(harness)).await
}

/// A boot, and what opens terminals in its container.
async fn boot_with_terminals(
    sub: &AppleContainerSubstrate,
    spec: BootSpec,
) -> Result<(BootedHarness, Arc<ContainerTerminals>)> {
    let cli = sub.cli();
    spec.run_phase(BootPhase::Preflight, |probe| async move {
        probe.saw("`container system status`");
        check_service(&cli).await?;
        probe.saw(format!("`container image inspect {}`", sub.image));
        check_image(&cli, &sub.image).await
    })
    .await?;
    if let Err(e) = reap(sub).await {
        tracing::debug!(error = %e, "could not look for leftovers of crashed runs");
    }
    let token = Secret::random_token()?;
    let name = host_cli::vm_name(&sub.prefix, &spec.label)?;
    let mut ctr = Ctr::new(sub, &spec, name);
    match ctr.start(sub, &spec, &token).await {
        Ok((endpoint, engine_envs)) => {
            let env_dir = ctr
                .run_dir
                .as_ref()
                .map(|d| d.path().to_path_buf())
                .ok_or_else(|| Error::invalid("container boot", "no run directory"));
            let env_dir = match env_dir {
                Ok(dir) => dir,
                Err(e) => {
                    let _ = ctr.shutdown().await;
                    return Err(e);
                }
            };
            let terminals = Arc::new(ContainerTerminals {
                cli: sub.cli(),
                name: ctr.name.clone(),
                env_dir,
                engine_envs,
            });
            let harness = BootedHarness::new(
                SubstrateKind::AppleContainer,
                endpoint,
                token,
                Box::new(ctr),
            )
            .with_terminals(terminals.clone());
            Ok((harness, terminals))
        }
        Err(e) => {
            if let Err(cleanup) = ctr.shutdown().await {
                tracing::error!(error = %cleanup, "cleanup after a failed boot failed");
            }
            Err(e)
        }
    }
}

async fn check_service(cli: &Container) -> Result<()> {
    let out = CONTAINER.output(&cli.system_status()).await?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .trim()
    .to_owned();
    Err(Error::NotInstalled {
        tool: format!("{} (its service)", cli.program().display()),
        hint: format!(
            "the container service is not running ({said}); start it with `{}`",
            cli.system_start()
        ),
    })
}

async fn check_image(cli: &Container, image: &str) -> Result<()> {
    let out = CONTAINER.output(&cli.image_inspect(image)).await?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::InvalidInput {
        what: format!("image `{image}`"),
        reason: format!(
            "it is not in the container service's image store: build the harness image with \
             `cargo xtask image`, or fetch it with `{}`",
            cli.image_pull(image)
        ),
    })
}

/// The host side of the credential broker: the broker on a Unix socket in the boot's run
/// directory, and a TCP relay to it on the network's gateway, the one host address a
/// container reaches.
#[derive(Debug)]
struct HostBroker {
    _relay: TcpRelay,
    _broker: CredentialBroker,
}

/// One container of one boot, and everything that has to go with it.
#[derive(Debug)]
struct Ctr {
    cli: Container,
    name: String,
    audit: AuditSink,
    label: String,
    /// `container run` was attempted: teardown must look for the container.
    ran: bool,
    run_dir: Option<HostRunDir>,
    env_file: Option<PathBuf>,
    broker: Option<HostBroker>,
    done: bool,
}

impl Ctr {
    fn new(sub: &AppleContainerSubstrate, spec: &BootSpec, name: String) -> Self {
        Self {
            cli: sub.cli(),
            name,
            audit: spec.audit.clone(),
            label: spec.label.clone(),
            ran: false,
            run_dir: None,
            env_file: None,
            broker: None,
            done: false,
        }
    }

    async fn start(
        &mut self,
        sub: &AppleContainerSubstrate,
        spec: &BootSpec,
        token: &Secret,
    ) -> Result<(Endpoint, EnvVars)> {
        let cli = self.cli.clone();
        let name = self.name.clone();
        let (cli_ref, name_ref) = (&cli, &name);
        let (run_dir, broker, engine_envs) = spec
            .run_phase(BootPhase::Stage, move |probe| async move {
                let run_dir = HostRunDir::create(&sub.state_dir, name_ref)?;
                let (broker, envs) = start_broker(cli_ref, spec, run_dir.path(), &probe).await?;
                Ok((run_dir, broker, envs))
            })
            .await?;
        let env_file = run_dir.path().join("harness.env");
        self.run_dir = Some(run_dir);
        self.broker = broker;
        write_env_file(&env_file, token, &engine_envs)?;
        self.env_file = Some(env_file.clone());

        let env_file_ref = &env_file;
        self.ran = true;
        let host_port = spec
            .run_phase(BootPhase::Start, move |probe| async move {
                // A port picked free may be taken before `container run` binds it: pick again.
                let attempts = if sub.host_port.is_some() { 1 } else { 3 };
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let port = match sub.host_port {
                        Some(port) => port,
                        None => free_loopback_port()?,
                    };
                    let run = run_args(sub, spec, name_ref, env_file_ref, port);
                    probe.saw(format!(
                        "`container run` of {} on 127.0.0.1:{port}",
                        sub.image
                    ));
                    match CONTAINER.run(&cli_ref.run(&run)).await {
                        Ok(_) => return Ok(port),
                        Err(e) if port_taken(&e) => {
                            // A container the service created before the publish failed.
                            let _ = CONTAINER.output(&cli_ref.delete(name_ref)).await;
                            if attempt >= attempts {
                                return Err(Error::InvalidInput {
                                    what: format!("host port {port}"),
                                    reason: format!(
                                        "127.0.0.1:{port} is taken by another process; choose \
                                         another port or let the runtime pick one ({e})"
                                    ),
                                });
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            })
            .await;
        // The CLI has read the file (or failed): the secrets leave the host's disk.
        self.remove_env_file();
        let host_port = host_port?;

        let endpoint = Endpoint::Tcp(format!("http://127.0.0.1:{host_port}"));
        let client = HarnessClient::new(endpoint.clone(), Some(token.clone()))?;
        let deadline = spec.deadlines.get(BootPhase::Health);
        let waited = spec
            .run_phase(BootPhase::Health, |probe| async move {
                tokio::select! {
                    health = client.wait_healthy(deadline, Some(&probe)) => health.map(drop),
                    dead = watch_exit(&cli, &name) => Err(dead),
                }
            })
            .await;
        match waited {
            Ok(()) => Ok((endpoint, engine_envs)),
            // Alive but silent: what the harness printed is the best clue.
            Err(Error::BootTimeout {
                phase,
                deadline,
                last_seen,
            }) => Err(Error::BootTimeout {
                phase,
                deadline,
                last_seen: format!(
                    "{last_seen}; the harness's output: {}",
                    logs(&self.cli, &self.name).await
                ),
            }),
            Err(e) => Err(e),
        }
    }

    fn remove_env_file(&mut self) {
        if let Some(file) = self.env_file.take()
            && let Err(e) = std::fs::remove_file(&file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(file = %file.display(), error = %e, "could not remove the env file");
            self.env_file = Some(file);
        }
    }

    async fn stop_and_delete(&mut self) -> Result<()> {
        self.remove_env_file();
        if self.ran {
            let _ = CONTAINER
                .output(&self.cli.stop(&self.name, STOP_GRACE))
                .await;
            let out = CONTAINER.output(&self.cli.delete(&self.name)).await?;
            if !out.status.success() && self.exists().await? {
                return Err(host_cli::failed(&self.cli.delete(&self.name), &out));
            }
            self.ran = false;
        }
        self.broker = None;
        if let Some(dir) = self.run_dir.take() {
            dir.remove()?;
        }
        if let Some(file) = &self.env_file {
            return Err(Error::invalid(
                "teardown",
                format!("the env file {} could not be removed", file.display()),
            ));
        }
        Ok(())
    }

    async fn exists(&self) -> Result<bool> {
        Ok(CONTAINER
            .output(&self.cli.inspect(&self.name))
            .await?
            .status
            .success())
    }
}

#[async_trait]
impl Teardown for Ctr {
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

impl Drop for Ctr {
    fn drop(&mut self) {
        if let Some(file) = self.env_file.take() {
            let _ = std::fs::remove_file(file);
        }
        if self.done || !self.ran {
            return;
        }
        // Best effort when `shutdown` never ran: delete without waiting on tokio.
        let _ = self.cli.delete(&self.name).to_command().output();
    }
}

/// Starts the broker when `spec` brokers anything; returns it and the engine's variables
/// (placeholders instead of keys, base URLs pointing at the relay).
async fn start_broker(
    cli: &Container,
    spec: &BootSpec,
    run_dir: &Path,
    probe: &substrate_core::PhaseProbe,
) -> Result<(Option<HostBroker>, EnvVars)> {
    if BrokerPlan::for_spec(spec, "http://127.0.0.1")?.is_none() {
        return Ok((None, spec.engine_envs.clone()));
    }
    probe.saw(format!("`container network inspect {NETWORK}`"));
    let gateway = gateway(cli).await?;
    let listener = tokio::net::TcpListener::bind((gateway, 0))
        .await
        .map_err(|e| {
            Error::io(
                format!("listen on the container network's gateway {gateway} for the broker"),
                e,
            )
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("read the broker relay's address", e))?
        .port();
    let plan = BrokerPlan::for_spec(spec, &format!("http://{gateway}:{port}"))?
        .ok_or_else(|| Error::invalid("credential broker", "nothing left to broker"))?;
    let path = run_dir.join("broker.sock");
    let broker = CredentialBroker::bind(&path, &plan, BrokerConfig::new(spec.audit.clone()))
        .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
    let relay = TcpRelay::start(listener, path);
    Ok((
        Some(HostBroker {
            _relay: relay,
            _broker: broker,
        }),
        plan.engine_envs,
    ))
}

async fn gateway(cli: &Container) -> Result<Ipv4Addr> {
    let out = CONTAINER.run(&cli.network_inspect(NETWORK)).await?;
    parse_gateway(&out.stdout)
}

/// Writes the harness's secrets as a `KEY=VALUE` file only the owner reads, created fresh
/// (never an existing file someone else planted).
fn write_env_file(path: &Path, token: &Secret, engine_envs: &EnvVars) -> Result<()> {
    let mut text = String::new();
    let mut line = |key: &str, value: &str| -> Result<()> {
        if value.contains(['\n', '\r', '\0']) {
            return Err(Error::invalid(
                format!("engine variable `{key}`"),
                "an env file cannot carry a value with a line break or NUL; pass it as a file \
                 in the session instead",
            ));
        }
        text.push_str(&format!("{key}={value}\n"));
        Ok(())
    };
    for (key, value) in engine_envs.expose_map() {
        if key.starts_with("HARNESS_") {
            return Err(Error::invalid(
                format!("engine variable `{key}`"),
                "`HARNESS_*` names are the harness's own",
            ));
        }
        line(&key, &value)?;
    }
    line("HARNESS_TOKEN", token.expose())?;
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(format!("create {}", path.display()), e))?
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

fn run_args(
    sub: &AppleContainerSubstrate,
    spec: &BootSpec,
    name: &str,
    env_file: &Path,
    port: u16,
) -> RunArgs {
    RunArgs {
        name: name.to_owned(),
        image: sub.image.clone(),
        cpus: spec.limits.cpu_millis.map(|m| m.div_ceil(1000).max(1)),
        memory_mib: spec.limits.memory_bytes.map(|b| b.div_ceil(1 << 20)),
        env_file: Some(env_file.to_owned()),
        volumes: sub.volumes.clone(),
        read_only: sub.read_only_root,
        tmpfs: if sub.read_only_root {
            vec!["/tmp".into(), crate::ImageRecipe::for_this_build().home]
        } else {
            Vec::new()
        },
        publish: vec![Publish::loopback(port, HARNESS_PORT)],
        labels: vec![("computeragent.label".into(), spec.label.clone())],
        ..RunArgs::default()
    }
}

/// Whether `container run` failed because the host port was taken.
fn port_taken(error: &Error) -> bool {
    matches!(error, Error::ProcessFailed { stderr, .. }
        if stderr.to_ascii_lowercase().contains("address already in use"))
}

/// A port on 127.0.0.1 that is free now. Another process may take it before `container run`
/// binds it; the run then fails and says so.
fn free_loopback_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("find a free port on 127.0.0.1", e))?;
    Ok(listener
        .local_addr()
        .map_err(|e| Error::io("find a free port on 127.0.0.1", e))?
        .port())
}

/// Resolves once container `name` no longer runs, with an error carrying its output.
async fn watch_exit(cli: &Container, name: &str) -> Error {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(out) = CONTAINER.output(&cli.inspect(name)).await else {
            continue;
        };
        let running = out.status.success()
            && parse_containers(&out.stdout)
                .ok()
                .and_then(|list| list.into_iter().next())
                .is_some_and(|c| c.running());
        if !running {
            return Error::ProcessFailed {
                command: format!("the harness in container {name}"),
                status: "exited during boot".into(),
                stderr: logs(cli, name).await,
            };
        }
    }
}

/// The tail of a container's output, or why it cannot be read.
async fn logs(cli: &Container, name: &str) -> String {
    match CONTAINER.run(&cli.logs(name)).await {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let start = text.len().saturating_sub(3000);
            let start = (start..=text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            text[start..].trim().to_owned()
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}

pub(crate) async fn reap(sub: &AppleContainerSubstrate) -> Result<Reaped> {
    let cli = sub.cli();
    let out = CONTAINER.run(&cli.list()).await?;
    let mut reaped = Reaped::default();
    for info in parse_containers(&out.stdout)? {
        let id = info.configuration.id;
        let Some(pid) = owner_pid(&sub.prefix, &id) else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        let _ = HostRunDir::remove_leftover(&sub.state_dir, &id);
        if CONTAINER.run(&cli.delete(&id)).await.is_ok() {
            tracing::info!(container = %id, "deleted a container left by a crashed run");
            reaped.containers.push(id);
        }
    }
    Ok(reaped)
}
