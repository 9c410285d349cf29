//! What leaves a sandbox, and the secrets that never enter it.
//!
//! - [`EgressProxy`]: the host-side proxy of the `allow` network policy. A sandbox has no
//!   route out; its clients speak HTTP proxy (CONNECT tunnels and plain-HTTP forwarding) to
//!   this proxy over a Unix socket the runtime makes reachable inside. It checks every target
//!   against the [`EgressPolicy`] (names with optional ports; CIDR ranges for raw-IP targets),
//!   resolves allowed names itself, refuses every answer that points at loopback, private,
//!   link-local (metadata), CGNAT, ULA, multicast or other special addresses ([`vet`]), and
//!   connects only to an address it vetted — a name is resolved once per connection, so DNS
//!   rebinding has nothing to aim at. A CONNECT to port 443 must carry a TLS ClientHello whose
//!   server name is the CONNECT host. Connections are capped per sandbox and closed when idle.
//! - [`CredentialBroker`]: fills in the credentials of brokered upstreams (the model's key by
//!   default) on the host, so the sandbox only ever holds a per-boot placeholder.
//!
//! Every decision of either is a [`substrate_core::BoundaryEvent`] on the boot's audit sink.
#![deny(missing_docs)]

mod broker;
mod policy;
mod proxy;
mod sni;
pub mod vet;

pub use broker::{BrokerConfig, BrokerPlan, CredentialBroker};
pub use policy::{AllowRule, EgressPolicy, RuleTarget};
pub use proxy::{EgressProxy, ProxyConfig};
