//! The command line: options as swift-argument-parser reads them, and the values they carry.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use nix::sys::signal::Signal;

use super::store::{PublishedPort, Volume};
use crate::guestsim::vm::random_id;

/// `--debug`, which every command takes (and the simulator ignores).
pub(super) const DEBUG: Opt = (&["--debug"], false);

/// A command line the argument parser rejects (exit 64, as swift-argument-parser does).
#[derive(Debug)]
pub(super) struct Usage {
    pub(super) message: String,
    pub(super) usage: &'static str,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Usage {}

pub(super) fn usage(message: impl Into<String>, usage: &'static str) -> anyhow::Error {
    Usage {
        message: message.into(),
        usage,
    }
    .into()
}

pub(super) fn not_found(what: &str) -> anyhow::Error {
    anyhow!("notFound: \"{what} not found\"")
}

/// An option: its names (the first is the canonical one) and whether it takes a value.
pub(super) type Opt = (&'static [&'static str], bool);

/// Parsed options (by canonical name) and positional arguments.
#[derive(Debug, Default)]
pub(super) struct Parsed {
    pub(super) options: Vec<(&'static str, Option<String>)>,
    pub(super) positional: Vec<String>,
}

impl Parsed {
    pub(super) fn has(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| *n == name)
    }

    pub(super) fn value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    pub(super) fn values(&self, name: &str) -> Vec<&str> {
        self.options
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }
}

/// Parses `args` against `table`: `--flag value`, `--flag=value`, `-f value`, combined short
/// flags (`-dq`). With `stop_at_positional`, the first positional and everything after it are
/// positional (`run IMAGE ARGS…`).
pub(super) fn parse(
    args: &[String],
    table: &[Opt],
    stop_at_positional: bool,
    usage_line: &'static str,
) -> Result<Parsed> {
    let find = |name: &str| table.iter().find(|(names, _)| names.contains(&name));
    let mut parsed = Parsed::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            parsed.positional.extend(it.by_ref().cloned());
            break;
        }
        if arg.starts_with("--") {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f, Some(v.to_owned())),
                None => (arg.as_str(), None),
            };
            let Some((names, valued)) = find(flag) else {
                return Err(usage(format!("Unknown option '{flag}'"), usage_line));
            };
            let value = if *valued {
                match inline.or_else(|| it.next().cloned()) {
                    Some(v) => Some(v),
                    None => {
                        return Err(usage(format!("Missing value for '{flag}'"), usage_line));
                    }
                }
            } else if inline.is_some() {
                return Err(usage(
                    format!("Option '{flag}' does not take a value"),
                    usage_line,
                ));
            } else {
                None
            };
            parsed.options.push((names[0], value));
        } else if arg.len() > 1 && arg.starts_with('-') {
            if let Some((names, valued)) = find(arg) {
                let value = if *valued {
                    match it.next() {
                        Some(v) => Some(v.clone()),
                        None => {
                            return Err(usage(format!("Missing value for '{arg}'"), usage_line));
                        }
                    }
                } else {
                    None
                };
                parsed.options.push((names[0], value));
                continue;
            }
            // Combined short flags, all without values.
            for c in arg.chars().skip(1) {
                let short = format!("-{c}");
                match find(&short) {
                    Some((names, false)) => parsed.options.push((names[0], None)),
                    _ => return Err(usage(format!("Unknown option '{short}'"), usage_line)),
                }
            }
        } else {
            parsed.positional.push(arg.clone());
            if stop_at_positional {
                parsed.positional.extend(it.by_ref().cloned());
                break;
            }
        }
    }
    Ok(parsed)
}

/// A random id, as the real CLI gives a container without `--name` (a lowercase UUID).
pub(super) fn uuid() -> String {
    let hex = format!("{}{}", random_id(), random_id());
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// `512M`, `1G`, `2048` (MiB), `1.5GiB` → bytes, in whole MiB.
pub(super) fn parse_memory(value: &str) -> Result<u64> {
    let invalid = || anyhow!("invalidArgument: \"invalid memory value {value:?}\"");
    let t = value.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let number: f64 = t[..split].parse().map_err(|_| invalid())?;
    let unit = t[split..].trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let multiplier: u64 = match unit {
        "" | "m" => 1 << 20,
        "k" => 1 << 10,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(invalid()),
    };
    let bytes = (number * multiplier as f64) as u64;
    let bytes = bytes - bytes % (1 << 20);
    if bytes == 0 {
        return Err(invalid());
    }
    Ok(bytes)
}

/// `HOST:GUEST[:ro|:rw]`.
pub(super) fn parse_volume(spec: &str) -> Result<Volume> {
    let invalid = |why: &str| anyhow!("invalidArgument: \"invalid volume {spec:?}: {why}\"");
    let (rest, read_only) = if let Some(r) = spec.strip_suffix(":ro") {
        (r, true)
    } else if let Some(r) = spec.strip_suffix(":rw") {
        (r, false)
    } else {
        (spec, false)
    };
    let (host, guest) = rest
        .split_once(':')
        .ok_or_else(|| invalid("expected HOST:GUEST[:ro]"))?;
    if !host.starts_with('/') || !guest.starts_with('/') {
        return Err(invalid("both paths must be absolute"));
    }
    if !Path::new(host).exists() {
        return Err(invalid(&format!("{host} does not exist")));
    }
    Ok(Volume {
        host: PathBuf::from(host),
        guest: guest.to_owned(),
        read_only,
    })
}

/// `[IP:]HOST:CONTAINER[/tcp]` (an IPv6 address in brackets).
pub(super) fn parse_publish(spec: &str) -> Result<PublishedPort> {
    let invalid = |why: &str| anyhow!("invalidArgument: \"invalid publish spec {spec:?}: {why}\"");
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((p, proto)) => (p, proto),
        None => (spec, "tcp"),
    };
    if proto != "tcp" {
        bail!("unsupported: \"only tcp ports are simulated ({spec})\"");
    }
    let (address, rest) = if let Some(v6) = ports.strip_prefix('[') {
        let (addr, rest) = v6
            .split_once("]:")
            .ok_or_else(|| invalid("unclosed IPv6 address"))?;
        (addr.to_owned(), rest)
    } else {
        match ports.matches(':').count() {
            1 => ("0.0.0.0".to_owned(), ports),
            2 => {
                let (addr, rest) = ports.split_once(':').unwrap_or(("", ports));
                (addr.to_owned(), rest)
            }
            _ => return Err(invalid("expected [host-ip:]host-port:container-port")),
        }
    };
    let host_address: IpAddr = address.parse().map_err(|_| invalid("bad host address"))?;
    let (host, container) = rest
        .split_once(':')
        .ok_or_else(|| invalid("expected host-port:container-port"))?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    Ok(PublishedPort {
        host_address,
        host_port: port(host).ok_or_else(|| invalid("bad host port"))?,
        container_port: port(container).ok_or_else(|| invalid("bad container port"))?,
    })
}

/// `SIGTERM`, `TERM`, `term`, `15` → the signal.
pub(super) fn parse_signal(value: &str) -> Result<Signal> {
    let invalid = || anyhow!("invalidArgument: \"invalid signal {value:?}\"");
    if let Ok(n) = value.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| invalid());
    }
    let upper = value.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().map_err(|_| invalid())
}

/// `amd64`/`arm64`, as OCI names this host's architecture.
pub(super) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `name:tag` → (`name`, `tag`).
pub(super) fn split_tag(reference: &str) -> (&str, &str) {
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].rfind(':') {
        Some(i) => (&reference[..slash + i], &reference[slash + i + 1..]),
        None => (reference, ""),
    }
}
