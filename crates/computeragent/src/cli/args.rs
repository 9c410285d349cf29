//! The options every sandboxing command shares, and their parsers (the library's, as clap
//! value parsers). The user's config fills what the command line leaves out.

use computeragent::{NetworkPolicy, ResourceLimits, RuntimeName};

pub use computeragent::parse::{bytes, cpus, network};

/// Runtime, network policy and limits of a sandbox.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// The runtime (`local` has NO isolation).
    #[arg(long)]
    pub runtime: Option<RuntimeName>,
    /// Network policy: none (the default; a model is still reached through the host's
    /// broker), host, or allow:DOMAIN[,DOMAIN…].
    #[arg(long, value_parser = network)]
    pub net: Option<NetworkPolicy>,
    /// Memory limit, e.g. 2G.
    #[arg(long, value_parser = bytes)]
    pub memory: Option<u64>,
    /// CPU limit, e.g. 2 or 0.5.
    #[arg(long, value_parser = cpus)]
    pub cpus: Option<u32>,
}

impl SandboxArgs {
    /// The runtime asked for, or the user's default.
    pub fn runtime(&self, user: &crate::config::UserConfig) -> Option<RuntimeName> {
        self.runtime.or(user.runtime)
    }

    /// The network policy asked for, or the user's default, or `none`.
    pub fn network(&self, user: &crate::config::UserConfig) -> NetworkPolicy {
        self.net
            .clone()
            .or_else(|| user.network.clone())
            .unwrap_or(NetworkPolicy::None)
    }

    /// The limits asked for, each falling back to the user's default.
    pub fn limits(&self, user: &crate::config::UserConfig) -> ResourceLimits {
        computeragent::parse::limits(self.memory.or(user.memory), self.cpus.or(user.cpus))
    }
}
