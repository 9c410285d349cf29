//! bwrap's version: parsed from `bwrap --version`, checked against the oldest release whose
//! flags the argv uses.

use std::fmt;

/// A bubblewrap release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BwrapVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

/// The oldest bwrap the argv works with: 0.8.0 added `--disable-userns`; every other flag
/// used (`--clearenv`, `--add-seccomp-fd`, `--ro-bind-data`, `--size`, `--info-fd`) is older.
/// Debian 12 ships 0.8.0.
pub const MIN_VERSION: BwrapVersion = BwrapVersion {
    major: 0,
    minor: 8,
    patch: 0,
};

impl BwrapVersion {
    /// Parses the output of `bwrap --version` (`bubblewrap 0.8.0`).
    pub fn parse(output: &str) -> Option<Self> {
        let word = output
            .split_whitespace()
            .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
        let mut parts = word.split('.').map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Self {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for BwrapVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_lines() {
        let v = BwrapVersion::parse("bubblewrap 0.8.0\n").unwrap();
        assert_eq!(v, MIN_VERSION);
        assert_eq!(BwrapVersion::parse("bubblewrap 0.11.1").unwrap().minor, 11);
        assert!(BwrapVersion::parse("bubblewrap 0.6.1").unwrap() < MIN_VERSION);
        assert!(BwrapVersion::parse("bubblewrap 0.10.0").unwrap() > MIN_VERSION);
        assert_eq!(BwrapVersion::parse("garbage"), None);
    }
}
