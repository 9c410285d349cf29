//! `computeragent shell` on a real terminal, driven as a person would through tmux: the
//! sandbox's shell on a PTY of its own with the caller's size, a resize reaching it, Ctrl-C
//! interrupting the program inside and not the command, its exit status passed on, and the
//! caller's terminal settings the same afterwards.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, height: u16) -> Self {
        let tmux = Command::new("tmux").arg("-V").output();
        assert!(
            tmux.is_ok_and(|o| o.status.success()),
            "tmux is not installed: these tests drive a real terminal with it \
             (`apt-get install tmux`; `cargo xtask test` installs it)"
        );
        substrate_testkit::stage::ensure_staged().unwrap();
        // One server per test: tests run in parallel.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("catest-{}-{n}", std::process::id());
        let t = Self { socket };
        let stage = format!(
            "COMPUTERAGENT_STAGE_DIR={}",
            substrate_testkit::stage::stage_dir().display()
        );
        t.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "-e",
            &stage,
            "-e",
            "COMPUTERAGENT_CONFIG=/nonexistent/computeragent.toml",
            "env PS1='outer$ ' bash --norc --noprofile",
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// In a running `shell` session on the pane: a resize reaches the program inside
    /// (asked until the SIGWINCH has travelled), Ctrl-C interrupts its program and not the
    /// session, `command` runs and `then` checks what it did, Ctrl-Z stops a program inside
    /// and not the session, `exit 7` becomes the command's `EXIT=7`, and the terminal's
    /// settings recorded in `before` and `after` are the same. Returns the screen at `EXIT=7`.
    fn resize_interrupt_and_exit(
        &self,
        command: &str,
        then: impl FnOnce(),
        before: &std::path::Path,
        after: &std::path::Path,
    ) -> String {
        self.run(&["resize-window", "-t", "t", "-x", "100", "-y", "30"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.keys(&["echo now=$(stty size)", "Enter"]);
            std::thread::sleep(Duration::from_millis(300));
            if self.screen().contains("now=30 100") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the resize never arrived:\n{}",
                self.screen()
            );
        }
        self.keys(&["sleep 100; echo slept-$((40+2))", "Enter"]);
        std::thread::sleep(Duration::from_millis(500));
        self.keys(&["C-c"]);
        self.keys(&[&format!("{command}; echo still=here"), "Enter"]);
        let screen = self.wait_for("still=here");
        assert!(!screen.contains("slept-42"), "{screen}");
        // Ctrl-Z stops the program inside (the shell inside reports the stopped job), not the
        // command outside.
        self.keys(&["sleep 101", "Enter"]);
        std::thread::sleep(Duration::from_millis(500));
        self.keys(&["C-z"]);
        self.wait_for("Stopped");
        self.keys(&["kill -9 %1; wait; echo unstopped=$((40+3))", "Enter"]);
        self.wait_for("unstopped=43");
        then();
        self.keys(&["exit 7", "Enter"]);
        let screen = self.wait_for("EXIT=7");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !after.exists() {
            assert!(Instant::now() < deadline, "the outer shell never ran stty");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            std::fs::read_to_string(before).unwrap(),
            std::fs::read_to_string(after).unwrap(),
            "the terminal's settings changed"
        );
        screen
    }

    /// Waits until the screen shows `text`.
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {text:?} on:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
fn a_shell_in_a_sandbox_behaves_like_a_terminal_and_leaves_it_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("before");
    let after = dir.path().join("after");
    let t = Tmux::start(80, 24);
    t.wait_for("outer$");
    t.keys(&[
        &format!(
            "stty -g > {}; {} shell --no-project; echo EXIT=$?; stty -g > {}",
            before.display(),
            env!("CARGO_BIN_EXE_computeragent"),
            after.display()
        ),
        "Enter",
    ]);
    // Inside: the sandbox's user, the caller's size.
    t.keys(&["echo who=$(id -un) size=$(stty size)", "Enter"]);
    t.wait_for("who=agent size=24 80");
    t.resize_interrupt_and_exit("true", || {}, &before, &after);
}

#[test]
fn a_shell_without_a_terminal_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_computeragent"))
        .args(["shell"])
        .env("COMPUTERAGENT_CONFIG", "/nonexistent/computeragent.toml")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a terminal"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_ends_the_session_and_restores_the_terminal() {
    a_signal_from_outside_ends_the_session("TERM", 1, 143, 1);
}

#[test]
fn a_storm_of_sigint_ends_the_session_once_and_restores_the_terminal() {
    a_signal_from_outside_ends_the_session("INT", 10, 130, 2);
}

#[test]
fn sighup_ends_the_session_and_restores_the_terminal() {
    a_signal_from_outside_ends_the_session("HUP", 1, 129, 3);
}

#[test]
fn a_session_ended_from_outside_keeps_its_work_as_a_patch() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("app");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("README.md"), "the app\n").unwrap();
    let state = dir.path().join("state");
    let t = Tmux::start(200, 30);
    t.wait_for("outer$");
    let marker = format!("sleep {}", 4000 + std::process::id() % 1000);
    let p = project.display();
    t.keys(&[
        &format!(
            "XDG_STATE_HOME={} {} shell --project {p} -- sh -c 'echo kept > kept.txt; \
             echo more >> README.md; exec {marker}'; echo EXIT=$?",
            state.display(),
            env!("CARGO_BIN_EXE_computeragent"),
        ),
        "Enter",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Command::new("pgrep")
        .args(["-f", &format!("^{marker}$")])
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "the program never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("pkill")
        .args([
            "-TERM",
            "-f",
            &format!("computeragent shell --project {p} -- sh"),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let screen = t.wait_for("EXIT=143");
    assert!(screen.contains("kept, unreviewed, in"), "{screen}");
    // The project is as it was; the work is in a private patch that git apply brings back.
    assert!(!project.join("kept.txt").exists());
    assert_eq!(
        std::fs::read_to_string(project.join("README.md")).unwrap(),
        "the app\n"
    );
    let kept: Vec<_> = std::fs::read_dir(state.join("computeragent/unreviewed"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kept[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = Command::new("git")
        .arg("apply")
        .arg(&kept[0])
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(project.join("kept.txt")).unwrap(),
        "kept\n"
    );
    assert_eq!(
        std::fs::read_to_string(project.join("README.md")).unwrap(),
        "the app\nmore\n"
    );
}

/// `shell --no-project` running a program, sent SIG`signal` `times` times from outside: the
/// session ends saying so, with a shell's status for the signal (`code`), the program inside
/// goes with the sandbox, and the terminal's settings are as they were. `slot` keeps each
/// test's program apart from the others'.
fn a_signal_from_outside_ends_the_session(signal: &str, times: usize, code: u8, slot: u32) {
    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("before");
    let after = dir.path().join("after");
    let t = Tmux::start(90, 20);
    t.wait_for("outer$");
    let marker = format!("sleep {}", slot * 1000 + std::process::id() % 1000);
    t.keys(&[
        &format!(
            "stty -g > {}; {} shell --no-project -- {marker}; echo EXIT=$?; stty -g > {}",
            before.display(),
            env!("CARGO_BIN_EXE_computeragent"),
            after.display()
        ),
        "Enter",
    ]);
    // Wait for the program inside to run, then terminate the command from outside.
    let deadline = Instant::now() + Duration::from_secs(30);
    let sandboxed = loop {
        let found = Command::new("pgrep")
            .args(["-f", &format!("^{marker}$")])
            .output()
            .unwrap();
        if found.status.success() {
            break String::from_utf8_lossy(&found.stdout).trim().to_owned();
        }
        assert!(Instant::now() < deadline, "the program never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    let found = Command::new("pgrep")
        .args([
            "-f",
            &format!("computeragent shell --no-project -- {marker}"),
        ])
        .output()
        .unwrap();
    assert!(found.status.success(), "the command is not running");
    let cli = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    // All at once, as a storm: the later ones may find the command already gone.
    let status = Command::new("kill")
        .args(["-s", signal])
        .args(std::iter::repeat_n(&cli, times))
        .status()
        .unwrap();
    assert!(times > 1 || status.success());
    let screen = t.wait_for(&format!("EXIT={code}"));
    assert!(
        screen.contains(&format!("ended by SIG{signal}; the sandbox is gone")),
        "{screen}"
    );
    // The sandbox went with it.
    for pid in sandboxed.lines() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                Instant::now() < deadline,
                "the sandboxed program {pid} outlived the session"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !after.exists() {
        assert!(Instant::now() < deadline, "the outer shell never ran stty");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        std::fs::read_to_string(&before).unwrap(),
        std::fs::read_to_string(&after).unwrap(),
        "the terminal's settings changed"
    );
}

#[test]
fn claude_code_runs_interactively_with_no_first_run_screen() {
    let t = Tmux::start(120, 40);
    t.wait_for("outer$");
    t.keys(&[
        &format!(
            "env -u ANTHROPIC_API_KEY {} claude --no-project; echo EXIT=$?",
            env!("CARGO_BIN_EXE_computeragent")
        ),
        "Enter",
    ]);
    // Straight to the prompt: no onboarding, trust dialog or key question.
    let screen = t.wait_for("bypass permissions on");
    for first_run in [
        "trust",
        "Detected a custom API key",
        "Choose the text style",
    ] {
        assert!(!screen.contains(first_run), "{first_run}:\n{screen}");
    }
    t.keys(&["write the answer"]);
    std::thread::sleep(Duration::from_millis(300));
    t.keys(&["Enter"]);
    // The scripted demo model's tool call ran in the sandbox, and its answer came back.
    t.wait_for("(scripted demo model) I wrote answer.md");
    let screen = t.screen();
    assert!(
        screen.contains("shell command") || screen.contains("Bash"),
        "{screen}"
    );
    t.keys(&["/exit"]);
    std::thread::sleep(Duration::from_millis(300));
    t.keys(&["Enter"]);
    t.wait_for("EXIT=0");
}

#[test]
fn a_session_on_a_project_changes_it_only_on_approval() {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("README.md"), "hello\n").unwrap();
    let t = Tmux::start(110, 30);
    t.wait_for("outer$");
    let edit = "sh -c 'echo new > added.txt; echo changed >> README.md'";
    let bin = env!("CARGO_BIN_EXE_computeragent");
    let dir = project.path().display();
    // --no-apply: shown, not applied.
    t.keys(&[
        &format!("{bin} shell --project {dir} --no-apply -- {edit}; echo FIRST=$?"),
        "Enter",
    ]);
    let screen = t.wait_for("FIRST=0");
    assert!(
        screen.contains("M README.md") && screen.contains("A added.txt"),
        "{screen}"
    );
    assert!(screen.contains("not applied"), "{screen}");
    assert_eq!(
        std::fs::read_to_string(project.path().join("README.md")).unwrap(),
        "hello\n"
    );
    assert!(!project.path().join("added.txt").exists());
    // Asked on the terminal (the default): "n" leaves the project alone, and the answer is
    // the first thing typed after the session, not a key the session swallowed.
    t.keys(&["clear", "Enter"]);
    t.keys(&[
        &format!("{bin} shell --project {dir} -- {edit}; echo ASKED=$?"),
        "Enter",
    ]);
    t.wait_for("apply these changes to");
    t.keys(&["n", "Enter"]);
    let screen = t.wait_for("ASKED=0");
    assert!(screen.contains("not applied"), "{screen}");
    assert!(!project.path().join("added.txt").exists());
    // --apply=ask answered "y" once: applied.
    t.keys(&["clear", "Enter"]);
    t.keys(&[
        &format!(
            "{bin} shell --project {dir} --apply=ask -- sh -c 'echo asked > asked.txt'; \
             echo YES=$?"
        ),
        "Enter",
    ]);
    t.wait_for("apply these changes to");
    t.keys(&["y", "Enter"]);
    let screen = t.wait_for("YES=0");
    assert!(screen.contains("applied 1 change(s)"), "{screen}");
    assert_eq!(
        std::fs::read_to_string(project.path().join("asked.txt")).unwrap(),
        "asked\n"
    );
    // --apply: the project gets the changes.
    t.keys(&["clear", "Enter"]);
    t.keys(&[
        &format!("{bin} shell --project {dir} --apply -- {edit}; echo SECOND=$?"),
        "Enter",
    ]);
    let screen = t.wait_for("SECOND=0");
    assert!(screen.contains("applied 2 change(s)"), "{screen}");
    assert_eq!(
        std::fs::read_to_string(project.path().join("README.md")).unwrap(),
        "hello\nchanged\n"
    );
    assert_eq!(
        std::fs::read_to_string(project.path().join("added.txt")).unwrap(),
        "new\n"
    );
}

#[test]
fn excluded_entries_stay_out_of_the_copy_and_of_the_change_set() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("node_modules/dep")).unwrap();
    std::fs::create_dir_all(project.join("build/cache")).unwrap();
    std::fs::write(project.join("node_modules/dep/index.js"), "host\n").unwrap();
    std::fs::write(project.join("build/cache/blob"), "host\n").unwrap();
    std::fs::write(project.join("build/keep.txt"), "kept\n").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", project.join("leak")).unwrap();
    // One exclude from the user's config, one from the command line.
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "exclude = [\"node_modules\"]\n").unwrap();
    let t = Tmux::start(120, 30);
    t.wait_for("outer$");
    let probe = "sh -c 'for p in node_modules build/cache build/keep.txt; do \
                 test -e $p && echo has-$p || echo no-$p; done; \
                 mkdir -p node_modules/new build/cache; echo x > node_modules/new/f; \
                 echo x > build/cache/made; echo y > made.txt'";
    t.keys(&[
        &format!(
            "COMPUTERAGENT_CONFIG={} {} shell --project {} --exclude build/cache/ --apply -- {probe}; \
             echo DONE=$?",
            config.display(),
            env!("CARGO_BIN_EXE_computeragent"),
            project.display()
        ),
        "Enter",
    ]);
    let screen = t.wait_for("DONE=0");
    // What the copy left out, other than the excludes, is named.
    assert!(
        screen.contains("leak (a symlink out of the project)"),
        "{screen}"
    );
    for seen in ["no-node_modules", "no-build/cache", "has-build/keep.txt"] {
        assert!(screen.contains(seen), "{seen}:\n{screen}");
    }
    // Only the file outside the excluded entries is a change.
    assert!(screen.contains("A made.txt"), "{screen}");
    assert!(screen.contains("applied 1 change(s)"), "{screen}");
    assert!(!project.join("node_modules/new").exists());
    assert!(!project.join("build/cache/made").exists());
    assert_eq!(
        std::fs::read_to_string(project.join("node_modules/dep/index.js")).unwrap(),
        "host\n"
    );
}

#[test]
fn the_projects_runtime_script_runs_first_and_its_failure_ends_the_session() {
    let project = tempfile::tempdir().unwrap();
    let t = Tmux::start(100, 30);
    t.wait_for("outer$");
    the_runtime_script_runs_first(&t, "shell", project.path(), ".computeragent/runtime.sh");
}

#[test]
fn agent_vms_runtime_script_name_is_read_too() {
    let project = tempfile::tempdir().unwrap();
    let t = Tmux::start(100, 30);
    t.wait_for("outer$");
    the_runtime_script_runs_first(&t, "shell", project.path(), ".claude-vm.runtime.sh");
}

/// With the project's runtime script `script` (a path in the project): it runs in the sandbox,
/// in the project, before the program, its output shown; once it fails, the session ends
/// with its status and the program never runs.
fn the_runtime_script_runs_first(t: &Tmux, shell: &str, project: &std::path::Path, script: &str) {
    let script = project.join(script);
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(&script, "echo preparing; echo ready > prepared.txt\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_computeragent");
    let dir = project.display();
    let name = script.file_name().unwrap().to_string_lossy().into_owned();
    t.keys(&["clear", "Enter"]);
    t.keys(&[
        &format!("{bin} {shell} --project {dir} --no-apply -- cat prepared.txt; echo FIRST=$?"),
        "Enter",
    ]);
    let screen = t.wait_for("FIRST=0");
    assert!(
        screen.contains("running ") && screen.contains(&name),
        "{screen}"
    );
    assert!(
        screen.contains("preparing\r\n") || screen.contains("preparing\n"),
        "{screen}"
    );
    assert!(screen.contains("ready"), "{screen}");
    std::fs::write(&script, "echo broken >&2; exit 7\n").unwrap();
    t.keys(&["clear", "Enter"]);
    t.keys(&[
        &format!("{bin} {shell} --project {dir} --no-apply -- echo never-$((6*7)); echo SECOND=$?"),
        "Enter",
    ]);
    let screen = t.wait_for("SECOND=7");
    assert!(
        screen.contains(&format!("{name} failed with status 7")),
        "{screen}"
    );
    assert!(!screen.contains("never-42"), "{screen}");
}

#[cfg(feature = "lima")]
/// The `limactl` simulator, its base instance of this build (built once per store), and a
/// user config naming it.
fn lima_sim(config_dir: &std::path::Path) -> (substrate_testkit::guestsim::SimTools, String) {
    use runtime_lima::{LimaBase, LimaSubstrate};
    use substrate_testkit::guestsim::{GUEST_USER, SimTools};
    SimTools::check_host().unwrap();
    let root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guest-sim");
    let tools = SimTools::install(&root.join("bin"), &root.join("lima-home")).unwrap();
    tools.use_npm_mirror().unwrap();
    let hash = substrate_ssh_harness_hash();
    // A base of their own: the lima crate's tests build theirs with a setup script.
    let name = format!("cli-base-{}", &hash[..12]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = tools.store().clone();
        let lock = tokio::task::spawn_blocking(move || store.lock_named("build.lock"))
            .await
            .unwrap()
            .unwrap();
        if !tools.store().exists(&name) {
            for old in tools.store().names() {
                if old.starts_with("cli-base-") {
                    let _lock = tools.store().lock().unwrap();
                    tools.store().delete(&old).unwrap();
                }
            }
            let key = tools.store().root().join("_config/user");
            LimaSubstrate::new(LimaBase::Clone(name.clone()))
                .limactl(tools.limactl())
                .lima_home(tools.store().root())
                .state_dir(tools.store().root().join("state"))
                .login(
                    GUEST_USER,
                    vec![substrate_ssh::SshAuth::KeyFile {
                        path: key,
                        passphrase: None,
                    }],
                )
                .build_base(
                    "template://debian-12",
                    &name,
                    None,
                    substrate_core::BootSpec::new("build"),
                )
                .await
                .unwrap();
        }
        drop(lock);
    });
    std::fs::write(
        config_dir.join("computeragent.toml"),
        format!("lima_base = \"{name}\"\n"),
    )
    .unwrap();
    (tools, name)
}

/// Points the pane's shell at the simulator (`limactl` first on PATH, its `LIMA_HOME`, the
/// config naming the base). Its guests log in as `admin` with Lima's key, like `limactl shell`.
#[cfg(feature = "lima")]
fn use_lima_sim(
    t: &Tmux,
    tools: &substrate_testkit::guestsim::SimTools,
    config_dir: &std::path::Path,
) {
    let sim_bin = tools.limactl().parent().unwrap().display().to_string();
    t.keys(&[
        &format!(
            "export USER=admin LIMA_HOME={} PATH={sim_bin}:$PATH COMPUTERAGENT_CONFIG={}",
            tools.store().root().display(),
            config_dir.join("computeragent.toml").display()
        ),
        "Enter",
    ]);
}

#[cfg(any(feature = "lima", feature = "tart-on-any-os"))]
fn substrate_ssh_harness_hash() -> String {
    substrate_ssh::guest::harness_dir()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[cfg(feature = "lima")]
#[test]
fn a_shell_in_a_lima_vm_behaves_like_a_terminal_and_its_changes_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let (tools, _base) = lima_sim(dir.path());
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("README.md"), "hello\n").unwrap();
    let before = dir.path().join("before");
    let after = dir.path().join("after");
    let t = Tmux::start(80, 24);
    t.wait_for("outer$");
    use_lima_sim(&t, &tools, dir.path());
    t.keys(&[
        &format!(
            "stty -g > {}; {} shell --runtime lima --net host --project {} --apply; \
             echo EXIT=$?; stty -g > {}",
            before.display(),
            env!("CARGO_BIN_EXE_computeragent"),
            project.display(),
            after.display()
        ),
        "Enter",
    ]);
    t.keys(&[
        "echo who=$(id -un) size=$(stty size) in=$(cat README.md)",
        "Enter",
    ]);
    t.wait_for("who=admin size=24 80 in=hello");
    let screen =
        t.resize_interrupt_and_exit("echo made-in-the-vm > vm.txt", || {}, &before, &after);
    assert!(screen.contains("A vm.txt"), "{screen}");
    assert_eq!(
        std::fs::read_to_string(project.join("vm.txt")).unwrap(),
        "made-in-the-vm\n"
    );
    // No instance is left by a command that has ended (other tests' live ones may run).
    let left: Vec<String> = tools
        .store()
        .names()
        .into_iter()
        .filter(|n| of_an_ended_process(n, runtime_lima::DEFAULT_PREFIX))
        .collect();
    assert!(left.is_empty(), "instances left: {left:?}");
}

#[cfg(feature = "lima")]
#[test]
fn the_projects_runtime_script_runs_first_in_a_lima_vm() {
    let dir = tempfile::tempdir().unwrap();
    let (tools, _base) = lima_sim(dir.path());
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let t = Tmux::start(100, 30);
    t.wait_for("outer$");
    use_lima_sim(&t, &tools, dir.path());
    the_runtime_script_runs_first(
        &t,
        "shell --runtime lima --net host",
        &project,
        ".computeragent/runtime.sh",
    );
}

#[cfg(feature = "lima")]
#[test]
fn claude_code_runs_interactively_in_a_lima_vm() {
    let dir = tempfile::tempdir().unwrap();
    let (tools, _base) = lima_sim(dir.path());
    let t = Tmux::start(120, 40);
    t.wait_for("outer$");
    use_lima_sim(&t, &tools, dir.path());
    t.keys(&[
        &format!(
            "env -u ANTHROPIC_API_KEY {} claude --runtime lima --net host --no-project; echo EXIT=$?",
            env!("CARGO_BIN_EXE_computeragent")
        ),
        "Enter",
    ]);
    let screen = t.wait_for("bypass permissions on");
    for first_run in [
        "trust",
        "Detected a custom API key",
        "Choose the text style",
    ] {
        assert!(!screen.contains(first_run), "{first_run}:\n{screen}");
    }
    t.keys(&["write the answer"]);
    std::thread::sleep(Duration::from_millis(300));
    t.keys(&["Enter"]);
    // The model is on the host; the VM reaches it through the credential broker's forward.
    t.wait_for("(scripted demo model) I wrote answer.md");
    t.keys(&["/exit"]);
    std::thread::sleep(Duration::from_millis(300));
    t.keys(&["Enter"]);
    t.wait_for("EXIT=0");
}

#[test]
fn a_mounted_project_is_written_in_place_in_rw_mode_and_never_in_ro_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let project = dir.path().join("app");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("README.md"), "the app\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_computeragent");
    let p = project.display();
    let t = Tmux::start(140, 30);
    t.wait_for("outer$");
    // As root, a read-write project runs the sandbox as its owner, never as root.
    t.keys(&[
        &format!("{bin} shell --project {p} --mode rw -- true; echo ROOT=$?"),
        "Enter",
    ]);
    let screen = t.wait_for("owned by root");
    assert!(!screen.contains("ROOT=0"), "{screen}");
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&project)
        .status()
        .unwrap();
    assert!(status.success());
    t.keys(&["clear", "Enter"]);
    t.keys(&[
        &format!(
            "{bin} shell --project {p} --mode rw -- sh -c 'echo in=$(pwd); echo rw > made.txt'; \
             echo RW=$?"
        ),
        "Enter",
    ]);
    let screen = t.wait_for("RW=0");
    assert!(screen.contains("READ-WRITE"), "{screen}");
    assert!(screen.contains(&format!("in={p}")), "{screen}");
    assert_eq!(
        std::fs::read_to_string(project.join("made.txt")).unwrap(),
        "rw\n"
    );
    a_read_only_project_refuses_writes(&t, "shell", &project);
}

#[test]
fn a_shell_into_a_warm_sandbox_of_the_server_leaves_it_running() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    /// Stops the server however the test ends.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
    let server = Command::new(env!("CARGO_BIN_EXE_computeragent"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("COMPUTERAGENT_TOKENS", "into-token")
        .env(
            "COMPUTERAGENT_STAGE_DIR",
            substrate_testkit::stage::stage_dir(),
        )
        .env("COMPUTERAGENT_CONFIG", "/nonexistent/computeragent.toml")
        .env_remove("ANTHROPIC_API_KEY")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(server);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let id: String = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{base}/health")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the server never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let created: serde_json::Value = http
            .post(format!("{base}/v1/sandboxes"))
            .bearer_auth("into-token")
            .json(&serde_json::json!({"files": [{"path": "brief.txt", "content": "warm brief"}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        created["id"].as_str().unwrap().to_owned()
    });
    let t = Tmux::start(120, 30);
    t.wait_for("outer$");
    t.keys(&[
        &format!(
            "{} shell --into {id} -- sh -c 'echo in=$(hostname) as=$(id -un) \
             has=\"$(find /workdir -name brief.txt -exec cat {{}} \\;)\"; exit 3'; echo EXIT=$?",
            env!("CARGO_BIN_EXE_computeragent")
        ),
        "Enter",
    ]);
    let screen = t.wait_for("EXIT=3");
    assert!(
        screen.contains("in=sandbox as=agent has=warm brief"),
        "{screen}"
    );
    // The same through the server's terminal route (any runtime with terminals; no root).
    t.keys(&["clear", "Enter"]);
    t.keys(&[
        &format!(
            "COMPUTERAGENT_TOKEN=into-token {} shell --into {id} --server {base} -- sh -c \
             'echo via=$(hostname) rows=$(stty size); exit 4'; echo REMOTE=$?",
            env!("CARGO_BIN_EXE_computeragent")
        ),
        "Enter",
    ]);
    let screen = t.wait_for("REMOTE=4");
    assert!(screen.contains("via=sandbox rows=30 120"), "{screen}");
    // A wrong token is refused with the server's answer.
    t.keys(&[
        &format!(
            "COMPUTERAGENT_TOKEN=wrong {} shell --into {id} --server {base}; echo BAD=$?",
            env!("CARGO_BIN_EXE_computeragent")
        ),
        "Enter",
    ]);
    let screen = t.wait_for("401");
    assert!(!screen.contains("BAD=0"), "{screen}");
    // The sandbox lives on: its files are still served.
    runtime.block_on(async {
        let tree = http
            .get(format!("{base}/v1/sandboxes/{id}/tree"))
            .bearer_auth("into-token")
            .send()
            .await
            .unwrap();
        assert_eq!(tree.status(), 200);
    });
    drop(server);
}

#[test]
fn what_the_runtime_script_made_stays_out_of_the_change_set_unless_the_agent_touched_it() {
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir(project.path().join(".computeragent")).unwrap();
    std::fs::write(
        project.path().join(".computeragent/runtime.sh"),
        "mkdir -p deps/sub; echo dep > deps/sub/lib.js; echo dep2 > deps/touched.js; \
         echo regenerated > lock.txt\n",
    )
    .unwrap();
    std::fs::write(project.path().join("lock.txt"), "original\n").unwrap();
    let t = Tmux::start(120, 30);
    t.wait_for("outer$");
    t.keys(&[
        &format!(
            "{} shell --project {} --no-apply -- sh -c 'echo agent work > work.txt; \
             echo agent-edit >> deps/touched.js'; echo DONE=$?",
            env!("CARGO_BIN_EXE_computeragent"),
            project.path().display()
        ),
        "Enter",
    ]);
    let screen = t.wait_for("DONE=0");
    assert!(screen.contains("left out 2 file(s)"), "{screen}");
    assert!(screen.contains("A work.txt"), "{screen}");
    assert!(screen.contains("A deps/touched.js"), "{screen}");
    for hidden in ["lib.js", "lock.txt", "script-output", "deps/sub"] {
        assert!(!screen.contains(hidden), "{hidden}:\n{screen}");
    }
}

/// Types a request to Claude Code in the pane, waits for the scripted answer, exits it, and
/// returns the screen once the command ended.
/// Whether `name` (`PREFIX<pid>-…`, as the runtimes name their VMs and containers) belongs to
/// a process that has ended: one left behind, as other tests' live ones are not.
#[cfg_attr(not(feature = "lima"), allow(dead_code))]
fn of_an_ended_process(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.split('-').next())
        .is_some_and(|pid| !std::path::Path::new("/proc").join(pid).exists())
}

fn ask_claude_and_exit(t: &Tmux, done: &str) -> String {
    let screen = t.wait_for("bypass permissions on");
    for first_run in [
        "trust",
        "Detected a custom API key",
        "Choose the text style",
    ] {
        assert!(!screen.contains(first_run), "{first_run}:\n{screen}");
    }
    t.keys(&["write the answer"]);
    std::thread::sleep(Duration::from_millis(300));
    t.keys(&["Enter"]);
    t.wait_for("(scripted demo model) I wrote answer.md");
    t.keys(&["/exit"]);
    std::thread::sleep(Duration::from_millis(300));
    t.keys(&["Enter"]);
    t.wait_for(done)
}

/// Starts `computeragent ARGS; echo EXIT=$?` (no real key in its environment), asks Claude Code
/// to write its answer, and checks that the answer reached `project` and Claude Code's own files
/// did not. Returns the screen at the end, the review on it.
fn claude_writes_its_answer_into(t: &Tmux, args: &str, project: &std::path::Path) -> String {
    t.keys(&[
        &format!(
            "env -u ANTHROPIC_API_KEY {} {args}; echo EXIT=$?",
            env!("CARGO_BIN_EXE_computeragent")
        ),
        "Enter",
    ]);
    let screen = ask_claude_and_exit(t, "EXIT=0");
    assert!(screen.contains("A answer.md"), "{screen}");
    let answer = std::fs::read_to_string(project.join("answer.md")).unwrap();
    assert!(
        answer.contains("Written by the agent in its sandbox"),
        "{answer}"
    );
    // Claude Code's own files stay out of the project (its HOME is the sandbox's).
    assert!(!project.join(".claude.json").exists());
    screen
}

/// `computeragent SHELL --project DIR --mode rw` then `--mode ro` on a VM runtime, through
/// tmux: in rw, `probe` prints `seen` (who, size, where, the project's file), a write lands on
/// the host before the session ends, and the terminal checks of
/// [`Tmux::resize_interrupt_and_exit`] hold; in ro, the project reads and refuses a write.
#[cfg(any(feature = "tart-on-any-os", feature = "apple-container-on-any-os"))]
fn a_mounted_project_in_rw_then_ro(
    t: &Tmux,
    shell: &str,
    project: &std::path::Path,
    scratch: &std::path::Path,
    probe: &str,
    seen: &str,
) {
    let bin = env!("CARGO_BIN_EXE_computeragent");
    let p = project.display();
    let before = scratch.join("before");
    let after = scratch.join("after");
    t.keys(&[
        &format!(
            "stty -g > {}; {bin} {shell} --project {p} --mode rw; echo EXIT=$?; stty -g > {}",
            before.display(),
            after.display()
        ),
        "Enter",
    ]);
    t.keys(&[probe, "Enter"]);
    let screen = t.wait_for(seen);
    assert!(screen.contains("READ-WRITE"), "{screen}");
    // Written on the host at once, before the session ends.
    t.resize_interrupt_and_exit(
        "echo in-place > made.txt",
        || {
            assert_eq!(
                std::fs::read_to_string(project.join("made.txt")).unwrap(),
                "in-place\n"
            )
        },
        &before,
        &after,
    );

    a_read_only_project_refuses_writes(t, shell, project);
}

/// `computeragent SHELL --project DIR --mode ro`: the project (whose README.md says "the
/// app") reads inside, and a write to it is refused.
fn a_read_only_project_refuses_writes(t: &Tmux, shell: &str, project: &std::path::Path) {
    let bin = env!("CARGO_BIN_EXE_computeragent");
    let p = project.display();
    t.keys(&["clear", "Enter"]);
    t.keys(&[
        &format!(
            "{bin} {shell} --project {p} --mode ro -- sh -c 'cat README.md; echo x > ro.txt || \
             echo refused-$((40+2))'; echo RO=$?"
        ),
        "Enter",
    ]);
    let screen = t.wait_for("RO=0");
    assert!(
        screen.contains("the app") && screen.contains("refused-42"),
        "{screen}"
    );
    assert!(!project.join("ro.txt").exists());
}

#[test]
fn claude_codes_file_lands_in_the_project_with_apply() {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("README.md"), "the project\n").unwrap();
    let t = Tmux::start(140, 40);
    t.wait_for("outer$");
    let args = format!("claude --project {} --apply", project.path().display());
    let screen = claude_writes_its_answer_into(&t, &args, project.path());
    assert!(screen.contains("applied 1 change(s)"), "{screen}");
}

#[cfg(feature = "lima")]
#[test]
fn claude_codes_file_lands_in_the_project_from_a_lima_vm() {
    let dir = tempfile::tempdir().unwrap();
    let (tools, _base) = lima_sim(dir.path());
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("README.md"), "the project\n").unwrap();
    let t = Tmux::start(140, 40);
    t.wait_for("outer$");
    use_lima_sim(&t, &tools, dir.path());
    let args = format!(
        "claude --runtime lima --net host --project {} --apply",
        project.display()
    );
    claude_writes_its_answer_into(&t, &args, &project);
}

/// The `tart` simulator with its vanilla image, the prepared image of this build (built once
/// per store by `computeragent prepare --runtime tart`), and a user config naming it. Built
/// with `--features tart-on-any-os`, which `cargo xtask test` runs these tests with.
#[cfg(feature = "tart-on-any-os")]
fn tart_sim(config_dir: &std::path::Path) -> substrate_testkit::guestsim::SimTools {
    use substrate_testkit::guestsim::SimTools;
    SimTools::check_host().unwrap();
    let root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guest-sim");
    let tools = SimTools::install(&root.join("bin"), &root.join("tart-home")).unwrap();
    tools.ensure_vanilla_image("vanilla").unwrap();
    // The tart crate's tests prepare the same image the same way, under the same lock.
    let name = format!("prepared-{}", &substrate_ssh_harness_hash()[..12]);
    let config = config_dir.join("computeragent.toml");
    std::fs::write(&config, format!("tart_image = \"{name}\"\n")).unwrap();
    let lock = tools.store().lock_named("prepare.lock").unwrap();
    if !tools.store().exists(&name) {
        for old in tools.store().names() {
            if old.starts_with("prepared-") {
                let _lock = tools.store().lock().unwrap();
                tools.store().delete(&old).unwrap();
            }
        }
        let out = Command::new(env!("CARGO_BIN_EXE_computeragent"))
            .args(["prepare", "--runtime", "tart", "--from", "vanilla"])
            .env("PATH", tart_path(&tools))
            .env("TART_HOME", tools.store().root())
            .env("XDG_STATE_HOME", tart_state(&tools))
            .env("COMPUTERAGENT_CONFIG", &config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "computeragent prepare --runtime tart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(lock);
    tools
}

/// Where the CLI keeps the tart runtime's state (the images' recorded host keys) for these
/// tests: beside the simulator's images, so it lives and goes with them, and never in the
/// user's own state directory.
#[cfg(feature = "tart-on-any-os")]
fn tart_state(tools: &substrate_testkit::guestsim::SimTools) -> std::path::PathBuf {
    tools.store().root().join("cli-state")
}

/// PATH with the simulated `tart` first.
#[cfg(feature = "tart-on-any-os")]
fn tart_path(tools: &substrate_testkit::guestsim::SimTools) -> String {
    format!(
        "{}:{}",
        tools.tart().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Points the pane's shell at the tart simulator and the config naming its image.
#[cfg(feature = "tart-on-any-os")]
fn use_tart_sim(
    t: &Tmux,
    tools: &substrate_testkit::guestsim::SimTools,
    config_dir: &std::path::Path,
) {
    t.keys(&[
        &format!(
            "export TART_HOME={} XDG_STATE_HOME={} PATH={} COMPUTERAGENT_CONFIG={}",
            tools.store().root().display(),
            tart_state(tools).display(),
            tart_path(tools),
            config_dir.join("computeragent.toml").display()
        ),
        "Enter",
    ]);
}

/// VMs of this simulator whose owning process is gone (a command that ended left them).
#[cfg(feature = "tart-on-any-os")]
fn orphan_tart_vms(tools: &substrate_testkit::guestsim::SimTools) -> Vec<String> {
    tools
        .store()
        .names()
        .into_iter()
        .filter(|n| of_an_ended_process(n, "computeragent-"))
        .collect()
}

#[cfg(feature = "tart-on-any-os")]
#[test]
fn claude_codes_file_lands_in_the_project_from_a_tart_vm() {
    let dir = tempfile::tempdir().unwrap();
    let tools = tart_sim(dir.path());
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("README.md"), "the project\n").unwrap();
    let t = Tmux::start(140, 40);
    t.wait_for("outer$");
    use_tart_sim(&t, &tools, dir.path());
    // No network for the VM: the model is reached only through the broker's forward.
    let args = format!(
        "claude --runtime tart --net none --project {} --apply",
        project.display()
    );
    claude_writes_its_answer_into(&t, &args, &project);
    assert_eq!(orphan_tart_vms(&tools), Vec::<String>::new());
}

#[cfg(feature = "tart-on-any-os")]
#[test]
fn the_projects_runtime_script_runs_first_in_a_tart_vm() {
    let dir = tempfile::tempdir().unwrap();
    let tools = tart_sim(dir.path());
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let t = Tmux::start(100, 30);
    t.wait_for("outer$");
    use_tart_sim(&t, &tools, dir.path());
    the_runtime_script_runs_first(
        &t,
        "shell --runtime tart",
        &project,
        ".computeragent/runtime.sh",
    );
    assert_eq!(orphan_tart_vms(&tools), Vec::<String>::new());
}

#[cfg(feature = "tart-on-any-os")]
#[test]
fn a_shell_in_a_tart_vm_behaves_like_a_terminal_on_a_shared_project() {
    let dir = tempfile::tempdir().unwrap();
    let tools = tart_sim(dir.path());
    let project = dir.path().join("app");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("README.md"), "the app\n").unwrap();
    // The project is the VM user's, as a person's own project is theirs: a share passes the
    // host's owners through, and the guest's `admin` is uid 1000.
    let status = Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(&project)
        .status()
        .unwrap();
    assert!(status.success());
    let t = Tmux::start(80, 24);
    t.wait_for("outer$");
    use_tart_sim(&t, &tools, dir.path());
    // The project is shared into the VM (`tart run --dir`, `:ro` for ro).
    a_mounted_project_in_rw_then_ro(
        &t,
        "shell --runtime tart",
        &project,
        dir.path(),
        "echo who=$(id -un) size=$(stty size) in=$(pwd) has=$(cat README.md)",
        "who=admin size=24 80 in=/mnt/shared/project has=the app",
    );
    assert_eq!(orphan_tart_vms(&tools), Vec::<String>::new());
}

/// The `container` simulator with the harness image of this build (laid out as the
/// Containerfile of `ImageRecipe` does, as the container runtime's own tests do), and a user
/// config naming it. Built with `--features apple-container-on-any-os`, which `cargo xtask
/// test` runs these tests with.
#[cfg(feature = "apple-container-on-any-os")]
fn container_sim(config_dir: &std::path::Path) -> substrate_testkit::guestsim::SimTools {
    use substrate_testkit::guestsim::{ContainerImage, SimTools};
    SimTools::check_host().unwrap();
    let root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guest-sim");
    let tools =
        SimTools::install(&root.join("container-bin"), &root.join("container-home")).unwrap();
    let recipe = runtime_applecontainer::ImageRecipe::for_this_build();
    let modules = substrate_testkit::stage::ensure_staged().unwrap();
    let context = config_dir.join("image-context");
    recipe.write_context(&context).unwrap();
    let dir = &recipe.harness_dir;
    let mut files: Vec<_> = ["harness.mjs", "package.json", "package-lock.json"]
        .iter()
        .map(|f| (context.join(f), format!("{dir}/{f}")))
        .collect();
    files.push((modules, format!("{dir}/node_modules")));
    tools
        .ensure_container_image(&ContainerImage {
            reference: recipe.tag.clone(),
            files,
            dirs: vec![
                (recipe.home.clone(), recipe.uid, recipe.uid, 0o755),
                (recipe.workdir_root(), recipe.uid, recipe.uid, 0o755),
            ],
            cmd: recipe.cmd(),
            user: (recipe.uid, recipe.uid),
            env: recipe.env(),
            workdir: recipe.home.clone(),
        })
        .unwrap();
    std::fs::write(
        config_dir.join("computeragent.toml"),
        format!("container_image = \"{}\"\n", recipe.tag),
    )
    .unwrap();
    tools
}

/// Points the pane's shell at the container simulator, the runtime's state beside its store.
#[cfg(feature = "apple-container-on-any-os")]
fn use_container_sim(
    t: &Tmux,
    tools: &substrate_testkit::guestsim::SimTools,
    config_dir: &std::path::Path,
) {
    t.keys(&[
        &format!(
            "export XDG_STATE_HOME={} PATH={}:$PATH COMPUTERAGENT_CONFIG={}",
            tools.container_store_root().join("cli-state").display(),
            tools.container().parent().unwrap().display(),
            config_dir.join("computeragent.toml").display()
        ),
        "Enter",
    ]);
}

/// Containers of this simulator whose owning process is gone.
#[cfg(feature = "apple-container-on-any-os")]
fn orphan_containers(tools: &substrate_testkit::guestsim::SimTools) -> Vec<String> {
    let out = Command::new(tools.container())
        .args(["list", "--all", "--format", "json"])
        .output()
        .unwrap();
    runtime_applecontainer::argv::parse_containers(&out.stdout)
        .unwrap()
        .into_iter()
        .map(|c| c.configuration.id)
        .filter(|n| of_an_ended_process(n, "computeragent-"))
        .collect()
}

#[cfg(feature = "apple-container-on-any-os")]
#[test]
fn claude_codes_file_lands_in_the_project_from_a_container() {
    let dir = tempfile::tempdir().unwrap();
    let tools = container_sim(dir.path());
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("README.md"), "the project\n").unwrap();
    let t = Tmux::start(140, 40);
    t.wait_for("outer$");
    use_container_sim(&t, &tools, dir.path());
    let args = format!(
        "claude --runtime apple-container --net host --project {} --apply",
        project.display()
    );
    claude_writes_its_answer_into(&t, &args, &project);
    assert_eq!(orphan_containers(&tools), Vec::<String>::new());
}

#[cfg(feature = "apple-container-on-any-os")]
#[test]
fn the_projects_runtime_script_runs_first_in_a_container() {
    let dir = tempfile::tempdir().unwrap();
    let tools = container_sim(dir.path());
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let t = Tmux::start(100, 30);
    t.wait_for("outer$");
    use_container_sim(&t, &tools, dir.path());
    the_runtime_script_runs_first(
        &t,
        "shell --runtime apple-container --net host",
        &project,
        ".computeragent/runtime.sh",
    );
    assert_eq!(orphan_containers(&tools), Vec::<String>::new());
}

#[cfg(feature = "apple-container-on-any-os")]
#[test]
fn a_shell_in_a_container_behaves_like_a_terminal_on_a_mounted_project() {
    let dir = tempfile::tempdir().unwrap();
    let tools = container_sim(dir.path());
    let project = dir.path().join("app");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("README.md"), "the app\n").unwrap();
    // The project is the container user's, as a person's own project is theirs.
    let uid = runtime_applecontainer::ImageRecipe::for_this_build().uid;
    let status = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(&project)
        .status()
        .unwrap();
    assert!(status.success());
    let t = Tmux::start(80, 24);
    t.wait_for("outer$");
    use_container_sim(&t, &tools, dir.path());
    // The project is a volume at its own path (read-only for ro).
    a_mounted_project_in_rw_then_ro(
        &t,
        "shell --runtime apple-container --net host",
        &project,
        dir.path(),
        "echo size=$(stty size) in=$(pwd) has=$(cat README.md)",
        &format!("size=24 80 in={} has=the app", project.display()),
    );
    assert_eq!(orphan_containers(&tools), Vec::<String>::new());
}
