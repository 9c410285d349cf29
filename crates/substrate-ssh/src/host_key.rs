//! Which host keys a connection accepts. Always explicit: there is no default that trusts any
//! key silently.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use russh::keys::{HashAlg, PublicKey};

/// How a guest's host key is checked.
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Accept only keys with one of these SHA-256 fingerprints (`SHA256:…`, as
    /// `ssh-keygen -lf` prints them).
    Pinned(Vec<String>),
    /// Record the first key seen under `name` in `file` (lines of `name fingerprint`); later
    /// connections under the same name must present a recorded key. A VM cloned from one image
    /// keeps that image's host key, so the image's name is the natural `name`.
    TrustOnFirstUse {
        /// The known-keys file (created when missing).
        file: PathBuf,
        /// What the key is recorded under.
        name: String,
    },
    /// Accept any key. Only when a caller asks for it by name; every connection logs a warning.
    AcceptAnyInsecure,
}

impl fmt::Debug for HostKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKeyPolicy::Pinned(keys) => f.debug_tuple("Pinned").field(keys).finish(),
            HostKeyPolicy::TrustOnFirstUse { file, name } => f
                .debug_struct("TrustOnFirstUse")
                .field("file", file)
                .field("name", name)
                .finish(),
            HostKeyPolicy::AcceptAnyInsecure => f.write_str("AcceptAnyInsecure"),
        }
    }
}

/// The SHA-256 fingerprint of a public key, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl HostKeyPolicy {
    /// Whether `key` is acceptable; `Err` says why not and what to do.
    pub fn check(&self, target: &str, key: &PublicKey) -> Result<(), String> {
        let seen = fingerprint(key);
        match self {
            HostKeyPolicy::Pinned(keys) => {
                if keys.iter().any(|k| k == &seen) {
                    Ok(())
                } else {
                    Err(format!(
                        "{target} presented {seen}, which is not among the pinned keys {keys:?}"
                    ))
                }
            }
            HostKeyPolicy::TrustOnFirstUse { file, name } => tofu(file, name, &seen),
            HostKeyPolicy::AcceptAnyInsecure => {
                tracing::warn!(%target, key = %seen, "accepting any SSH host key, as asked");
                Ok(())
            }
        }
    }
}

fn tofu(file: &PathBuf, name: &str, seen: &str) -> Result<(), String> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let recorded: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(n, _)| *n == name)
        .map(|(_, k)| k.trim())
        .collect();
    if recorded.contains(&seen) {
        return Ok(());
    }
    if !recorded.is_empty() {
        return Err(format!(
            "the host key of `{name}` changed: recorded {recorded:?}, now {seen}. If the image \
             was rebuilt on purpose, remove its line from {}; otherwise someone may be \
             intercepting the connection",
            file.display()
        ));
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // One append of one line: concurrent first uses of one image record the same key twice
    // at worst, never a torn line.
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    out.write_all(format!("{name} {seen}\n").as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    tracing::info!(%name, key = %seen, file = %file.display(), "recorded a host key on first use");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (PublicKey, PublicKey) {
        let parse = |line: &str| PublicKey::from_openssh(line).unwrap();
        (
            parse(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJCkK+QsL95c8WAfB6b1uYEDXQNFzN4xSOLF108ZuKML",
            ),
            parse(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHSLBYTbCAT7l6n9g9Ma34t6oKhaKYPZvMvo6Y/BrhxB",
            ),
        )
    }

    #[test]
    fn first_use_records_then_a_changed_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let policy = HostKeyPolicy::TrustOnFirstUse {
            file: dir.path().join("sub/known"),
            name: "base".into(),
        };
        let (a, b) = keys();
        policy.check("t", &a).unwrap();
        policy.check("t", &a).unwrap();
        let err = policy.check("t", &b).unwrap_err();
        assert!(err.contains("changed"), "{err}");
        // Another name is independent.
        let other = HostKeyPolicy::TrustOnFirstUse {
            file: dir.path().join("sub/known"),
            name: "other".into(),
        };
        other.check("t", &b).unwrap();
    }

    #[test]
    fn pinned_accepts_only_listed_fingerprints() {
        let (a, b) = keys();
        let policy = HostKeyPolicy::Pinned(vec![fingerprint(&a)]);
        policy.check("t", &a).unwrap();
        assert!(policy.check("t", &b).unwrap_err().contains("not among"));
        assert!(fingerprint(&a).starts_with("SHA256:"));
    }
}
