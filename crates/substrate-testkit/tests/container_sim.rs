//! The `container` simulator on real Linux guests: a detached container serves its published
//! port as the image's user with the env file's variables, `--read-only` leaves only its
//! tmpfs writable, failures (taken port, missing image, stopped service) say what the real
//! CLI says and leave nothing behind, and stop/delete/`--rm` remove every trace: namespace,
//! veth, lease, mounts, daemon.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use substrate_testkit::guestsim::container::{self as csim, ContainerState};
use substrate_testkit::guestsim::vm::alive;
use substrate_testkit::guestsim::{ContainerFaults, ContainerImage, SimTools};

/// The test image: a tiny HTTP server on `$PORT` that reports what it sees and tries writes.
const IMAGE: &str = "simtest/server:1";
const PORT: u16 = 8080;

const SERVER: &str = r#"
const http = require('http'), fs = require('fs'), os = require('os');
http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/write') {
    try { fs.writeFileSync(url.searchParams.get('path'), 'x'); res.end('ok'); }
    catch (e) { res.end('error ' + e.code); }
    return;
  }
  res.end(JSON.stringify({
    greeting: process.env.GREETING, other: process.env.OTHER, uid: process.getuid(),
    gid: process.getgid(), cwd: process.cwd(), home: process.env.HOME, hostname: os.hostname(),
    file: fs.readFileSync('/opt/app/hello.txt', 'utf8'),
  }));
}).listen(Number(process.env.PORT), '0.0.0.0');
"#;

/// The simulator in a directory of this test's own; deletes every container and the
/// directory when the test ends, passed or failed.
struct Sim {
    tools: SimTools,
    root: PathBuf,
}

impl std::ops::Deref for Sim {
    type Target = SimTools;
    fn deref(&self) -> &SimTools {
        &self.tools
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.tools.set_container_service(true);
        let _ = container(&self.tools, &["delete", "--all", "--force"]);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The simulator in a directory of this test's own, with the test image in its store.
fn sim(test: &str) -> Sim {
    SimTools::check_host().unwrap();
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("container-sim-{test}-{}", std::process::id()));
    let tools = SimTools::install(&root.join("bin"), &root.join("home")).unwrap();
    let hello = root.join("hello.txt");
    std::fs::write(&hello, "hello from the image\n").unwrap();
    tools
        .ensure_container_image(&ContainerImage {
            reference: IMAGE.into(),
            files: vec![(hello, "/opt/app/hello.txt".into())],
            dirs: vec![("/home/node".into(), 1000, 1000, 0o755)],
            cmd: vec!["node".into(), "-e".into(), SERVER.into()],
            user: (1000, 1000),
            env: vec![
                ("PORT".into(), PORT.to_string()),
                ("GREETING".into(), "from the image".into()),
            ],
            workdir: "/home/node".into(),
        })
        .unwrap();
    Sim { tools, root }
}

fn container(tools: &SimTools, args: &[&str]) -> Output {
    Command::new(tools.container()).args(args).output().unwrap()
}

/// Runs `container args…`, which must succeed; returns its stdout.
fn ok(tools: &SimTools, args: &[&str]) -> String {
    let out = container(tools, args);
    assert!(
        out.status.success(),
        "container {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `container args…`, which must fail with exit 1; returns its stderr.
fn fails(tools: &SimTools, args: &[&str]) -> String {
    let out = container(tools, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "container {args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn inspect(tools: &SimTools, id: &str) -> Option<Value> {
    let out = container(tools, &["inspect", id]);
    if !out.status.success() {
        return None;
    }
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1);
    list.into_iter().next()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of `GET path` on 127.0.0.1:`port`, if something answers.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// `GET path`, retried until the server answers.
fn get_until(port: u16, path: &str) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(body) = get(port, path) {
            return body;
        }
        assert!(Instant::now() < until, "nothing answers on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state(tools: &SimTools, id: &str) -> ContainerState {
    tools.container_store().state(id).unwrap()
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Nothing of the run in `state` is left: no daemon, no lease, no namespace or veth (unless
/// another live container took the lease since), no mount of the container's directory.
fn assert_nothing_left(tools: &SimTools, id: &str, state: &ContainerState) {
    assert!(inspect(tools, id).is_none(), "{id} still exists");
    let dir = tools.container_store().container_dir(id);
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(!alive(state.pid), "the daemon of {id} still runs");
    let leases = csim::leases();
    assert!(
        !leases.contains(&(state.lease.unwrap(), state.pid)),
        "the lease of {id} is left"
    );
    for (n, owner) in &leases {
        assert!(alive(*owner), "lease {n} of a dead owner {owner}");
    }
    let n = state.lease.unwrap();
    let reused = leases.iter().any(|(l, owner)| *l == n && alive(*owner));
    if !reused {
        assert!(!netns_exists(&csim::netns_name(n)), "netns of {id} is left");
        assert!(!link_exists(&csim::host_link(n)), "veth of {id} is left");
    }
    let needle = dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(mounts) = std::fs::read_to_string(entry.path().join("mountinfo")) {
            assert!(
                !mounts.contains(&needle),
                "a mount of {id} is left in {}",
                entry.path().display()
            );
        }
    }
}

#[test]
fn a_detached_container_serves_its_published_port_until_stopped_and_deleted() {
    let tools = sim("serve");
    let root = tools.container_store_root();
    let env_file = root.join("app.env");
    std::fs::write(
        &env_file,
        "# the greeting\n\nGREETING=hello from the env file\nOTHER=overridden\n",
    )
    .unwrap();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:{PORT}/tcp");
    let out = ok(
        &tools,
        &[
            "run",
            "--detach",
            "--name",
            "web",
            "--cpus",
            "2",
            "--memory=512M",
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "OTHER=from -e",
            "--publish",
            &publish,
            "--label",
            "purpose=test",
            IMAGE,
        ],
    );
    assert_eq!(out.trim(), "web");
    // The env file was read before `run` returned.
    std::fs::remove_file(&env_file).unwrap();

    let body: Value = serde_json::from_str(&get_until(port, "/")).unwrap();
    assert_eq!(body["greeting"], "hello from the env file");
    assert_eq!(body["other"], "from -e");
    assert_eq!(body["uid"], 1000);
    assert_eq!(body["gid"], 1000);
    assert_eq!(body["cwd"], "/home/node");
    assert_eq!(body["home"], "/home/node");
    assert_eq!(body["hostname"], "web");
    assert_eq!(body["file"], "hello from the image\n");
    // Without --read-only the image's directories are the container's own to write.
    assert_eq!(
        get_until(port, "/write?path=/home/node/note"),
        "ok",
        "home is writable"
    );
    assert_eq!(get_until(port, "/write?path=/opt/app/new"), "error EACCES");

    let info = inspect(&tools, "web").unwrap();
    assert_eq!(info["status"], "running");
    let address = info["networks"][0]["address"].as_str().unwrap();
    assert!(address.starts_with("10.214.0.") && address.ends_with("/24"));
    assert_eq!(info["networks"][0]["gateway"], "10.214.0.1");
    let config = &info["configuration"];
    assert_eq!(config["id"], "web");
    assert_eq!(config["image"]["reference"], IMAGE);
    assert_eq!(config["labels"]["purpose"], "test");
    assert_eq!(config["resources"]["cpus"], 2);
    assert_eq!(config["resources"]["memoryInBytes"], 512u64 << 20);
    assert_eq!(config["publishedPorts"][0]["hostPort"], port);
    assert_eq!(config["publishedPorts"][0]["containerPort"], PORT);
    // The gateway is the host: the container reaches a host listener on it.
    let host = TcpListener::bind((csim::GATEWAY, 0)).unwrap();
    let host_port = host.local_addr().unwrap().port();
    let script = format!(
        "require('net').connect({host_port}, '10.214.0.1', function () {{ this.end('hi') }})"
    );
    ok(
        &tools,
        &[
            "run", "-d", "--rm", "--name", "caller", IMAGE, "node", "-e", &script,
        ],
    );
    let (mut conn, _) = host.accept().unwrap();
    let mut said = String::new();
    conn.read_to_string(&mut said).unwrap();
    assert_eq!(said, "hi");

    let listed: Vec<Value> =
        serde_json::from_str(&ok(&tools, &["list", "--format", "json"])).unwrap();
    assert!(listed.iter().any(|c| c["configuration"]["id"] == "web"));
    assert!(ok(&tools, &["ls", "-q"]).lines().any(|l| l == "web"));
    let again = fails(&tools, &["run", "-d", "--name", "web", IMAGE]);
    assert!(
        again.contains("exists: \"container with id web already exists\""),
        "{again}"
    );
    let running = fails(&tools, &["delete", "web"]);
    assert!(
        running.contains("web is running, stop it first or use --force"),
        "{running}"
    );

    let before = state(&tools, "web");
    ok(&tools, &["stop", "--time", "5", "web"]);
    let info = inspect(&tools, "web").unwrap();
    assert_eq!(info["status"], "stopped");
    assert_eq!(info["exitCode"], 128 + 15, "node dies of SIGTERM");
    assert_eq!(info["networks"], Value::Array(Vec::new()));
    assert!(get(port, "/").is_none(), "the port is closed");
    ok(&tools, &["stop", "web"]);
    assert!(ok(&tools, &["list", "-q"]).lines().all(|l| l != "web"));
    assert!(
        ok(&tools, &["list", "--all", "-q"])
            .lines()
            .any(|l| l == "web")
    );

    ok(&tools, &["delete", "web"]);
    let missing = fails(&tools, &["inspect", "web"]);
    assert!(
        missing.contains("notFound: \"container web not found\""),
        "{missing}"
    );
    assert_nothing_left(&tools, "web", &before);
    assert!(fails(&tools, &["delete", "web"]).contains("notFound"));

    let calls = tools.container_calls();
    assert!(
        calls
            .iter()
            .any(|c| c.first().map(String::as_str) == Some("run") && c.contains(&"web".to_owned()))
    );
}

#[test]
fn a_read_only_container_writes_only_to_its_tmpfs_and_volumes() {
    let tools = sim("readonly");
    let shared = tools.container_store_root().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::chown(&shared, Some(1000), Some(1000)).unwrap();
    let volume = format!("{}:/home/node/shared", shared.display());
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:{PORT}");
    ok(
        &tools,
        &[
            "run",
            "-d",
            "--name",
            "ro",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--volume",
            &volume,
            "-w",
            "/home/node/shared",
            "-p",
            &publish,
            IMAGE,
        ],
    );
    let body: Value = serde_json::from_str(&get_until(port, "/")).unwrap();
    assert_eq!(body["cwd"], "/home/node/shared");
    assert_eq!(get_until(port, "/write?path=/x"), "error EROFS");
    assert_eq!(
        get_until(port, "/write?path=/home/node/note"),
        "error EROFS"
    );
    assert_eq!(get_until(port, "/write?path=/etc/motd"), "error EROFS");
    assert_eq!(get_until(port, "/write?path=/tmp/note"), "ok");
    assert_eq!(
        get_until(port, "/write?path=/home/node/shared/out.txt"),
        "ok"
    );
    assert_eq!(
        std::fs::read_to_string(shared.join("out.txt")).unwrap(),
        "x"
    );

    let before = state(&tools, "ro");
    ok(&tools, &["delete", "--force", "ro"]);
    assert_nothing_left(&tools, "ro", &before);
}

#[test]
fn a_taken_host_port_fails_the_run_and_leaves_nothing() {
    let tools = sim("taken");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let leases_before = csim::leases().len();
    let publish = format!("127.0.0.1:{port}:{PORT}");
    let said = fails(
        &tools,
        &["run", "-d", "--name", "clash", "-p", &publish, IMAGE],
    );
    assert!(said.contains(&format!("127.0.0.1:{port}")), "{said}");
    assert!(said.contains("address already in use"), "{said}");
    assert!(inspect(&tools, "clash").is_none());
    assert!(!tools.container_store().container_dir("clash").exists());
    assert!(tools.container_store().ids().is_empty());
    for (n, owner) in csim::leases() {
        assert!(alive(owner), "lease {n} of a dead owner {owner}");
    }
    // Other tests may hold leases, but this one took none that it kept.
    assert!(csim::leases().len() <= leases_before + 8);
    drop(taken);

    // Once the port is free, the same run works.
    ok(
        &tools,
        &["run", "-d", "--name", "clash", "-p", &publish, IMAGE],
    );
    assert!(get_until(port, "/").contains("from the image"));
    let before = state(&tools, "clash");
    ok(&tools, &["delete", "--force", "clash"]);
    assert_nothing_left(&tools, "clash", &before);
}

#[test]
fn missing_images_and_a_stopped_service_fail_as_the_real_cli_does() {
    let tools = sim("service");
    let status = ok(&tools, &["system", "status"]);
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["status", "running"]),
        "{status}"
    );

    let said = fails(
        &tools,
        &["run", "-d", "--name", "nope", "simtest/missing:2"],
    );
    assert!(said.contains("notFound"), "{said}");
    assert!(said.contains("simtest/missing:2"), "{said}");
    assert!(!tools.container_store().container_dir("nope").exists());
    let said = fails(&tools, &["image", "inspect", "simtest/missing"]);
    assert!(said.contains("notFound"), "{said}");
    assert!(fails(&tools, &["image", "pull", "simtest/missing"]).contains("no route"));
    ok(&tools, &["image", "pull", IMAGE]);

    let images: Vec<Value> =
        serde_json::from_str(&ok(&tools, &["image", "inspect", IMAGE])).unwrap();
    assert_eq!(images[0]["name"], IMAGE);
    let config = &images[0]["variants"][0]["config"]["config"];
    assert_eq!(config["User"], "1000:1000");
    assert_eq!(config["WorkingDir"], "/home/node");
    assert_eq!(config["Cmd"][0], "node");
    let listed: Vec<Value> =
        serde_json::from_str(&ok(&tools, &["image", "list", "--format", "json"])).unwrap();
    assert!(listed.iter().any(|i| i["reference"] == IMAGE));

    let networks: Vec<Value> =
        serde_json::from_str(&ok(&tools, &["network", "inspect", "default"])).unwrap();
    assert_eq!(networks[0]["status"]["ipv4Gateway"], "10.214.0.1");
    assert!(link_exists(csim::BRIDGE));
    assert!(fails(&tools, &["network", "inspect", "other"]).contains("notFound"));

    let usage = container(&tools, &["run", "-d", "--bogus", IMAGE]);
    assert_eq!(usage.status.code(), Some(64));
    assert!(fails(&tools, &["run", "--name", "fg", IMAGE]).contains("--detach"));
    assert!(fails(&tools, &["run", "-d", "--memory", "lots", IMAGE]).contains("memory"));

    tools.set_container_service(false).unwrap();
    let down = container(&tools, &["system", "status"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&down.stdout)
            .contains("apiserver is not running and not registered with launchd")
    );
    for args in [
        &["list", "--all"][..],
        &["image", "inspect", IMAGE],
        &["run", "-d", "--name", "down", IMAGE],
    ] {
        let said = fails(&tools, args);
        assert!(
            said.contains("Error: XPC connection error: Connection invalid"),
            "{args:?}: {said}"
        );
    }
    ok(&tools, &["system", "start"]);
    ok(&tools, &["system", "status"]);
    ok(&tools, &["list"]);
}

#[test]
fn containers_stop_on_their_own_and_removed_ones_vanish() {
    let tools = sim("exit");
    ok(
        &tools,
        &[
            "run",
            "-d",
            "--name",
            "once",
            IMAGE,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
    );
    wait_for("once to stop", || {
        inspect(&tools, "once").is_some_and(|i| i["status"] == "stopped")
    });
    let info = inspect(&tools, "once").unwrap();
    assert_eq!(info["exitCode"], 7);
    let logs = ok(&tools, &["logs", "once"]);
    assert!(logs.contains("out\n") && logs.contains("err\n"), "{logs}");
    let before = state(&tools, "once");
    assert_eq!(before.status, "stopped");
    ok(&tools, &["rm", "once"]);
    assert!(inspect(&tools, "once").is_none());

    let id = ok(
        &tools,
        &["run", "-d", "--rm", IMAGE, "sh", "-c", "sleep 0.5; exit 0"],
    );
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 36, "a generated id is a UUID: {id}");
    let before = state(&tools, &id);
    assert_eq!(before.status, "running");
    wait_for("the --rm container to vanish", || {
        inspect(&tools, &id).is_none()
    });
    wait_for("its daemon to exit", || !alive(before.pid));
    assert_nothing_left(&tools, &id, &before);

    // A process that ignores SIGTERM is killed when the grace time is up.
    ok(
        &tools,
        &[
            "run",
            "-d",
            "--name",
            "stubborn",
            IMAGE,
            "sh",
            "-c",
            "trap '' TERM; while :; do sleep 0.1; done",
        ],
    );
    let before = state(&tools, "stubborn");
    let started = Instant::now();
    ok(&tools, &["stop", "-t", "1", "stubborn"]);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(inspect(&tools, "stubborn").unwrap()["exitCode"], 128 + 9);
    ok(&tools, &["delete", "stubborn"]);
    assert_nothing_left(&tools, "stubborn", &before);
}

#[test]
fn injected_faults_make_node_crash_or_hang() {
    let tools = sim("faults");
    tools
        .set_container_faults(
            IMAGE,
            &ContainerFaults {
                node_exits: true,
                ..ContainerFaults::default()
            },
        )
        .unwrap();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:{PORT}");
    ok(
        &tools,
        &["run", "-d", "--name", "crash", "-p", &publish, IMAGE],
    );
    wait_for("crash to stop", || {
        inspect(&tools, "crash").is_some_and(|i| i["status"] == "stopped")
    });
    assert_eq!(inspect(&tools, "crash").unwrap()["exitCode"], 3);
    let logs = ok(&tools, &["logs", "crash"]);
    assert!(logs.contains("node: simulated crash at startup"), "{logs}");
    ok(&tools, &["delete", "crash"]);

    tools
        .set_container_faults(
            IMAGE,
            &ContainerFaults {
                node_hangs: true,
                ..ContainerFaults::default()
            },
        )
        .unwrap();
    ok(
        &tools,
        &["run", "-d", "--name", "hang", "-p", &publish, IMAGE],
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(inspect(&tools, "hang").unwrap()["status"], "running");
    assert!(get(port, "/").is_none(), "a hung node does not answer");
    let before = state(&tools, "hang");
    ok(&tools, &["stop", "hang"]);
    assert_eq!(inspect(&tools, "hang").unwrap()["exitCode"], 128 + 15);
    ok(&tools, &["delete", "hang"]);
    assert_nothing_left(&tools, "hang", &before);

    tools
        .set_container_faults(IMAGE, &ContainerFaults::default())
        .unwrap();
    ok(
        &tools,
        &["run", "-d", "--name", "healthy", "-p", &publish, IMAGE],
    );
    assert!(get_until(port, "/").contains("from the image"));
    ok(&tools, &["delete", "--force", "healthy"]);
}
