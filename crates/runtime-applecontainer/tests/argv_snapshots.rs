//! The argv of every `container` call and the Containerfile, one argument per line. Pure: runs
//! on every OS.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime_applecontainer::argv::{parse_containers, parse_gateway};
use runtime_applecontainer::{Container, ImageRecipe, Publish, RunArgs, Volume};

fn container() -> Container {
    Container::new("/usr/local/bin/container")
}

const NAME: &str = "computeragent-42-demo-abcd1234";

#[test]
fn service_image_network_stop_delete_inspect_list_logs() {
    let c = container();
    let all = [
        c.system_status(),
        c.system_start(),
        c.image_inspect("computeragent-harness:0123456789ab"),
        c.image_list(),
        c.image_pull("computeragent-harness:0123456789ab"),
        c.build(
            "computeragent-harness:0123456789ab",
            Path::new("/ctx/Containerfile"),
            Path::new("/ctx"),
        ),
        c.network_inspect("default"),
        c.stop(NAME, Duration::from_secs(5)),
        c.delete(NAME),
        c.inspect(NAME),
        c.list(),
        c.logs(NAME),
        c.exec(
            NAME,
            Some(Path::new("/state/x/exec.env")),
            Some("/home/node/work"),
            &["sh".into(), "-c".into(), "echo hi".into()],
        ),
        c.exec(NAME, None, None, &["true".into()]),
        c.exec_terminal(
            NAME,
            Path::new("/state/x/terminal-abc.env"),
            "/home/node/work/terminal-abc",
            &["bash".into(), "-l".into()],
        ),
    ];
    let text: Vec<String> = all.iter().map(|c| c.argv_lines()).collect();
    insta::assert_snapshot!(text.join("\n---\n"));
}

#[test]
fn run_publishes_on_loopback_and_takes_secrets_from_a_file() {
    let minimal = RunArgs {
        name: NAME.into(),
        image: "computeragent-harness:0123456789ab".into(),
        env_file: Some(PathBuf::from(
            "/state/computeragent-42-demo-abcd1234/harness.env",
        )),
        publish: vec![Publish::loopback(49152, 7780)],
        ..RunArgs::default()
    };
    let everything = RunArgs {
        cpus: Some(2),
        memory_mib: Some(4096),
        volumes: vec![
            Volume {
                host: PathBuf::from("/Users/me/project"),
                guest: "/home/node/project".into(),
                read_only: false,
            },
            Volume {
                host: PathBuf::from("/Users/me/refs"),
                guest: "/refs".into(),
                read_only: true,
            },
        ],
        workdir: Some("/home/node".into()),
        read_only: true,
        tmpfs: vec!["/tmp".into(), "/home/node".into()],
        remove: true,
        labels: vec![("computeragent.label".into(), "demo".into())],
        command: vec!["node".into(), "/opt/computeragent/harness.mjs".into()],
        ..minimal.clone()
    };
    let c = container();
    let text = [c.run(&minimal), c.run(&everything)]
        .iter()
        .map(|c| c.argv_lines())
        .collect::<Vec<_>>()
        .join("\n---\n");
    assert!(!text.contains("HARNESS_TOKEN"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn the_containerfile_follows_the_recipe() {
    let recipe = ImageRecipe {
        tag: "computeragent-harness:0123456789ab".into(),
        ..ImageRecipe::for_this_build()
    };
    insta::assert_snapshot!(recipe.containerfile());
}

#[test]
fn the_build_context_carries_the_harness_of_this_build() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = ImageRecipe::for_this_build();
    let file = recipe.write_context(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(file).unwrap(),
        recipe.containerfile()
    );
    assert_eq!(
        std::fs::read(dir.path().join("harness.mjs")).unwrap(),
        harness_bundle::HARNESS_MJS
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("package-lock.json")).unwrap(),
        harness_bundle::SANDBOX_PACKAGE_LOCK
    );
    assert!(recipe.tag.starts_with(&format!(
        "computeragent-harness:{}",
        &harness_bundle::bundle_hash()[..12]
    )));
}

#[test]
fn inspect_output_of_releases_old_and_new_parses() {
    let old = br#"[{"status":"running","networks":[{"address":"192.168.64.3/24","gateway":"192.168.64.1","hostname":"web.test.","network":"default"}],"configuration":{"id":"web","mounts":[]}}]"#;
    let new = br#"[{"status":"stopped","networks":[],"configuration":{"id":"web2","labels":{}},"exitCode":3}]"#;
    let old = parse_containers(old).unwrap();
    assert!(old[0].running());
    assert_eq!(old[0].configuration.id, "web");
    assert_eq!(old[0].networks[0].gateway.as_deref(), Some("192.168.64.1"));
    let new = parse_containers(new).unwrap();
    assert!(!new[0].running());
    let err = parse_containers(b"Error: not json").unwrap_err();
    assert!(err.to_string().contains("no container list"), "{err}");
}

#[test]
fn the_gateway_is_found_wherever_a_release_puts_it() {
    let nested = br#"[{"id":"default","state":"running","status":{"ipv4Subnet":"192.168.64.0/24","ipv4Gateway":"192.168.64.1"}}]"#;
    let flat = br#"[{"id":"default","gateway":"10.0.5.1"}]"#;
    assert_eq!(parse_gateway(nested).unwrap().to_string(), "192.168.64.1");
    assert_eq!(parse_gateway(flat).unwrap().to_string(), "10.0.5.1");
    let err = parse_gateway(br#"[{"id":"default"}]"#).unwrap_err();
    assert!(err.to_string().contains("no IPv4 gateway"), "{err}");
}
