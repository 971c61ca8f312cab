//! `smlog-bench compare`: smlog's log against its peers ([`crate::peers`]) over a matrix of
//! threads and record sizes, interleaved so that drift of a shared machine hits every
//! system alike; then the recovery comparison. Writes `results.json`, `results.md` and
//! charts (SVG and PNG).

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use crate::peers::{peer_recovery, run_peer, PeerRow, RecoveryRow, System};
use crate::{recovery_bench, RecoveryBenchOptions};

/// What to run.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Committing threads of each cell.
    pub threads: Vec<usize>,
    /// Record sizes.
    pub record_bytes: Vec<usize>,
    /// Seconds per cell and system.
    pub seconds: f64,
    /// Bytes of log for the recovery comparison (0: skip it).
    pub recovery_bytes: u64,
    /// The file system to measure on.
    pub dir: PathBuf,
    /// Where results go.
    pub out: PathBuf,
    /// The systems.
    pub systems: Vec<System>,
    /// File operations (create, write4k, rename, mixed) at these thread counts, against
    /// the host file system with fsync and SQLite (empty: skip).
    pub fs_threads: Vec<usize>,
}

impl CompareOptions {
    /// The full matrix: 1, 4, 16, 64 threads; 128 B, 512 B, 4 KiB, 64 KiB; 3 s per cell;
    /// recovery after 1 GB.
    pub fn full(dir: PathBuf, out: PathBuf) -> CompareOptions {
        CompareOptions {
            threads: vec![1, 4, 16, 64],
            record_bytes: vec![128, 512, 4096, 65536],
            seconds: 3.0,
            recovery_bytes: 1 << 30,
            dir,
            out,
            systems: System::all(),
            fs_threads: vec![1, 16],
        }
    }

    /// About two minutes: the same matrix at 0.6 s per cell, recovery after 256 MB.
    pub fn quick(dir: PathBuf, out: PathBuf) -> CompareOptions {
        CompareOptions {
            seconds: 0.6,
            recovery_bytes: 256 << 20,
            ..CompareOptions::full(dir, out)
        }
    }
}

/// Everything one comparison measured.
#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    /// When (UTC, seconds since the epoch).
    pub started_unix_secs: u64,
    /// The machine.
    pub machine: String,
    /// Seconds per cell.
    pub seconds: f64,
    /// One row per system x threads x record size.
    pub rows: Vec<PeerRow>,
    /// Reopen after a long log.
    pub recovery: Vec<RecoveryRow>,
    /// The file system's sequential O_DIRECT read rate of smlog's log, same run.
    pub smlog_recovery_read_mb_per_sec: f64,
    /// File operations through the engine, the host file system and SQLite.
    pub fs: Vec<crate::sqlite_fs::FsCompareRow>,
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb >> 20);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs, {mem} GiB, Linux {}", kernel.trim())
}

/// Runs the comparison; `progress` hears of each cell as it ends.
pub fn compare(
    options: &CompareOptions,
    mut progress: impl FnMut(&str),
) -> Result<CompareReport, String> {
    std::fs::create_dir_all(&options.out).map_err(|e| e.to_string())?;
    let started_unix_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut rows = Vec::new();
    let mut cell = 0;
    for &record_bytes in &options.record_bytes {
        for &threads in &options.threads {
            // Rotate who goes first, so that no system always runs on a cold or warm
            // machine.
            let n = options.systems.len();
            for i in 0..n {
                let system = options.systems[(cell + i) % n];
                let row = run_peer(system, &options.dir, threads, record_bytes, options.seconds)
                    .map_err(|e| {
                        format!(
                            "{} ({threads} threads, {record_bytes} B): {e}",
                            system.name()
                        )
                    })?;
                progress(&format!(
                    "{:>24} {:>3} threads {:>6} B: {:>9.0} commits/s, p50 {:>6.0} us, p99 {:>7.0} us",
                    row.system, threads, record_bytes, row.commits_per_sec, row.p50_us, row.p99_us
                ));
                rows.push(row);
            }
            cell += 1;
        }
    }
    let mut recovery = Vec::new();
    let mut smlog_recovery_read_mb_per_sec = 0.0;
    if options.recovery_bytes > 0 {
        let smlog = recovery_bench(&RecoveryBenchOptions {
            log_bytes: options.recovery_bytes,
            record_bytes: 4096,
            dir: options.dir.clone(),
            device: smlog::io::DeviceKind::Uring,
        })?;
        recovery.push(RecoveryRow {
            system: "smlog",
            log_bytes: smlog.log_bytes,
            reopen_secs: smlog.recovery_secs,
            // Records' bytes over time, as for the peers (the scan also reads the
            // segments' preallocated tail).
            scan_mb_per_sec: smlog.log_bytes as f64 / smlog.recovery_secs / 1e6,
        });
        smlog_recovery_read_mb_per_sec = smlog.read_mb_per_sec;
        let mut peers = vec![System::RaftEngine];
        if options.systems.contains(&System::RocksDb) {
            peers.push(System::RocksDb);
        }
        for system in peers {
            recovery.push(peer_recovery(system, &options.dir, options.recovery_bytes)?);
        }
        for row in &recovery {
            progress(&format!(
                "recovery {:>12}: {:.0} MB reopened in {:.3} s ({:.0} MB/s)",
                row.system,
                row.log_bytes as f64 / 1e6,
                row.reopen_secs,
                row.scan_mb_per_sec
            ));
        }
    }
    let mut fs = Vec::new();
    for op in [
        crate::fs::FsOp::Create,
        crate::fs::FsOp::Write4k,
        crate::fs::FsOp::Rename,
        crate::fs::FsOp::Mixed,
    ] {
        for &threads in &options.fs_threads {
            let row = crate::sqlite_fs::fs_compare(&crate::fs::FsBenchOptions {
                threads,
                op,
                seconds: options.seconds,
                dir: options.dir.clone(),
                device: smlog::io::DeviceKind::Uring,
                direct_io: true,
            })?;
            progress(&format!(
                "fs {:?} {threads} threads: smlog {:.0}/s, host+fsync {:.0}/s, sqlite {:.0}/s",
                op, row.fs.ops_per_sec, row.fs.baseline_ops_per_sec, row.sqlite_ops_per_sec
            ));
            fs.push(row);
        }
    }
    let report = CompareReport {
        started_unix_secs,
        machine: machine(),
        seconds: options.seconds,
        rows,
        recovery,
        smlog_recovery_read_mb_per_sec,
        fs,
    };
    write_results(&report, &options.out)?;
    Ok(report)
}

fn size_name(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// The Markdown table: one row per threads x record size, a column per system (commits/s)
/// and smlog's ratio to the best peer and to the device.
pub fn markdown(report: &CompareReport) -> String {
    let systems: Vec<&str> = {
        let mut seen = Vec::new();
        for row in &report.rows {
            if !seen.contains(&row.system) {
                seen.push(row.system);
            }
        }
        seen
    };
    let mut cells: Vec<(usize, usize)> = Vec::new();
    for row in &report.rows {
        if !cells.contains(&(row.record_bytes, row.threads)) {
            cells.push((row.record_bytes, row.threads));
        }
    }
    let find = |system: &str, bytes: usize, threads: usize| {
        report
            .rows
            .iter()
            .find(|r| r.system == system && r.record_bytes == bytes && r.threads == threads)
    };
    let mut out = String::new();
    out.push_str(&format!(
        "Durable commits per second ({}; {} s per cell; p99 in µs in brackets).\n\n",
        report.machine, report.seconds
    ));
    out.push_str("| record | threads |");
    for s in &systems {
        out.push_str(&format!(" {s} |"));
    }
    out.push_str(" smlog / best peer | smlog / device pwrite |\n|---|---:|");
    for _ in &systems {
        out.push_str("---:|");
    }
    out.push_str("---:|---:|\n");
    for &(bytes, threads) in &cells {
        out.push_str(&format!("| {} | {threads} |", size_name(bytes)));
        for s in &systems {
            match find(s, bytes, threads) {
                Some(r) => out.push_str(&format!(" {:.0} ({:.0}) |", r.commits_per_sec, r.p99_us)),
                None => out.push_str(" - |"),
            }
        }
        let smlog = find("smlog", bytes, threads).map_or(0.0, |r| r.commits_per_sec);
        let best_peer = report
            .rows
            .iter()
            .filter(|r| {
                r.record_bytes == bytes
                    && r.threads == threads
                    && r.system != "smlog"
                    && !r.system.starts_with("device")
            })
            .map(|r| r.commits_per_sec)
            .fold(0.0, f64::max);
        let device =
            find(System::DevicePwrite.name(), bytes, threads).map_or(0.0, |r| r.commits_per_sec);
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}", a / b)
            } else {
                "-".into()
            }
        };
        out.push_str(&format!(
            " {} | {} |\n",
            ratio(smlog, best_peer),
            ratio(smlog, device)
        ));
    }
    if !report.recovery.is_empty() {
        out.push_str("\nReopen after a long log (4 KiB records):\n\n| system | MB | seconds | MB/s |\n|---|---:|---:|---:|\n");
        for r in &report.recovery {
            out.push_str(&format!(
                "| {} | {:.0} | {:.3} | {:.0} |\n",
                r.system,
                r.log_bytes as f64 / 1e6,
                r.reopen_secs,
                r.scan_mb_per_sec
            ));
        }
        out.push_str(&format!(
            "\nThe file system's sequential O_DIRECT read rate in the same run: {:.0} MB/s.\n",
            report.smlog_recovery_read_mb_per_sec
        ));
    }
    if !report.fs.is_empty() {
        out.push_str(
            "\nDurable file operations per second (each thread in its own directory): smlog \
             (`Durability::Sync`), the host file system with fsync of file and directory, SQLite \
             holding the namespace as tables (one transaction per operation):\n\n\
             | op | threads | smlog | p99 µs | host + fsync | p99 µs | sqlite | p99 µs | smlog / host | smlog / sqlite |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &report.fs {
            out.push_str(&format!(
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |\n",
                format!("{:?}", r.fs.op).to_lowercase(),
                r.fs.threads,
                r.fs.ops_per_sec,
                r.fs.p99_us,
                r.fs.baseline_ops_per_sec,
                r.fs.baseline_p99_us,
                r.sqlite_ops_per_sec,
                r.sqlite_p99_us,
                r.fs.ratio,
                r.fs.ops_per_sec / r.sqlite_ops_per_sec.max(1e-9)
            ));
        }
    }
    out
}

fn write_results(report: &CompareReport, out: &Path) -> Result<(), String> {
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(out.join("results.json"), json).map_err(|e| e.to_string())?;
    std::fs::write(out.join("results.md"), markdown(report)).map_err(|e| e.to_string())?;
    if let Err(e) = charts(report, out) {
        // The figures are written; a machine without a font still gets them.
        eprintln!("smlog bench compare: no charts: {e}");
    }
    Ok(())
}

/// Fonts the charts can use, first found wins.
const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// The font the charts' text is drawn with, if this machine has one.
pub fn chart_font() -> Option<&'static str> {
    FONTS.into_iter().find(|p| Path::new(p).exists())
}

/// Registers a font for chart text (plotters draws text with ab_glyph).
fn register_font() -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = chart_font()
                .and_then(|p| std::fs::read(p).ok())
                .ok_or("no font for the charts' text (apt-get install -y fonts-dejavu-core)")?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| "the chart font is not a font".to_string())
        })
        .clone()
}

const COLORS: [RGBColor; 8] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn systems_of(report: &CompareReport) -> Vec<&'static str> {
    let mut seen = Vec::new();
    for row in &report.rows {
        if !seen.contains(&row.system) {
            seen.push(row.system);
        }
    }
    seen
}

/// Commits/s against threads for `bytes`, one line per system (log-log).
fn throughput_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    report: &CompareReport,
    bytes: usize,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let rows: Vec<&PeerRow> = report
        .rows
        .iter()
        .filter(|r| r.record_bytes == bytes)
        .collect();
    let max_threads = rows.iter().map(|r| r.threads).max().unwrap_or(1) as f64;
    let max_rate = rows.iter().map(|r| r.commits_per_sec).fold(1.0, f64::max);
    let min_rate = rows
        .iter()
        .map(|r| r.commits_per_sec)
        .fold(max_rate, f64::min)
        .max(1.0);
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Durable commits/s, {} records", size_name(bytes)),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0.8f64..max_threads * 1.25).log_scale(),
            (min_rate / 2.0..max_rate * 2.0).log_scale(),
        )
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("committing threads")
        .y_desc("commits/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    let lines = systems_of(report)
        .into_iter()
        .map(|system| {
            let points = rows
                .iter()
                .filter(|r| r.system == system)
                .map(|r| (r.threads as f64, r.commits_per_sec.max(1.0)))
                .collect();
            (system, points)
        })
        .collect();
    draw_lines(&mut chart, lines)?;
    root.present().map_err(|e| e.to_string())
}

/// p50, p99 and p99.9 at 16 threads (or the nearest count run) for `bytes`, per system.
fn latency_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    report: &CompareReport,
    bytes: usize,
    threads: usize,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let rows: Vec<&PeerRow> = report
        .rows
        .iter()
        .filter(|r| r.record_bytes == bytes && r.threads == threads)
        .collect();
    let max = rows.iter().map(|r| r.p999_us).fold(10.0, f64::max);
    let min = rows.iter().map(|r| r.p50_us).fold(max, f64::min).max(1.0);
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Commit latency at {threads} threads, {} records",
                size_name(bytes)
            ),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.2f64..2.2, (min / 2.0..max * 2.0).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(3)
        .x_label_formatter(&|x| match x.round() as i64 {
            0 => "p50".into(),
            1 => "p99".into(),
            2 => "p99.9".into(),
            _ => String::new(),
        })
        .y_desc("microseconds")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    let lines = systems_of(report)
        .into_iter()
        .map(|system| {
            let points = rows
                .iter()
                .filter(|r| r.system == system)
                .flat_map(|r| [(0.0, r.p50_us), (1.0, r.p99_us), (2.0, r.p999_us)])
                .map(|(x, y)| (x, y.max(1.0)))
                .collect();
            (system, points)
        })
        .collect();
    draw_lines(&mut chart, lines)?;
    root.present().map_err(|e| e.to_string())
}

/// One line with its points per system (smlog drawn wider), and the legend.
fn draw_lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    lines: Vec<(&'static str, Vec<(f64, f64)>)>,
) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (system, points)) in lines.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let width = if system == "smlog" { 3 } else { 1 };
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(width)))
            .map_err(|e| e.to_string())?
            .label(system)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())
}

/// `throughput-<bytes>.svg/png` per record size and `latency-<threads>t-<bytes>.svg/png`.
pub fn charts(report: &CompareReport, out: &Path) -> Result<(), String> {
    register_font()?;
    const SIZE: (u32, u32) = (900, 600);
    let mut sizes: Vec<usize> = report.rows.iter().map(|r| r.record_bytes).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut threads: Vec<usize> = report.rows.iter().map(|r| r.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    let latency_threads = threads
        .iter()
        .copied()
        .min_by_key(|t| t.abs_diff(16))
        .unwrap_or(16);
    // Each chart twice: SVG, then PNG, from the same drawing code.
    macro_rules! svg_and_png {
        ($name:expr, |$root:ident| $draw:expr) => {{
            let svg = out.join(format!("{}.svg", $name));
            let $root = SVGBackend::new(&svg, SIZE).into_drawing_area();
            $draw?;
            let png = out.join(format!("{}.png", $name));
            let $root = BitMapBackend::new(&png, SIZE).into_drawing_area();
            $draw?;
        }};
    }
    for &bytes in &sizes {
        svg_and_png!(format!("throughput-{bytes}"), |root| throughput_chart(
            root, report, bytes
        ));
        svg_and_png!(format!("latency-{latency_threads}t-{bytes}"), |root| {
            latency_chart(root, report, bytes, latency_threads)
        });
    }
    Ok(())
}
