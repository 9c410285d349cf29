//! The server's configuration (TOML): where it listens, how many runs at once, the bearer
//! tokens, and per-group runtime, limits, network policy and env allow-list — so sensitive
//! groups can run in VMs and others in bwrap.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use substrate_core::{Error, NetworkPolicy, ResourceLimits, Result};

use crate::runtime::RuntimeName;

/// The group a request without one belongs to.
pub const DEFAULT_GROUP: &str = "default";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    bind: Option<SocketAddr>,
    max_concurrent_runs: Option<usize>,
    max_sandboxes: Option<usize>,
    max_body_bytes: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    engine_env: BTreeMap<String, String>,
    #[serde(default)]
    groups: BTreeMap<String, RawGroup>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    runtime: Option<String>,
    network: Option<String>,
    memory: Option<String>,
    cpus: Option<String>,
    #[serde(default)]
    env_allow: Vec<String>,
    idle_ttl_secs: Option<u64>,
    ttl_secs: Option<u64>,
}

/// What the server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where it listens (default 127.0.0.1:8080).
    pub bind: SocketAddr,
    /// Runs (and warm-sandbox boots) at once; more are answered 429 (default 4).
    pub max_concurrent_runs: usize,
    /// Warm sandboxes alive at once (default 8).
    pub max_sandboxes: usize,
    /// The largest request body (default 16 MiB).
    pub max_body_bytes: usize,
    /// How long shutdown lets runs finish before it cancels them (default 30 s).
    pub shutdown_grace: Duration,
    /// Bearer tokens; none configured means one is generated at start.
    pub tokens: Vec<String>,
    /// Engine variables every run gets (the model key among them: brokered, it stays on the
    /// host).
    pub engine_env: BTreeMap<String, String>,
    /// The groups, by name; `default` always exists.
    pub groups: BTreeMap<String, Group>,
}

/// One group's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Its runtime (`None`: the best isolating one on this host).
    pub runtime: Option<RuntimeName>,
    /// Its network policy (default `none`).
    pub network: NetworkPolicy,
    /// Its limits.
    pub limits: ResourceLimits,
    /// Engine variables a request may set.
    pub env_allow: BTreeSet<String>,
    /// A warm sandbox idle this long is disposed of (default 10 min).
    pub idle_ttl: Duration,
    /// A warm sandbox lives at most this long (default 1 h).
    pub ttl: Duration,
}

impl Group {
    /// The group settings take when a config says nothing.
    pub fn default_named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            runtime: None,
            network: NetworkPolicy::None,
            limits: ResourceLimits::default(),
            env_allow: BTreeSet::new(),
            idle_ttl: Duration::from_secs(600),
            ttl: Duration::from_secs(3600),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        let mut groups = BTreeMap::new();
        groups.insert(
            DEFAULT_GROUP.to_owned(),
            Group::default_named(DEFAULT_GROUP),
        );
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_concurrent_runs: 4,
            max_sandboxes: 8,
            max_body_bytes: 16 << 20,
            shutdown_grace: Duration::from_secs(30),
            tokens: Vec::new(),
            engine_env: BTreeMap::new(),
            groups,
        }
    }
}

impl ServerConfig {
    /// Reads a TOML configuration; every mistake is named with where it is.
    pub fn from_toml(text: &str) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| Error::invalid("server configuration", e.to_string()))?;
        let mut config = Self::default();
        if let Some(bind) = raw.bind {
            config.bind = bind;
        }
        if let Some(n) = raw.max_concurrent_runs {
            if n == 0 {
                return Err(Error::invalid(
                    "server configuration",
                    "max_concurrent_runs must be at least 1",
                ));
            }
            config.max_concurrent_runs = n;
        }
        if let Some(n) = raw.max_sandboxes {
            config.max_sandboxes = n;
        }
        if let Some(n) = raw.max_body_bytes {
            config.max_body_bytes = n;
        }
        if let Some(secs) = raw.shutdown_grace_secs {
            config.shutdown_grace = Duration::from_secs(secs);
        }
        config.tokens = raw.tokens;
        config.engine_env = raw.engine_env;
        for (name, group) in raw.groups {
            let what = |field: &str| format!("groups.{name}.{field}");
            let runtime = group
                .runtime
                .map(|r| r.parse::<RuntimeName>())
                .transpose()
                .map_err(|e| Error::invalid(what("runtime"), e.to_string()))?;
            let network = group
                .network
                .as_deref()
                .map(crate::parse::network)
                .transpose()
                .map_err(|e| Error::invalid(what("network"), e))?
                .unwrap_or(NetworkPolicy::None);
            let memory = group
                .memory
                .as_deref()
                .map(crate::parse::bytes)
                .transpose()
                .map_err(|e| Error::invalid(what("memory"), e))?;
            let cpus = group
                .cpus
                .as_deref()
                .map(crate::parse::cpus)
                .transpose()
                .map_err(|e| Error::invalid(what("cpus"), e))?;
            let defaults = Group::default_named(&name);
            config.groups.insert(
                name.clone(),
                Group {
                    name: name.clone(),
                    runtime,
                    network,
                    limits: crate::parse::limits(memory, cpus),
                    env_allow: group.env_allow.into_iter().collect(),
                    idle_ttl: group
                        .idle_ttl_secs
                        .map_or(defaults.idle_ttl, Duration::from_secs),
                    ttl: group.ttl_secs.map_or(defaults.ttl, Duration::from_secs),
                },
            );
        }
        Ok(config)
    }

    /// The group `name`, or `None`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_configuration_reads() {
        let config = ServerConfig::from_toml(
            r#"
            bind = "127.0.0.1:9000"
            max_concurrent_runs = 2
            tokens = ["t1"]
            [engine_env]
            DISABLE_TELEMETRY = "1"
            [groups.sensitive]
            runtime = "tart"
            network = "allow:api.github.com"
            memory = "4G"
            cpus = "2"
            env_allow = ["GITHUB_TOKEN"]
            idle_ttl_secs = 60
            "#,
        )
        .unwrap();
        assert_eq!(config.bind.port(), 9000);
        assert_eq!(config.max_concurrent_runs, 2);
        let group = config.group("sensitive").unwrap();
        assert_eq!(group.runtime, Some(RuntimeName::Tart));
        assert_eq!(
            group.network,
            NetworkPolicy::Allow(vec!["api.github.com".into()])
        );
        assert_eq!(group.limits.memory_bytes, Some(4 << 30));
        assert_eq!(group.idle_ttl, Duration::from_secs(60));
        assert!(config.group(DEFAULT_GROUP).is_some());
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| ServerConfig::from_toml(text).unwrap_err().to_string();
        assert!(err("[groups.a]\nruntime = \"docker\"").contains("groups.a.runtime"));
        assert!(err("[groups.a]\nruntime = \"docker\"").contains("known runtimes"));
        assert!(err("[groups.a]\nnetwork = \"open\"").contains("groups.a.network"));
        assert!(err("[groups.a]\nmemory = \"lots\"").contains("groups.a.memory"));
        assert!(err("max_concurrent_runs = 0").contains("at least 1"));
        assert!(err("colour = \"blue\"").contains("colour"));
    }
}
