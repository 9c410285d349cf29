//! What a caller asks of a boot, and how a boot reports its progress.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::secret::EnvVars;
use crate::{Error, Result};

/// Where the sandbox may connect to. An enum, never a bool: every mode is named.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkPolicy {
    /// No route out: the sandbox has loopback only. The default.
    #[default]
    None,
    /// Only through the host's egress proxy, to the listed domains (`example.com` exactly, or
    /// `*.example.com` for its subdomains).
    Allow(Vec<String>),
    /// The host's own network, unfiltered. Unsafe: the agent can reach everything the host
    /// can, including services on the host's loopback.
    Host,
}

/// Caps on what the sandbox may use. `None` means no cap; a runtime that cannot enforce a cap
/// that is set must refuse to boot rather than ignore it.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Memory, in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU, in thousandths of a CPU (1500 = one and a half CPUs).
    pub cpu_millis: Option<u32>,
    /// Number of processes and threads.
    pub pids: Option<u32>,
    /// Size of the workdir, in bytes.
    pub disk_bytes: Option<u64>,
}

impl ResourceLimits {
    /// Caps memory at `bytes`.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }

    /// Caps CPU at `millis` thousandths of a CPU.
    pub fn cpu_millis(mut self, millis: u32) -> Self {
        self.cpu_millis = Some(millis);
        self
    }

    /// Caps processes and threads at `count`.
    pub fn pids(mut self, count: u32) -> Self {
        self.pids = Some(count);
        self
    }

    /// Caps the workdir at `bytes`.
    pub fn disk(mut self, bytes: u64) -> Self {
        self.disk_bytes = Some(bytes);
        self
    }

    /// Whether any cap is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What happens to the sandbox's workdir at shutdown.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WorkdirPolicy {
    /// Delete it (the default).
    #[default]
    Remove,
    /// Keep it on the host for inspection; the runtime reports where it is.
    Keep,
}

/// The named steps of a boot. Runtimes use the ones that apply to them.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BootPhase {
    /// Checking tools and versions on the host.
    Preflight,
    /// Preparing host-side files (session dir, harness, staged modules).
    Stage,
    /// Cloning a VM or container image.
    Clone,
    /// Starting the sandbox, VM or container.
    Start,
    /// Waiting for the guest's IP address.
    WaitIp,
    /// Waiting for SSH to accept a login.
    WaitSsh,
    /// Uploading the harness.
    Upload,
    /// Installing the harness's dependencies.
    Install,
    /// Running the project's runtime script in the sandbox before the harness starts.
    Script,
    /// Starting the harness process.
    Spawn,
    /// Opening the port-forward to the harness.
    Forward,
    /// Waiting for the harness to answer its health check.
    Health,
}

impl BootPhase {
    /// The phase's stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            BootPhase::Preflight => "preflight",
            BootPhase::Stage => "stage",
            BootPhase::Clone => "clone",
            BootPhase::Start => "start",
            BootPhase::WaitIp => "wait-ip",
            BootPhase::WaitSsh => "wait-ssh",
            BootPhase::Upload => "upload",
            BootPhase::Install => "install",
            BootPhase::Script => "script",
            BootPhase::Spawn => "spawn",
            BootPhase::Forward => "forward",
            BootPhase::Health => "health",
        }
    }
}

impl fmt::Display for BootPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One deadline per phase, with a default for phases not listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseDeadlines {
    default: Duration,
    per_phase: BTreeMap<BootPhase, Duration>,
}

impl Default for PhaseDeadlines {
    /// 60 s for every phase but `install` (10 min: `npm ci` of the agent SDK on a slow link).
    fn default() -> Self {
        let mut per_phase = BTreeMap::new();
        per_phase.insert(BootPhase::Install, Duration::from_secs(600));
        Self {
            default: Duration::from_secs(60),
            per_phase,
        }
    }
}

impl PhaseDeadlines {
    /// Every phase gets `default` unless set otherwise.
    pub fn uniform(default: Duration) -> Self {
        Self {
            default,
            per_phase: BTreeMap::new(),
        }
    }

    /// Sets the deadline of one phase.
    pub fn with(mut self, phase: BootPhase, deadline: Duration) -> Self {
        self.per_phase.insert(phase, deadline);
        self
    }

    /// The deadline of `phase`.
    pub fn get(&self, phase: BootPhase) -> Duration {
        self.per_phase.get(&phase).copied().unwrap_or(self.default)
    }
}

/// Boot progress, for a CLI to draw and a server to log.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootEvent {
    /// A phase began.
    PhaseStarted {
        /// Which.
        phase: BootPhase,
    },
    /// A phase ended.
    PhaseFinished {
        /// Which.
        phase: BootPhase,
        /// How long it took.
        elapsed: Duration,
        /// `None` on success, else what went wrong.
        error: Option<String>,
    },
    /// Something worth telling a person while a phase runs (e.g. "waiting for the socket").
    Note {
        /// The phase it happened in.
        phase: BootPhase,
        /// What happened.
        message: String,
    },
}

/// Where boot events go. Cheap to clone; the default drops every event.
#[derive(Clone, Default)]
pub struct ProgressSink(Option<Arc<dyn Fn(BootEvent) + Send + Sync>>);

impl ProgressSink {
    /// Sends every event to `f`.
    pub fn new(f: impl Fn(BootEvent) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    /// Drops every event.
    pub fn none() -> Self {
        Self(None)
    }

    /// Reports one event.
    pub fn emit(&self, event: BootEvent) {
        tracing::debug!(?event, "boot progress");
        if let Some(f) = &self.0 {
            f(event);
        }
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "ProgressSink(..)"
        } else {
            "ProgressSink(none)"
        })
    }
}

/// Everything a caller asks of one boot.
#[non_exhaustive]
#[derive(Debug, Clone, Default)]
pub struct BootSpec {
    /// A short human label, used in names and logs (not a secret, not unique).
    pub label: String,
    /// Environment for the engine inside the sandbox (API keys and the like; secrets redacted
    /// wherever shown).
    pub engine_envs: EnvVars,
    /// Where the sandbox may connect to.
    pub network: NetworkPolicy,
    /// Caps on resources.
    pub limits: ResourceLimits,
    /// What happens to the workdir at shutdown.
    pub workdir: WorkdirPolicy,
    /// How long each phase may take.
    pub deadlines: PhaseDeadlines,
    /// Where progress is reported.
    pub progress: ProgressSink,
    /// Where boundary events (egress decisions, …) are reported.
    pub audit: crate::audit::AuditSink,
    /// Whether credentials stay on the host (the default) or go into the sandbox.
    pub credentials: crate::credential::CredentialMode,
    /// Upstreams besides the model whose credentials the host fills in.
    pub brokered: Vec<crate::credential::BrokeredUpstream>,
}

impl BootSpec {
    /// A spec with defaults: no network, no caps, workdir removed, default deadlines.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            ..Self::default()
        }
    }

    /// Sets one engine environment variable (credential-like names are redacted).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.engine_envs.set(name, value);
        self
    }

    /// Sets the network policy.
    pub fn network(mut self, policy: NetworkPolicy) -> Self {
        self.network = policy;
        self
    }

    /// Sets the resource caps.
    pub fn limits(mut self, limits: ResourceLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the workdir policy.
    pub fn workdir(mut self, policy: WorkdirPolicy) -> Self {
        self.workdir = policy;
        self
    }

    /// Sets the phase deadlines.
    pub fn deadlines(mut self, deadlines: PhaseDeadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Sets where boundary events go.
    pub fn audit(mut self, sink: crate::audit::AuditSink) -> Self {
        self.audit = sink;
        self
    }

    /// Declares an upstream whose credential stays on the host (see
    /// [`crate::credential`]).
    pub fn broker(mut self, upstream: crate::credential::BrokeredUpstream) -> Self {
        self.brokered.push(upstream);
        self
    }

    /// Puts the engine's credentials into the sandbox as given instead of brokering them.
    /// Unsafe: anything the agent runs can read the real keys.
    pub fn unsafe_keys_in_sandbox(mut self) -> Self {
        self.credentials = crate::credential::CredentialMode::UnsafeKeysInSandbox;
        self
    }

    /// Sets where progress goes.
    pub fn progress(mut self, sink: ProgressSink) -> Self {
        self.progress = sink;
        self
    }

    /// Runs one boot phase: reports its start and end, and fails with
    /// [`Error::BootTimeout`] naming the phase and what it last saw when its deadline expires;
    /// any other failure comes back as [`Error::Phase`] naming the phase.
    pub async fn run_phase<T, F, Fut>(&self, phase: BootPhase, f: F) -> Result<T>
    where
        F: FnOnce(PhaseProbe) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = self.deadlines.get(phase);
        let probe = PhaseProbe {
            phase,
            last_seen: Arc::new(Mutex::new(String::from("nothing yet"))),
            progress: self.progress.clone(),
        };
        self.progress.emit(BootEvent::PhaseStarted { phase });
        let started = Instant::now();
        let outcome = match tokio::time::timeout(deadline, f(probe.clone())).await {
            Ok(result) => result.map_err(|e| e.in_phase(phase)),
            Err(_) => Err(Error::BootTimeout {
                phase,
                deadline,
                last_seen: probe.last_seen(),
            }),
        };
        self.progress.emit(BootEvent::PhaseFinished {
            phase,
            elapsed: started.elapsed(),
            error: outcome.as_ref().err().map(ToString::to_string),
        });
        outcome
    }
}

/// Handed to a running phase so it can record what it last observed (for the timeout message)
/// and tell the progress sink about notable steps.
#[derive(Clone)]
pub struct PhaseProbe {
    phase: BootPhase,
    last_seen: Arc<Mutex<String>>,
    progress: ProgressSink,
}

impl PhaseProbe {
    /// Records the latest observation (e.g. "connect: connection refused").
    pub fn saw(&self, what: impl Into<String>) {
        if let Ok(mut slot) = self.last_seen.lock() {
            *slot = what.into();
        }
    }

    /// The latest observation.
    pub fn last_seen(&self) -> String {
        self.last_seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| String::from("unknown"))
    }

    /// Tells the progress sink something a person may want to see.
    pub fn note(&self, message: impl Into<String>) {
        self.progress.emit(BootEvent::Note {
            phase: self.phase,
            message: message.into(),
        });
    }
}

impl fmt::Debug for PhaseProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhaseProbe")
            .field("phase", &self.phase)
            .field("last_seen", &self.last_seen())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_phase_past_its_deadline_names_itself_and_what_it_saw() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink_events = events.clone();
        let spec = BootSpec::new("t")
            .deadlines(PhaseDeadlines::uniform(Duration::from_millis(50)))
            .progress(ProgressSink::new(move |e| {
                sink_events.lock().unwrap().push(e)
            }));
        let err = spec
            .run_phase(BootPhase::Health, |probe| async move {
                probe.saw("connection refused");
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            .await
            .unwrap_err();
        match err {
            Error::BootTimeout {
                phase, last_seen, ..
            } => {
                assert_eq!(phase, BootPhase::Health);
                assert_eq!(last_seen, "connection refused");
            }
            other => panic!("unexpected {other:?}"),
        }
        let events = events.lock().unwrap();
        assert_eq!(
            events[0],
            BootEvent::PhaseStarted {
                phase: BootPhase::Health
            }
        );
        assert!(matches!(
            &events[1],
            BootEvent::PhaseFinished { phase: BootPhase::Health, error: Some(e), .. } if e.contains("health")
        ));
    }

    #[test]
    fn deadlines_fall_back_to_default() {
        let d = PhaseDeadlines::uniform(Duration::from_secs(3))
            .with(BootPhase::Install, Duration::from_secs(9));
        assert_eq!(d.get(BootPhase::Install), Duration::from_secs(9));
        assert_eq!(d.get(BootPhase::WaitSsh), Duration::from_secs(3));
    }

    #[test]
    fn spec_debug_redacts_engine_secrets() {
        let spec = BootSpec::new("x").env("ANTHROPIC_API_KEY", "sk-ant-secret");
        assert!(!format!("{spec:?}").contains("sk-ant-secret"));
    }
}
