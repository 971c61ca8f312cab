//! `smlog torture`: a run of about a minute (`SMLOG_TORTURE_SECONDS`) with the default
//! faults, and one with every fault, find nothing, and a seed replays to the same run.

use std::process::Command;

fn torture(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_smlog"))
        .arg("torture")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "torture failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn a_minute_of_torture_finds_nothing() {
    let seconds = std::env::var("SMLOG_TORTURE_SECONDS").unwrap_or_else(|_| "60".into());
    let stats = torture(&["--seconds", &seconds]);
    eprintln!("torture: {stats}");
    assert_eq!(stats["failed"], false);
    assert!(stats["cycles"].as_u64().unwrap() > 0);
    assert!(stats["faults"].as_u64().unwrap() > 0);
}

/// Every fault at once, damage included (the data file too): a fixed sequence of seeds
/// (`--first-seed 1 --seeds 3000`, about a minute), the same on every run, so CI never
/// fails at random; `smlog torture --faults all` with random seeds is the long search.
#[test]
fn a_minute_of_torture_with_every_fault_finds_nothing() {
    let seconds = std::env::var("SMLOG_TORTURE_SECONDS").unwrap_or_else(|_| "90".into());
    let stats = torture(&[
        "--seconds",
        &seconds,
        "--faults",
        "all",
        "--first-seed",
        "1",
        "--seeds",
        "3000",
    ]);
    eprintln!("torture --faults all: {stats}");
    assert_eq!(stats["failed"], false);
    assert!(stats["cycles"].as_u64().unwrap() > 0);
    for kind in [
        "bit rot (10)",
        "misdirected write (6)",
        "unreadable sector (9)",
    ] {
        assert!(
            stats["fault_kinds"][kind].as_u64().unwrap_or(0) > 0,
            "{kind} never applied: {stats}"
        );
    }
}

#[test]
fn a_seed_replays_to_the_same_run() {
    let mut first = torture(&["--seed", "4242", "--cycles", "5", "--faults", "all"]);
    let mut second = torture(&["--seed", "4242", "--cycles", "5", "--faults", "all"]);
    first["seconds"] = serde_json::Value::Null;
    second["seconds"] = serde_json::Value::Null;
    assert_eq!(first, second);
    assert_eq!(first["seeds"], 1);
}
