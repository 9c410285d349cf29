//! Boots fresh bwrap sandboxes and prints the isolation-probe table: what each probe tried,
//! what isolation demands, what the sandbox showed. Exits non-zero if any probe fails.
//!
//! `cargo run -p substrate-examples --example isolation-probe` (Linux, bubblewrap installed).

#[cfg(target_os = "linux")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let modules = substrate_testkit::stage::ensure_staged().map_err(anyhow::Error::msg)?;
    let substrate = runtime_bwrap::BwrapSubstrate::new(modules);
    let results = runtime_bwrap::probe::run_probes(&substrate).await?;
    print!("{}", runtime_bwrap::probe::table(&results));
    let failed = results.iter().filter(|r| !r.passed).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} probes failed", results.len());
    }
    println!("all {} probes passed", results.len());
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() -> anyhow::Result<()> {
    anyhow::bail!("the isolation probe runs bubblewrap sandboxes: Linux only")
}
