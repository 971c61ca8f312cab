//! `smlog-bench compare` writes what it promises: a row per system x threads x record size
//! in results.json, the Markdown table, and the charts as SVG and PNG. (Figures are not
//! checked: a benchmark reports, it asserts nothing about speed.)

use std::process::Command;

#[test]
fn compare_writes_results_json_markdown_and_charts() {
    let tmp = tempfile::Builder::new()
        .prefix("smlog-compare-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let out = tmp.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_smlog-bench"))
        .args([
            "compare",
            "--seconds",
            "0.2",
            "--threads",
            "1,2",
            "--record-bytes",
            "128",
            "--recovery-megabytes",
            "8",
            "--fs-threads",
            "1",
            "--dir",
        ])
        .arg(tmp.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let systems: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r["system"].as_str().unwrap()).collect();
    for want in [
        "smlog",
        "raft-engine",
        "okaywal",
        "sqlite",
        "device pwrite+fdatasync",
    ] {
        assert!(systems.contains(want), "{systems:?}");
    }
    assert_eq!(
        rows.len(),
        systems.len() * 2,
        "a row per system and thread count"
    );
    for row in rows {
        assert!(row["commits"].as_u64().unwrap() > 0, "{row}");
        for key in [
            "commits_per_sec",
            "mb_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
        ] {
            assert!(row[key].as_f64().is_some(), "{key} missing: {row}");
        }
    }
    let recovered: Vec<&str> = report["recovery"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["system"].as_str().unwrap())
        .collect();
    assert!(
        recovered.starts_with(&["smlog", "raft-engine"]),
        "{recovered:?}"
    );
    assert_eq!(
        report["fs"].as_array().unwrap().len(),
        4,
        "create, write4k, rename, mixed"
    );
    let markdown = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(markdown.contains("| 128 B | 2 |"), "{markdown}");
    if smlog_benches::compare::chart_font().is_none() {
        eprintln!("skipped the charts' check: no font here (apt-get install -y fonts-dejavu-core)");
        return;
    }
    for chart in ["throughput-128", "latency-2t-128"] {
        let svg = std::fs::read_to_string(out.join(format!("{chart}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("smlog"),
            "{chart}.svg"
        );
        let png = std::fs::read(out.join(format!("{chart}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{chart}.png");
    }
}
