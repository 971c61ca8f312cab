//! Seeds on which `smlog torture --faults all` once failed, replayed as they were found
//! (8 cycles, the default cycle length). Each names the fault mix that broke it.

use smlog_recovery::harness::fs::FsScenario;
use smlog_recovery::harness::{run_seed, Config, Stats};

fn torture(seed: u64, faults: &str) -> Stats {
    let config = Config {
        cycles: 8,
        faults: faults.parse().unwrap(),
        ..Config::default()
    };
    run_seed(&FsScenario, seed, &config).unwrap_or_else(|failure| panic!("{failure}"))
}

/// Recovery found an unreadable sector at the tail (a torn tail), scrubbed it and logged
/// its own records over it; the simulated disk kept the sector unreadable although the
/// writes were acknowledged, so the next recovery lost them. A disk remaps a sector it is
/// told to write; the simulator now does too.
#[test]
fn records_written_over_an_unreadable_sector_read_back() {
    for seed in [
        13_183_418_541_658_899_534,
        3_896_904_522_547_016_104,
        13_907_510_145_530_136_262,
    ] {
        let stats = torture(seed, "all");
        assert_eq!(stats.cycles, 8, "seed {seed}");
    }
}

/// Bit rot in the setup's last batch, which no later batch vouches for: damage there is
/// what a torn, never acknowledged write leaves, so recovery loses that tail whole (and
/// says so). The checker allowed that for a cycle's operations but not for the setup's.
#[test]
fn damage_to_the_setups_unvouched_tail_loses_it_whole() {
    let stats = torture(6_835_655_399_268_480_947, "all");
    assert!(stats.damage_lost_tail >= 1, "{stats:?}");
    let stats = torture(3_070_108_221_529_239_219, "crash,damage");
    assert!(stats.damage_lost_tail >= 1, "{stats:?}");
}
