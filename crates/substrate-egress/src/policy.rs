//! The allow-list as data: which names (and, for raw-IP targets, which address ranges) a
//! sandbox may reach, on which ports. Everything it does not match is denied.
//!
//! Rules as written:
//! - `api.example.com` — exactly this name, any port; `api.example.com:443` — one port;
//! - `*.example.com` — any name strictly below `example.com` (not `example.com` itself);
//! - `203.0.113.0/24`, `203.0.113.7`, `2001:db8::/32`, `[2001:db8::1]:443` — raw-IP targets in
//!   this range (IPv6 with a port in brackets).
//!
//! Special-purpose addresses (loopback, private, link-local, …, see [`crate::vet`]) stay denied
//! under a CIDR rule unless the rule lies wholly inside one such block: `10.1.0.0/16` reaches
//! an internal network because the caller named it; `0.0.0.0/0` reaches no private address.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use substrate_core::{Error, Result};

use crate::vet;

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleTarget {
    /// Exactly this name.
    Exact(String),
    /// Any name strictly below this one (`*.example.com`: `api.example.com`, not
    /// `example.com`).
    Suffix(String),
    /// Raw-IP targets in this range.
    Cidr(IpNet),
}

/// One allow rule: a target and, optionally, the only port it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    /// What it matches.
    pub target: RuleTarget,
    /// The port it allows; `None`: any port.
    pub port: Option<u16>,
}

impl AllowRule {
    fn allows_port(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    /// Whether a CIDR rule names special-purpose addresses on purpose: both ends of its range
    /// fall in the same special block.
    fn names_special_range(net: &IpNet) -> bool {
        match (vet::refusal(net.network()), vet::refusal(net.broadcast())) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.target, self.port) {
            (RuleTarget::Exact(name), None) => f.write_str(name),
            (RuleTarget::Exact(name), Some(p)) => write!(f, "{name}:{p}"),
            (RuleTarget::Suffix(name), None) => write!(f, "*.{name}"),
            (RuleTarget::Suffix(name), Some(p)) => write!(f, "*.{name}:{p}"),
            (RuleTarget::Cidr(IpNet::V6(net)), Some(p)) => write!(f, "[{net}]:{p}"),
            (RuleTarget::Cidr(net), Some(p)) => write!(f, "{net}:{p}"),
            (RuleTarget::Cidr(net), None) => write!(f, "{net}"),
        }
    }
}

/// The allow-list. Everything it does not match is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    rules: Vec<AllowRule>,
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn bad(rule: &str, why: &str) -> Error {
    Error::invalid(
        "network allow rule",
        format!(
            "`{rule}` {why}; write a domain name (`api.example.com`, `*.example.com`), \
             optionally with a port (`api.example.com:443`), or an address range \
             (`203.0.113.0/24`, `[2001:db8::/32]:443`)"
        ),
    )
}

fn check_name(rule: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 253 {
        return Err(bad(rule, "is not a valid length for a domain name"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad(rule, "has an empty or over-long label"));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(
                rule,
                "holds a character no domain name has (a scheme, path or space?)",
            ));
        }
    }
    Ok(())
}

fn parse_port(rule: &str, port: &str) -> Result<u16> {
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(bad(rule, "has a port that is not a number from 1 to 65535")),
    }
}

/// An address or a range: `10.0.0.1` is `10.0.0.1/32`.
fn parse_net(text: &str) -> Option<IpNet> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

fn parse_rule(raw: &str) -> Result<AllowRule> {
    // `[v6 or v6/len]` with an optional `:port`.
    if let Some(rest) = raw.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(raw, "opens a `[` it never closes"))?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(
                raw,
                after
                    .strip_prefix(':')
                    .ok_or_else(|| bad(raw, "has text after `]` that is not `:port`"))?,
            )?),
        };
        let net = parse_net(inner).ok_or_else(|| bad(raw, "is not an IPv6 address or range"))?;
        return Ok(AllowRule {
            target: RuleTarget::Cidr(net),
            port,
        });
    }
    // A bare IPv6 range has colons of its own: never a port.
    if let Some(net) = parse_net(raw) {
        return Ok(AllowRule {
            target: RuleTarget::Cidr(net),
            port: None,
        });
    }
    let (host, port) = match raw.rsplit_once(':') {
        Some((host, port)) => (host, Some(parse_port(raw, port)?)),
        None => (raw, None),
    };
    if let Some(net) = parse_net(host) {
        return Ok(AllowRule {
            target: RuleTarget::Cidr(net),
            port,
        });
    }
    if host.contains('/') && host.split('/').next().and_then(parse_net).is_some() {
        return Err(bad(
            raw,
            "has a prefix length that does not fit the address",
        ));
    }
    let target = match host.strip_prefix("*.") {
        Some(rest) => {
            let name = normalise(rest);
            check_name(raw, &name)?;
            RuleTarget::Suffix(name)
        }
        None => {
            let name = normalise(host);
            check_name(raw, &name)?;
            RuleTarget::Exact(name)
        }
    };
    Ok(AllowRule { target, port })
}

/// Parses `host` as an IP literal (`10.0.0.1`, `[::1]`, `::1`).
pub(crate) fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

impl EgressPolicy {
    /// Builds the policy from rules as written (see the module docs). A rule that is not one of
    /// those forms is refused with an error naming the rule.
    pub fn from_rules<I, S>(rules: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let rules = rules
            .into_iter()
            .map(|raw| parse_rule(raw.as_ref().trim()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { rules })
    }

    /// The rule that allows a connection to `host:port`, if any: a name rule for a name, a
    /// CIDR rule for an IP literal (special-purpose addresses only under a rule that names
    /// their block, see the module docs).
    pub fn matching(&self, host: &str, port: u16) -> Option<&AllowRule> {
        if let Some(ip) = ip_literal(host) {
            return self.address_rule(ip, port);
        }
        let host = normalise(host);
        self.rules.iter().find(|rule| {
            rule.allows_port(port)
                && match &rule.target {
                    RuleTarget::Exact(name) => *name == host,
                    RuleTarget::Suffix(name) => host
                        .strip_suffix(name.as_str())
                        .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                    RuleTarget::Cidr(_) => false,
                }
        })
    }

    /// The CIDR rule that allows connecting to `ip` on `port`: for a public address any rule
    /// whose range holds it; for a special-purpose one only a rule that names its block.
    pub fn address_rule(&self, ip: IpAddr, port: u16) -> Option<&AllowRule> {
        let special = vet::refusal(ip).is_some();
        self.rules.iter().find(|rule| match &rule.target {
            RuleTarget::Cidr(net) => {
                rule.allows_port(port)
                    && net.contains(&ip)
                    && (!special || AllowRule::names_special_range(net))
            }
            _ => false,
        })
    }

    /// The rules.
    pub fn rules(&self) -> &[AllowRule] {
        &self.rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn exact_and_suffix_rules_match_as_written() {
        let p = EgressPolicy::from_rules(["API.example.com.", "*.pypi.org"]).unwrap();
        assert!(p.matching("api.example.com", 443).is_some());
        assert!(p.matching("Api.Example.Com.", 8080).is_some());
        assert!(p.matching("example.com", 443).is_none());
        assert!(p.matching("evil-api.example.com", 443).is_none());
        assert!(p.matching("files.pypi.org", 443).is_some());
        assert!(p.matching("a.b.pypi.org", 443).is_some());
        assert!(p.matching("pypi.org", 443).is_none());
        assert!(p.matching("notpypi.org", 443).is_none());
        assert!(p.matching("127.0.0.1", 443).is_none());
        assert!(p.matching("[::1]", 443).is_none());
    }

    #[test]
    fn ports_restrict_a_rule() {
        let p =
            EgressPolicy::from_rules(["a.com:443", "*.b.com:8443", "[2001:db8::/32]:22"]).unwrap();
        assert!(p.matching("a.com", 443).is_some());
        assert!(p.matching("a.com", 80).is_none());
        assert!(p.matching("x.b.com", 8443).is_some());
        assert!(p.matching("x.b.com", 443).is_none());
        assert!(p.matching("[2001:db8::5]", 22).is_some());
        assert!(p.matching("[2001:db8::5]", 23).is_none());
        assert_eq!(p.rules()[0].to_string(), "a.com:443");
        assert_eq!(p.rules()[2].to_string(), "[2001:db8::/32]:22");
    }

    #[test]
    fn cidr_rules_allow_raw_ip_targets_but_not_special_ones_by_accident() {
        let p = EgressPolicy::from_rules(["0.0.0.0/0", "::/0"]).unwrap();
        assert!(p.matching("203.0.113.9", 80).is_some());
        assert!(p.matching("[2001:db8::1]", 80).is_some());
        for special in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "[::1]",
            "[fd00:ec2::254]",
            "[::ffff:127.0.0.1]",
            "[fe80::1]",
        ] {
            assert!(p.matching(special, 80).is_none(), "{special}");
        }
        // A rule inside one special block names it on purpose.
        let p = EgressPolicy::from_rules(["10.1.0.0/16", "127.0.0.1:9000", "10.0.0.0/7"]).unwrap();
        assert!(p.address_rule(ip("10.1.2.3"), 1).is_some());
        assert!(p.address_rule(ip("127.0.0.1"), 9000).is_some());
        assert!(p.address_rule(ip("127.0.0.1"), 9001).is_none());
        // 10.0.0.0/7 spans private and public space: not a deliberate private rule.
        assert!(p.address_rule(ip("10.9.0.1"), 1).is_none());
        assert!(p.address_rule(ip("11.0.0.1"), 1).is_some());
    }

    #[test]
    fn malformed_rules_are_refused_by_name() {
        for rule in [
            "https://x.com",
            "x.com:0",
            "x.com:http",
            "x.com:70000",
            "",
            "a..b",
            "*.",
            "x y.com",
            "x.com/path",
            "10.0.0.0/33",
            "[::1",
            "[::1]x",
            "[x.com]:443",
        ] {
            let err = EgressPolicy::from_rules([rule]).unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{}`", rule.trim())),
                "{rule}: {err}"
            );
        }
    }
}
