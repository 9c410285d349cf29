//! Values that must never reach a log line, a `Debug` dump, an argv or a process title.

use std::fmt;

/// A secret string. `Debug` and `Display` print `<redacted>`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself. Call this only where the value leaves for its one destination.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A fresh random token of 32 bytes, hex-encoded, from the OS's secure RNG.
    pub fn random_token() -> crate::Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom_fill(&mut bytes)?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }
}

fn getrandom_fill(buf: &mut [u8]) -> crate::Result<()> {
    use std::io::Read;
    // /dev/urandom exists on every OS we run on (Linux, macOS); avoids a dependency for 32 bytes.
    let mut f = std::fs::File::open("/dev/urandom")
        .map_err(|e| crate::Error::io("open /dev/urandom for a boot token", e))?;
    f.read_exact(buf)
        .map_err(|e| crate::Error::io("read /dev/urandom for a boot token", e))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An environment variable's value: plain, or secret (redacted wherever it is shown).
#[derive(Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// Shown as is.
    Plain(String),
    /// Shown as `<redacted>`.
    Secret(Secret),
}

impl EnvValue {
    /// The value itself, for the one place it is delivered.
    pub fn expose(&self) -> &str {
        match self {
            EnvValue::Plain(v) => v,
            EnvValue::Secret(s) => s.expose(),
        }
    }

    /// Whether the value is secret.
    pub fn is_secret(&self) -> bool {
        matches!(self, EnvValue::Secret(_))
    }
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvValue::Plain(v) => fmt::Debug::fmt(v, f),
            EnvValue::Secret(_) => f.write_str("<redacted>"),
        }
    }
}

/// Names that are treated as secret even when set with [`EnvVars::set`]: a caller who forgets to
/// mark `ANTHROPIC_API_KEY` secret must not see it in a log.
fn name_looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "KEY",
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "AUTH",
    ]
    .iter()
    .any(|needle| upper.contains(needle))
}

/// An ordered set of environment variables for an engine, secret-aware.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvVars(Vec<(String, EnvValue)>);

impl EnvVars {
    /// No variables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a variable. Names that look like credentials (`*KEY*`, `*TOKEN*`, `*SECRET*`,
    /// `*PASSWORD*`, …) are stored as secrets anyway.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let name = name.into();
        let value = value.into();
        let value = if name_looks_secret(&name) {
            EnvValue::Secret(Secret::new(value))
        } else {
            EnvValue::Plain(value)
        };
        self.insert(name, value);
        self
    }

    /// Sets a variable whose value is always redacted.
    pub fn set_secret(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.insert(name.into(), EnvValue::Secret(Secret::new(value)));
        self
    }

    fn insert(&mut self, name: String, value: EnvValue) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&EnvValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &str) -> Option<EnvValue> {
        let pos = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.remove(pos).1)
    }

    /// Iterates over names and values, in the order they were first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &EnvValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no variable is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The variables as a plain map, exposing secrets: for the one place they are delivered.
    pub fn expose_map(&self) -> std::collections::BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect()
    }
}

impl fmt::Debug for EnvVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for EnvVars {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        let mut vars = EnvVars::new();
        for (k, v) in iter {
            vars.set(k, v);
        }
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut vars = EnvVars::new();
        vars.set("ANTHROPIC_API_KEY", "sk-ant-123")
            .set("MODEL", "claude-x")
            .set_secret("OTHER", "hunter2");
        let dbg = format!("{vars:?}");
        assert!(!dbg.contains("sk-ant-123"), "{dbg}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("claude-x"), "{dbg}");
        assert_eq!(
            vars.get("ANTHROPIC_API_KEY").map(EnvValue::expose),
            Some("sk-ant-123")
        );
    }

    #[test]
    fn setting_twice_replaces_in_place() {
        let mut vars = EnvVars::new();
        vars.set("A", "1").set("B", "2").set("A", "3");
        let names: Vec<_> = vars.iter().map(|(k, v)| (k, v.expose())).collect();
        assert_eq!(names, vec![("A", "3"), ("B", "2")]);
    }

    #[test]
    fn random_tokens_differ_and_are_hex() {
        let a = Secret::random_token().unwrap();
        let b = Secret::random_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(format!("{a:?} {a}"), "<redacted> <redacted>");
    }
}
