//! `cargo xtask bench vm`: the boot timeline of the tart and lima runtimes per phase, on the guest
//! simulator (real sshd guests in network namespaces; run as root), for a cold image (upload
//! and `npm ci` in the guest) and for a prepared one. Reports the prepared boot against the
//! cold one measured in the same run, and the share of the prepared boot spent outside VM
//! start, SSH and health (target: at most 10%).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runtime_lima::{LimaBase, LimaSubstrate};
use runtime_tart::TartSubstrate;
use substrate_core::NetworkPolicy;
use substrate_core::{BootEvent, BootPhase, BootSpec, ProgressSink, Substrate};
use substrate_ssh::SshAuth;
use substrate_testkit::conformance::scripted_boot_spec;
use substrate_testkit::guestsim::SimTools;
use substrate_testkit::model::{Script, ScriptedModel};

const PREPARED_BOOTS: usize = 7;

struct Timeline {
    phases: BTreeMap<BootPhase, Duration>,
    total: Duration,
    shutdown: Duration,
}

async fn timed_boot(substrate: &dyn Substrate, spec: BootSpec) -> anyhow::Result<Timeline> {
    let phases = Arc::new(Mutex::new(BTreeMap::new()));
    let seen = phases.clone();
    let spec = spec.progress(ProgressSink::new(move |e| {
        if let BootEvent::PhaseFinished { phase, elapsed, .. } = e
            && let Ok(mut map) = seen.lock()
        {
            *map.entry(phase).or_insert(Duration::ZERO) += elapsed;
        }
    }));
    let started = Instant::now();
    let harness = substrate.boot_harness(spec).await?;
    let total = started.elapsed();
    harness.client()?.health().await?;
    let started = Instant::now();
    harness.shutdown().await?;
    let shutdown = started.elapsed();
    let phases = phases.lock().map(|m| m.clone()).unwrap_or_default();
    Ok(Timeline {
        phases,
        total,
        shutdown,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// VM start, address, SSH and health: what a VM costs whatever the runtime does.
const VM_BOUND: [BootPhase; 4] = [
    BootPhase::Start,
    BootPhase::WaitIp,
    BootPhase::WaitSsh,
    BootPhase::Health,
];

/// Prints one runtime's timeline and its verdict.
fn report(runtime: &str, cold: &Timeline, prepared: &mut [Timeline], prepare: Duration) {
    prepared.sort_by_key(|t| t.total);
    let median = &prepared[prepared.len() / 2];
    println!("{runtime} boot on the guest simulator (prepared: median of {PREPARED_BOOTS})");
    println!("{:<10} {:>12} {:>12}", "phase", "cold", "prepared");
    for (phase, took) in &cold.phases {
        let p = median.phases.get(phase).copied();
        println!(
            "{:<10} {:>12} {:>12}",
            phase.as_str(),
            ms(*took),
            p.map(ms).unwrap_or_else(|| "-".into())
        );
    }
    println!(
        "{:<10} {:>12} {:>12}",
        "total",
        ms(cold.total),
        ms(median.total)
    );
    println!(
        "{:<10} {:>12} {:>12}",
        "shutdown",
        ms(cold.shutdown),
        ms(median.shutdown)
    );
    println!("preparing the image (once): {}", ms(prepare));
    let bound: Duration = VM_BOUND.iter().filter_map(|p| median.phases.get(p)).sum();
    let outside = median.total.saturating_sub(bound);
    let share = outside.as_secs_f64() / median.total.as_secs_f64();
    println!(
        "prepared / cold: {:.3}x; prepared boot outside VM start + SSH + health: {} ({:.1}%, target <= 10%: {})\n",
        median.total.as_secs_f64() / cold.total.as_secs_f64(),
        ms(outside),
        share * 100.0,
        if share <= 0.10 { "met" } else { "missed" }
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    SimTools::check_host()?;
    let dir = tempfile::tempdir()?;
    let model = ScriptedModel::start(Script::new()).await?;

    // Tart: a vanilla image (upload + npm ci per boot) against a prepared one.
    let tools = SimTools::install(&dir.path().join("bin"), &dir.path().join("tart-home"))?;
    tools.ensure_vanilla_image("vanilla")?;
    let tart = |image: &str| {
        TartSubstrate::new(image)
            .tart(tools.tart())
            .tart_home(tools.store().root())
            .state_dir(dir.path().join("tart-state"))
    };
    let spec = || scripted_boot_spec("bench", &model.base_url());
    let cold = timed_boot(&tart("vanilla"), spec()).await?;
    let started = Instant::now();
    tart("vanilla")
        .prepare("vanilla", "prepared", BootSpec::new("prepare"))
        .await?;
    let prepare = started.elapsed();
    let mut prepared = Vec::new();
    for _ in 0..PREPARED_BOOTS {
        prepared.push(timed_boot(&tart("prepared"), spec()).await?);
    }
    report("tart", &cold, &mut prepared, prepare);

    // Lima: an instance created from a template per boot against clones of a built base.
    let tools = SimTools::install(&dir.path().join("bin"), &dir.path().join("lima-home"))?;
    tools.use_npm_mirror()?;
    let key = tools.store().root().join("_config/user");
    let lima = |base: LimaBase| {
        LimaSubstrate::new(base)
            .limactl(tools.limactl())
            .lima_home(tools.store().root())
            .state_dir(dir.path().join("lima-state"))
            .login(
                substrate_testkit::guestsim::GUEST_USER,
                vec![SshAuth::KeyFile {
                    path: key.clone(),
                    passphrase: None,
                }],
            )
    };
    let spec = || scripted_boot_spec("bench", &model.base_url()).network(NetworkPolicy::Host);
    let cold = timed_boot(
        &lima(LimaBase::Template("template://debian-12".into())),
        spec(),
    )
    .await?;
    let started = Instant::now();
    lima(LimaBase::Clone("base".into()))
        .build_base("template://debian-12", "base", None, BootSpec::new("build"))
        .await?;
    let prepare = started.elapsed();
    let mut prepared = Vec::new();
    for _ in 0..PREPARED_BOOTS {
        prepared.push(timed_boot(&lima(LimaBase::Clone("base".into())), spec()).await?);
    }
    report("lima", &cold, &mut prepared, prepare);
    Ok(())
}
