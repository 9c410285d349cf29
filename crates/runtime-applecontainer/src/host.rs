//! Whether this host can run Apple's `container` at all: macOS 26 or later.

use substrate_core::{Error, Result};

/// The first macOS release `container` supports fully.
pub(crate) const MIN_MACOS_MAJOR: u32 = 26;

/// Fails with [`Error::Unsupported`], naming what works here, unless this is macOS 26+.
pub(crate) fn check_supported() -> Result<()> {
    check(host_macos_version().as_deref())
}

fn check(macos: Option<&str>) -> Result<()> {
    let Some(version) = macos else {
        return Err(Error::Unsupported {
            what: "the apple-container runtime".into(),
            reason: format!(
                "Apple's `container` runs on macOS {MIN_MACOS_MAJOR} or later only; on Linux use \
                 the bwrap runtime (or lima)"
            ),
        });
    };
    let major = version
        .trim()
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(major) if major >= MIN_MACOS_MAJOR => Ok(()),
        _ => Err(Error::Unsupported {
            what: "the apple-container runtime".into(),
            reason: format!(
                "Apple's `container` needs macOS {MIN_MACOS_MAJOR} or later, this is macOS \
                 {}; use the tart or lima runtime here",
                version.trim()
            ),
        }),
    }
}

#[cfg(target_os = "macos")]
fn host_macos_version() -> Option<String> {
    let out = std::process::Command::new("sw_vers")
        .arg("-productVersion")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(not(target_os = "macos"))]
fn host_macos_version() -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(version: Option<&str>) -> String {
        match check(version) {
            Err(Error::Unsupported { reason, .. }) => reason,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn only_macos_26_and_later_is_supported() {
        assert!(check(Some("26.0")).is_ok());
        assert!(check(Some("27.1.2\n")).is_ok());
        assert!(reason(Some("15.6")).contains("this is macOS 15.6; use the tart or lima"));
        assert!(reason(Some("garbage")).contains("needs macOS 26"));
        assert!(reason(None).contains("on Linux use the bwrap runtime"));
    }

    #[test]
    fn this_host_is_judged_by_its_os() {
        let verdict = check_supported();
        if cfg!(target_os = "macos") {
            // Either way the answer is definite; on an older Mac it names the alternatives.
            if let Err(e) = verdict {
                assert!(e.to_string().contains("tart or lima"), "{e}");
            }
        } else {
            assert!(matches!(verdict, Err(Error::Unsupported { .. })));
        }
    }
}
