//! Parsers of the settings people type (CLI options, the server's TOML): network policies,
//! sizes and CPU counts, each failing with what would have worked.

use substrate_core::{NetworkPolicy, ResourceLimits};

/// `none`, `host`, or `allow:DOMAIN[,DOMAIN…]`.
pub fn network(text: &str) -> Result<NetworkPolicy, String> {
    match text {
        "none" => Ok(NetworkPolicy::None),
        "host" => Ok(NetworkPolicy::Host),
        other => {
            let Some(list) = other.strip_prefix("allow:") else {
                return Err(format!(
                    "`{other}` is no network policy: use none, host or allow:DOMAIN[,DOMAIN…]"
                ));
            };
            let domains: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect();
            if domains.is_empty() {
                return Err("allow: needs at least one domain, e.g. allow:api.github.com".into());
            }
            Ok(NetworkPolicy::Allow(domains))
        }
    }
}

/// A size such as `512M`, `2G` or `1073741824`.
pub fn bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is no size: use e.g. 512M or 2G"))?;
    let factor: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use K, M, G or T)"
            ));
        }
    };
    n.checked_mul(factor)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("`{text}` is out of range"))
}

/// CPUs, fractional (`1.5`), as thousandths.
pub fn cpus(text: &str) -> Result<u32, String> {
    let n: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is no CPU count: use e.g. 2 or 0.5"))?;
    if !(n > 0.0 && n <= 1024.0) {
        return Err(format!("`{text}` CPUs is out of range (0 < n ≤ 1024)"));
    }
    Ok((n * 1000.0).round() as u32)
}

/// The limits of a memory size and a CPU count.
pub fn limits(memory: Option<u64>, cpu_millis: Option<u32>) -> ResourceLimits {
    let mut limits = ResourceLimits::default();
    if let Some(bytes) = memory {
        limits = limits.memory(bytes);
    }
    if let Some(millis) = cpu_millis {
        limits = limits.cpu_millis(millis);
    }
    limits
}

/// An entry left out of a project's copy: a name (`node_modules`, wherever it appears) or a
/// path relative to the project (`build/cache`), without `./` or a trailing `/`.
pub fn exclude(text: &str) -> Result<String, String> {
    let trimmed = text.trim().trim_start_matches("./").trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(format!(
            "`{text}` names nothing: give a name (node_modules) or a path in the project \
             (build/cache)"
        ));
    }
    if trimmed.starts_with('/') {
        return Err(format!(
            "`{text}` is absolute: give a path relative to the project (build/cache)"
        ));
    }
    if trimmed
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "`{text}` is not a plain path in the project: no `.`, `..` or empty parts"
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_bad_ones_say_what_works() {
        assert_eq!(network("none"), Ok(NetworkPolicy::None));
        assert_eq!(network("host"), Ok(NetworkPolicy::Host));
        assert_eq!(
            network("allow:a.com, *.b.org"),
            Ok(NetworkPolicy::Allow(vec!["a.com".into(), "*.b.org".into()]))
        );
        assert!(
            network("allow:")
                .unwrap_err()
                .contains("at least one domain")
        );
        assert!(
            network("open")
                .unwrap_err()
                .contains("none, host or allow:")
        );
    }

    #[test]
    fn sizes_and_cpus_parse() {
        assert_eq!(bytes("512M"), Ok(512 << 20));
        assert_eq!(bytes("2G"), Ok(2 << 30));
        assert_eq!(bytes("2GiB"), Ok(2 << 30));
        assert_eq!(bytes("4096"), Ok(4096));
        assert!(bytes("2X").unwrap_err().contains("unknown unit"));
        assert!(bytes("0").is_err());
        assert_eq!(cpus("1.5"), Ok(1500));
        assert!(cpus("0").is_err());
        assert!(cpus("many").is_err());
    }

    #[test]
    fn excludes_are_names_or_plain_relative_paths() {
        assert_eq!(exclude("node_modules"), Ok("node_modules".into()));
        assert_eq!(exclude("./build/cache/"), Ok("build/cache".into()));
        assert!(exclude("/etc").unwrap_err().contains("absolute"));
        assert!(exclude("../up").unwrap_err().contains("`..`"));
        assert!(exclude("a//b").unwrap_err().contains("empty parts"));
        assert!(exclude("./").unwrap_err().contains("names nothing"));
    }
}
