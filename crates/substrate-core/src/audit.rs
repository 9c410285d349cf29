//! Boundary events: what crossed (or tried to cross) a sandbox's boundary, as data, on one
//! stream per boot — so a CLI can print it, a server can log it and a test can assert on it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// One event at a sandbox's boundary.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundaryEvent {
    /// The egress proxy decided on a connection.
    Egress(EgressDecision),
    /// The credential broker handled (or refused) a request. Never holds a secret.
    Broker(BrokerRequest),
    /// A process the runtime started in the sandbox ended.
    ProcessExit(ProcessExit),
    /// A resource limit stopped something in the sandbox.
    LimitHit(LimitHit),
    /// The sandbox was torn down.
    Teardown(TeardownReport),
}

/// Why a process ended.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
    /// Its deadline expired; everything in the sandbox was killed.
    Deadline(Duration),
    /// It failed after the memory limit killed a process of the sandbox.
    OutOfMemory,
    /// It failed after the sandbox reached its process limit.
    PidsLimit,
}

impl ExitReason {
    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self == ExitReason::Exited(0)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Exited(code) => write!(f, "exited with code {code}"),
            ExitReason::Signaled(sig) => write!(f, "killed by signal {sig}"),
            ExitReason::Deadline(d) => write!(f, "killed at its deadline of {d:?}"),
            ExitReason::OutOfMemory => {
                f.write_str("failed: out of memory (the memory limit killed a process)")
            }
            ExitReason::PidsLimit => f.write_str("failed: the process limit was reached"),
        }
    }
}

/// One process's end.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessExit {
    /// What it was (the command as a shell would show it, or `harness`).
    pub command: String,
    /// Why it ended.
    pub reason: ExitReason,
    /// How long it ran.
    pub duration: Duration,
}

impl ProcessExit {
    /// `command` ended for `reason` after `duration`.
    pub fn new(command: impl Into<String>, reason: ExitReason, duration: Duration) -> Self {
        Self {
            command: command.into(),
            reason,
            duration,
        }
    }
}

/// Which limit.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The memory limit killed processes (the cgroup's OOM kills).
    Memory,
    /// Forks were refused at the process limit.
    Pids,
}

/// A limit that stopped something, with how often over the sandbox's life.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitHit {
    /// Which limit.
    pub limit: Limit,
    /// OOM kills, or refused forks.
    pub count: u64,
}

impl LimitHit {
    /// `limit` was hit `count` times.
    pub fn new(limit: Limit, count: u64) -> Self {
        Self { limit, count }
    }
}

/// A sandbox's end.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeardownReport {
    /// The boot's label.
    pub label: String,
    /// What could not be removed, if anything.
    pub error: Option<String>,
    /// How long the teardown took.
    pub duration: Duration,
}

impl TeardownReport {
    /// The teardown of `label`.
    pub fn new(label: impl Into<String>, error: Option<String>, duration: Duration) -> Self {
        Self {
            label: label.into(),
            error,
            duration,
        }
    }
}

/// One request through the credential broker.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRequest {
    /// The brokered upstream's name (`anthropic`, `github`), or the path asked for when it
    /// named none.
    pub upstream: String,
    /// The HTTP method.
    pub method: String,
    /// The path below the upstream's base URL (without the query, which may hold secrets).
    pub path: String,
    /// Whether the request was forwarded.
    pub allowed: bool,
    /// The status returned to the sandbox.
    pub status: u16,
    /// Why it was refused or failed.
    pub reason: Option<String>,
    /// Request body bytes forwarded.
    pub bytes_up: u64,
    /// Response body bytes returned.
    pub bytes_down: u64,
    /// Until the response's first byte reached the broker (the upstream's time to answer).
    pub first_byte: Duration,
    /// Until the response ended.
    pub duration: Duration,
}

impl BrokerRequest {
    /// A request to `upstream` by `method` for `path`, before anything happened.
    pub fn new(
        upstream: impl Into<String>,
        method: impl Into<String>,
        path: impl Into<String>,
    ) -> Self {
        Self {
            upstream: upstream.into(),
            method: method.into(),
            path: path.into(),
            allowed: false,
            status: 0,
            reason: None,
            bytes_up: 0,
            bytes_down: 0,
            first_byte: Duration::ZERO,
            duration: Duration::ZERO,
        }
    }
}

/// The egress proxy's decision on one connection, and what went through it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressDecision {
    /// Whether the connection was let through.
    pub allowed: bool,
    /// The host asked for (a name or an IP literal).
    pub host: String,
    /// The port asked for.
    pub port: u16,
    /// `CONNECT` (tunnel) or the method of a plain-HTTP request.
    pub method: String,
    /// The rule that allowed it.
    pub rule: Option<String>,
    /// Why it was denied, or why an allowed connection failed.
    pub reason: Option<String>,
    /// The address connected to.
    pub address: Option<String>,
    /// Bytes from the sandbox to the upstream.
    pub bytes_up: u64,
    /// Bytes from the upstream to the sandbox.
    pub bytes_down: u64,
    /// How long the connection lasted.
    pub duration: Duration,
}

impl EgressDecision {
    /// A decision about `host:port` by `method`, before anything went through.
    pub fn new(
        allowed: bool,
        host: impl Into<String>,
        port: u16,
        method: impl Into<String>,
    ) -> Self {
        Self {
            allowed,
            host: host.into(),
            port,
            method: method.into(),
            rule: None,
            reason: None,
            address: None,
            bytes_up: 0,
            bytes_down: 0,
            duration: Duration::ZERO,
        }
    }
}

/// Where boundary events go. Cheap to clone; the default logs them at debug level only.
#[derive(Clone, Default)]
pub struct AuditSink(Option<Arc<dyn Fn(BoundaryEvent) + Send + Sync>>);

impl AuditSink {
    /// Sends every event to `f`.
    pub fn new(f: impl Fn(BoundaryEvent) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    /// Reports one event.
    pub fn emit(&self, event: BoundaryEvent) {
        tracing::debug!(?event, "boundary event");
        if let Some(f) = &self.0 {
            f(event);
        }
    }
}

impl fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "AuditSink(..)"
        } else {
            "AuditSink(none)"
        })
    }
}
