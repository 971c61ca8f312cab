//! `smlog torture --cluster`: the cluster simulation, seed after seed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use smlog_cluster::sim::{run as simulate, shrink, SimOptions, SimReport};
use smlog_cluster::transport::LinkFaults;

use crate::torture::TortureArgs;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The cluster simulation's size, for `smlog torture --cluster` (defaults: the simulation
/// test's).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct SimArgs {
    /// With --cluster: concurrent clients.
    #[arg(long)]
    pub clients: Option<u64>,
    /// With --cluster: nemesis actions per seed (partitions, heals, crashes, restarts,
    /// membership changes).
    #[arg(long)]
    pub nemesis: Option<u64>,
    /// With --cluster: percent of messages lost.
    #[arg(long)]
    pub loss: Option<u8>,
    /// With --cluster: percent of replies lost after their message took effect.
    #[arg(long)]
    pub reply_loss: Option<u8>,
    /// With --cluster: the longest delay of a message, in milliseconds.
    #[arg(long)]
    pub delay_ms: Option<u64>,
    /// With --cluster --seed: run the seed this many times (threads and timers are the
    /// machine's, so one run of a failing seed may not fail again).
    #[arg(long, default_value_t = 1)]
    pub repeat: u64,
    /// With --cluster: seconds spent shrinking a failure (0: report it as found).
    #[arg(long, default_value_t = 120.0)]
    pub shrink_seconds: f64,
    /// With --cluster: plant a bug (appends acknowledged before they are durable), to see
    /// the simulation find it.
    #[arg(long, hide = true)]
    pub plant_ack_before_durable: bool,
}

/// The simulation's options for `nodes` nodes, from the arguments.
fn options(args: &TortureArgs, nodes: u64) -> SimOptions {
    let default = SimOptions::default();
    let sim = &args.sim;
    SimOptions {
        nodes,
        clients: sim.clients.unwrap_or(default.clients).max(1),
        ops_per_client: args.ops.unwrap_or(default.ops_per_client).max(1),
        faults: LinkFaults {
            loss_percent: sim.loss.unwrap_or(default.faults.loss_percent).min(100),
            reply_loss_percent: sim
                .reply_loss
                .unwrap_or(default.faults.reply_loss_percent)
                .min(100),
            delay_max: sim
                .delay_ms
                .map_or(default.faults.delay_max, Duration::from_millis),
        },
        nemesis_actions: sim.nemesis.unwrap_or(default.nemesis_actions),
        plant_ack_before_durable: sim.plant_ack_before_durable,
    }
}

/// Runs cluster seeds until `--seconds` (or `--seeds`) is spent, or one fails; a failure
/// is shrunk and reported with the command that replays it.
pub fn run(args: &TortureArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let budget = Duration::from_secs_f64(args.seconds);
    let first = args.seed.or(args.first_seed).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut total = SimReport::default();
    let mut seeds = 0u64;
    let mut runs = 0u64;
    loop {
        let seed = first.wrapping_add(seeds);
        let nodes = args
            .nodes
            .unwrap_or(if seed.is_multiple_of(2) { 3 } else { 5 });
        let options = options(args, nodes);
        runs += 1;
        match runtime.block_on(simulate(seed, &options)) {
            Ok(report) => total.add(&report),
            Err(why) => {
                report_failure(&runtime, args, seed, &options, why);
                return Ok(ExitCode::from(1));
            }
        }
        let replaying = args.seed.is_some() && runs < args.sim.repeat;
        if !replaying {
            seeds += 1;
        }
        let out_of_seeds =
            (args.seed.is_some() && !replaying) || args.seed_count.is_some_and(|n| seeds >= n);
        if out_of_seeds || (!replaying && started.elapsed() >= budget) {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "failed": false, "seeds": seeds, "runs": runs, "seconds": seconds,
                "ops": total.ops,
                "acknowledged": total.acknowledged, "unknown": total.unknown,
                "entries_checked": total.entries_checked, "partitions": total.partitions,
                "crashes": total.crashes, "membership_changes": total.membership_changes,
                "terms": total.terms_with_leader,
                "snapshots_installed": total.snapshots_installed,
            })
        );
    } else {
        println!(
            "{seeds} cluster seeds ({runs} runs) in {seconds:.1} s: {total}; every history \
             linearizable"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Shrinks the failure of `seed` (within `--shrink-seconds`) and prints it with the
/// command that replays it.
fn report_failure(
    runtime: &tokio::runtime::Runtime,
    args: &TortureArgs,
    seed: u64,
    options: &SimOptions,
    why: String,
) {
    let found = options.replay_command(seed);
    if !args.json {
        println!("FAILED: {why}");
        println!("found with: {found}");
    }
    let budget = Duration::from_secs_f64(args.sim.shrink_seconds.max(0.0));
    if !args.json && !budget.is_zero() {
        println!("shrinking (up to {budget:?}; each smaller size tried up to 3 times) ...");
    }
    let shrunk = runtime.block_on(shrink(seed, options, why, 3, budget));
    let replay = format!("{} --repeat 5", shrunk.options.replay_command(seed));
    if args.json {
        println!(
            "{}",
            json!({
                "failed": true, "seed": seed, "nodes": options.nodes, "found_with": found,
                "message": shrunk.failure, "replay": replay, "shrink_runs": shrunk.runs,
            })
        );
    } else {
        if shrunk.options != *options {
            println!(
                "smallest failing size ({} runs): {}",
                shrunk.runs, shrunk.failure
            );
        }
        println!("replay: {replay}");
    }
}
