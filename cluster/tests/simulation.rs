//! The cluster simulation (`smlog_cluster::sim`): seeds of 3 and 5 nodes under partitions,
//! message and reply loss, delays, crashes (one node, or all at once) and membership
//! changes, each history checked (one leader per term, one committed log, linearizable
//! against a reference engine, every volume equal to it). `SMLOG_SIM_SECONDS` sets the
//! time spent (default 60). A planted bug (appends acknowledged before they are durable)
//! must be found, and its failure shrink to smaller options that still fail.

use std::time::{Duration, Instant};

use smlog_cluster::sim::{run, shrink, SimOptions, SimReport};

fn budget() -> Duration {
    let seconds = std::env::var("SMLOG_SIM_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_simulations_of_three_and_five_nodes_keep_a_linearizable_history() {
    let started = Instant::now();
    let mut total = SimReport::default();
    let mut seeds = 0u64;
    while started.elapsed() < budget() || seeds < 2 {
        let nodes = if seeds.is_multiple_of(2) { 3 } else { 5 };
        let options = SimOptions {
            nodes,
            ..SimOptions::default()
        };
        let report = run(seeds, &options)
            .await
            .unwrap_or_else(|why| panic!("{why}"));
        total.add(&report);
        seeds += 1;
    }
    eprintln!(
        "simulation: {seeds} seeds in {:.0?}: {total}",
        started.elapsed()
    );
    assert!(total.acknowledged > 0 && total.crashes > 0 && total.partitions > 0);
    assert!(
        total.snapshots_installed > 0,
        "no node caught up from a snapshot in {seeds} seeds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_bug_acknowledging_before_durable_is_found() {
    let started = Instant::now();
    for seed in 0..40 {
        let options = SimOptions {
            plant_ack_before_durable: true,
            ..SimOptions::default()
        };
        if let Err(why) = run(1_000 + seed, &options).await {
            eprintln!(
                "simulation: the planted bug was found by seed {} after {:.1?}: {why}",
                1_000 + seed,
                started.elapsed()
            );
            // The failure shrinks: smaller options that still fail, none larger.
            let shrinking = Instant::now();
            let shrunk = shrink(1_000 + seed, &options, why, 3, Duration::from_secs(20)).await;
            eprintln!(
                "simulation: shrunk in {:.1?} ({} runs) to `{}`: {}",
                shrinking.elapsed(),
                shrunk.runs,
                shrunk.options.replay_command(1_000 + seed),
                shrunk.failure
            );
            let (small, big) = (&shrunk.options, &options);
            assert_ne!(small, big, "no smaller size failed again");
            assert!(small.nodes <= big.nodes && small.clients <= big.clients);
            assert!(small.ops_per_client <= big.ops_per_client);
            assert!(small.nemesis_actions <= big.nemesis_actions);
            assert!(small.faults.loss_percent <= big.faults.loss_percent);
            assert!(small.faults.delay_max <= big.faults.delay_max);
            assert!(small.plant_ack_before_durable);
            return;
        }
    }
    panic!("40 seeds did not find acknowledgements before durability");
}
