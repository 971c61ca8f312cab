//! `smlog torture --cluster`: the cluster simulation, seed after seed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use smlog_cluster::sim::{run as simulate, SimOptions, SimReport};

use crate::torture::TortureArgs;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Runs cluster seeds until `--seconds` (or `--seeds`) is spent, or one fails.
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
    loop {
        let seed = first.wrapping_add(seeds);
        let nodes = args
            .nodes
            .unwrap_or(if seed.is_multiple_of(2) { 3 } else { 5 });
        let options = SimOptions {
            nodes,
            ..SimOptions::default()
        };
        match runtime.block_on(simulate(seed, &options)) {
            Ok(report) => total.add(&report),
            Err(why) => {
                let replay = format!("smlog torture --cluster --seed {seed} --nodes {nodes}");
                if args.json {
                    println!(
                        "{}",
                        json!({"failed": true, "seed": seed, "nodes": nodes, "message": why, "replay": replay})
                    );
                } else {
                    println!("FAILED: {why}");
                    println!("replay: {replay}");
                }
                return Ok(ExitCode::from(1));
            }
        }
        seeds += 1;
        let out_of_seeds = args.seed.is_some() || args.seed_count.is_some_and(|n| seeds >= n);
        if out_of_seeds || started.elapsed() >= budget {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "failed": false, "seeds": seeds, "seconds": seconds, "ops": total.ops,
                "acknowledged": total.acknowledged, "unknown": total.unknown,
                "entries_checked": total.entries_checked, "partitions": total.partitions,
                "crashes": total.crashes, "membership_changes": total.membership_changes,
                "terms": total.terms_with_leader,
                "snapshots_installed": total.snapshots_installed,
            })
        );
    } else {
        println!("{seeds} cluster seeds in {seconds:.1} s: {total}; every history linearizable");
    }
    Ok(ExitCode::SUCCESS)
}
