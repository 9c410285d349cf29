//! Argv as data: what a runtime will run, built by pure functions and shown escaped.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

/// A command to run: program, arguments, environment and working directory.
///
/// Runtimes build these with pure functions so that the argv can be snapshot-tested on every
/// OS; only the code that spawns is platform-specific. Values stay `OsString` until they reach
/// the process. [`fmt::Display`] shell-escapes the program and arguments for messages only —
/// environment values are never shown, because they may hold secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CommandSpec {
    program: OsString,
    args: Vec<OsString>,
    env_clear: bool,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
}

impl CommandSpec {
    /// A command running `program` with no arguments.
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            ..Self::default()
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends one argument in place.
    pub fn push_arg(&mut self, arg: impl Into<OsString>) {
        self.args.push(arg.into());
    }

    /// Starts the process with an empty environment (only what [`CommandSpec::env`] sets).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// Sets one environment variable for the process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// The program.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments, without the program.
    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// Whether the environment is cleared first.
    pub fn is_env_cleared(&self) -> bool {
        self.env_clear
    }

    /// The environment variables set, in order.
    pub fn get_envs(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    /// The working directory, if set.
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }

    /// Program and arguments, one per line: the format of argv snapshot tests.
    pub fn argv_lines(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A [`std::process::Command`] with everything set; nothing is spawned.
    pub fn to_command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args);
        if self.env_clear {
            cmd.env_clear();
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
    }
}

impl fmt::Display for CommandSpec {
    /// The shell-escaped command line, for error messages and logs. Not for execution.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for part in std::iter::once(&self.program).chain(&self.args) {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let lossy = part.to_string_lossy();
            f.write_str(&shell_escape::unix::escape(lossy))?;
        }
        Ok(())
    }
}

impl fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_keys: Vec<_> = self.env.iter().map(|(k, _)| k).collect();
        f.debug_struct("CommandSpec")
            .field("command", &self.to_string())
            .field("env_clear", &self.env_clear)
            .field("env_keys", &env_keys)
            .field("cwd", &self.cwd)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_escapes_for_a_shell() {
        let cmd = CommandSpec::new("bwrap")
            .args(["--bind", "/tmp/a b", "/workdir"])
            .arg("it's");
        assert_eq!(
            cmd.to_string(),
            "bwrap --bind '/tmp/a b' /workdir 'it'\\''s'"
        );
    }

    #[test]
    fn debug_never_shows_env_values() {
        let cmd = CommandSpec::new("node").env("ANTHROPIC_API_KEY", "sk-secret-value");
        let dbg = format!("{cmd:?}");
        assert!(dbg.contains("ANTHROPIC_API_KEY"));
        assert!(!dbg.contains("sk-secret-value"));
    }

    #[test]
    fn argv_lines_one_per_line() {
        let cmd = CommandSpec::new("tart").args(["clone", "base", "ca-1"]);
        assert_eq!(cmd.argv_lines(), "tart\nclone\nbase\nca-1");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_arguments_survive_until_the_process() {
        use std::os::unix::ffi::OsStrExt;
        let raw = OsStr::from_bytes(b"/tmp/\xff");
        let cmd = CommandSpec::new("ls").arg(raw);
        assert_eq!(cmd.get_args()[0].as_bytes(), b"/tmp/\xff");
        let std_cmd = cmd.to_command();
        assert_eq!(
            std_cmd.get_args().next().map(|a| a.as_bytes()),
            Some(&b"/tmp/\xff"[..])
        );
    }
}
