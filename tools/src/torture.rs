//! `smlog torture`: the file-system workload on the simulated device, crashed and faulted,
//! checked against the reference model; deterministic per seed, like a simulator.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use smlog_recovery::harness::fs::FsScenario;
use smlog_recovery::harness::{run_seed, shrink, Config, Failure, Faults, Stats};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `smlog torture`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct TortureArgs {
    /// Run (replay) this seed only.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds to keep trying new seeds (without --seed).
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Without --seed: start the sequence of seeds here (default: from the clock), so a
    /// timed run covers the same seeds every time.
    #[arg(long)]
    pub first_seed: Option<u64>,
    /// Without --seed: stop after this many seeds (or at --seconds, whichever first).
    #[arg(long = "seeds")]
    pub seed_count: Option<u64>,
    /// Faults: comma-separated crash, io-error, recovery-crash, steps, damage; or
    /// default (all but damage), all.
    #[arg(long, default_value = "default")]
    pub faults: Faults,
    /// Crash-recover cycles per seed.
    #[arg(long, default_value_t = 8)]
    pub cycles: u64,
    /// Stop a seed after this many operations (to replay a shortened failure); with
    /// --cluster, the operations each client issues.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Torture a cluster instead: the cluster simulation (nodes on the simulated device,
    /// partitions, lost and delayed messages, crashes, membership changes), each seed's
    /// history checked for linearizability.
    #[arg(long)]
    pub cluster: bool,
    /// With --cluster: nodes per seed (3 or 5; default: 3 and 5 in turn).
    #[arg(long)]
    pub nodes: Option<u64>,
    #[command(flatten)]
    pub sim: crate::torture_cluster::SimArgs,
}

fn report_failure(failure: &Failure, config: &Config, args: &TortureArgs) {
    let shortest = shrink(&FsScenario, failure.seed, config, failure);
    let replay = format!(
        "smlog torture --seed {} --cycles {} --faults {} --ops {}",
        failure.seed, config.cycles, config.faults, shortest.ops
    );
    if args.json {
        println!(
            "{}",
            json!({
                "failed": true,
                "seed": failure.seed,
                "cycle": failure.cycle,
                "ops": failure.ops,
                "message": failure.message,
                "shortest_ops": shortest.ops,
                "shortest_message": shortest.message,
                "history": shortest.history,
                "replay": replay,
            })
        );
        return;
    }
    println!("FAILED: {failure}");
    println!(
        "shortest failing prefix found: {} operations: {}",
        shortest.ops, shortest.message
    );
    println!("last operations of the failing cycle:");
    for line in &shortest.history {
        println!("    {line}");
    }
    println!("replay: {replay}");
}

fn print_stats(stats: &Stats, seeds: u64, elapsed: Duration, args: &TortureArgs) {
    if args.json {
        println!(
            "{}",
            json!({
                "failed": false,
                "seeds": seeds,
                "cycles": stats.cycles,
                "ops": stats.ops,
                "acknowledged": stats.acknowledged,
                "faults": stats.faults,
                "fault_kinds": stats.fault_kinds,
                "resumed": stats.resumed,
                "rolled_back": stats.rolled_back,
                "recovery_crashes": stats.recovery_crashes,
                "refused": stats.refused,
                "damage_lost_tail": stats.damage_lost_tail,
                "seconds": elapsed.as_secs_f64(),
            })
        );
        return;
    }
    println!(
        "{seeds} seeds, {} crash-recover cycles checked in {:.1} s: {} operations ({} acknowledged \
         durable), {} faults applied, {} recoveries crashed, {} transactions resumed, {} rolled back",
        stats.cycles,
        elapsed.as_secs_f64(),
        stats.ops,
        stats.acknowledged,
        stats.faults,
        stats.recovery_crashes,
        stats.resumed,
        stats.rolled_back
    );
    if stats.refused > 0 || stats.damage_lost_tail > 0 {
        println!(
            "damage: {} recoveries refused it with an explicit error, {} lost an unvouched tail whole",
            stats.refused, stats.damage_lost_tail
        );
    }
    for (kind, count) in &stats.fault_kinds {
        println!("    {count:>8}  {kind}");
    }
}

/// Runs `smlog torture`.
pub fn run(args: TortureArgs) -> Result<ExitCode> {
    if args.cluster {
        return crate::torture_cluster::run(&args);
    }
    let config = Config {
        cycles: args.cycles,
        faults: args.faults,
        op_limit: args.ops,
        ..Config::default()
    };
    let started = Instant::now();
    let mut stats = Stats::default();
    let mut seeds = 0u64;
    let mut next_seed = args.seed.or(args.first_seed).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let deadline = Duration::from_secs_f64(args.seconds.max(0.0));
    loop {
        let seed = next_seed;
        next_seed = next_seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        match run_seed(&FsScenario, seed, &config) {
            Ok(run) => stats.add(&run),
            Err(failure) => {
                report_failure(&failure, &config, &args);
                return Ok(ExitCode::FAILURE);
            }
        }
        seeds += 1;
        if args.seed.is_some()
            || started.elapsed() >= deadline
            || args.seed_count.is_some_and(|count| seeds >= count)
        {
            break;
        }
    }
    print_stats(&stats, seeds, started.elapsed(), &args);
    Ok(ExitCode::SUCCESS)
}
