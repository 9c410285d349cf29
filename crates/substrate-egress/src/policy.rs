//! Domain rules: which names a sandbox may reach.

use std::fmt;

use substrate_core::{Error, Result};

/// One allowed name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRule {
    /// Exactly this name.
    Exact(String),
    /// Any name strictly below this one (`*.example.com`: `api.example.com`, not
    /// `example.com`).
    Suffix(String),
}

impl fmt::Display for DomainRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainRule::Exact(name) => f.write_str(name),
            DomainRule::Suffix(name) => write!(f, "*.{name}"),
        }
    }
}

/// The allow-list. Everything it does not match is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    rules: Vec<DomainRule>,
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn bad(rule: &str, why: &str) -> Error {
    Error::invalid(
        "network allow rule",
        format!("`{rule}` {why}; write a domain name (`api.example.com`) or `*.example.com`"),
    )
}

fn check_name(rule: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 253 {
        return Err(bad(rule, "is not a valid length for a domain name"));
    }
    if name.parse::<std::net::IpAddr>().is_ok() || name.starts_with('[') {
        return Err(bad(
            rule,
            "is an IP address: only domain names can be allowed",
        ));
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
                "holds a character no domain name has (a scheme, port, path or space?)",
            ));
        }
    }
    Ok(())
}

impl EgressPolicy {
    /// Builds the policy from rules as written (`api.example.com`, `*.example.com`). A rule that
    /// is not a domain name is refused, naming the rule.
    pub fn from_rules<I, S>(rules: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for raw in rules {
            let raw = raw.as_ref().trim();
            let rule = match raw.strip_prefix("*.") {
                Some(rest) => {
                    let name = normalise(rest);
                    check_name(raw, &name)?;
                    DomainRule::Suffix(name)
                }
                None => {
                    let name = normalise(raw);
                    check_name(raw, &name)?;
                    DomainRule::Exact(name)
                }
            };
            out.push(rule);
        }
        Ok(Self { rules: out })
    }

    /// The rule that allows `host`, if any. IP literals never match.
    pub fn matching(&self, host: &str) -> Option<&DomainRule> {
        let host = normalise(host);
        if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
            return None;
        }
        self.rules.iter().find(|rule| match rule {
            DomainRule::Exact(name) => *name == host,
            DomainRule::Suffix(name) => host
                .strip_suffix(name.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        })
    }

    /// The rules.
    pub fn rules(&self) -> &[DomainRule] {
        &self.rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_suffix_rules_match_as_written() {
        let p = EgressPolicy::from_rules(["API.example.com.", "*.pypi.org"]).unwrap();
        assert!(p.matching("api.example.com").is_some());
        assert!(p.matching("Api.Example.Com.").is_some());
        assert!(p.matching("example.com").is_none());
        assert!(p.matching("evil-api.example.com").is_none());
        assert!(p.matching("files.pypi.org").is_some());
        assert!(p.matching("a.b.pypi.org").is_some());
        assert!(p.matching("pypi.org").is_none());
        assert!(p.matching("notpypi.org").is_none());
        assert!(p.matching("127.0.0.1").is_none());
        assert!(p.matching("[::1]").is_none());
    }

    #[test]
    fn malformed_rules_are_refused_by_name() {
        for rule in [
            "https://x.com",
            "x.com:443",
            "10.0.0.1",
            "",
            "a..b",
            "*.",
            "x y.com",
            "x.com/path",
        ] {
            let err = EgressPolicy::from_rules([rule]).unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{}`", rule.trim())),
                "{err}"
            );
        }
    }
}
