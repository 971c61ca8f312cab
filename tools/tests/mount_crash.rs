//! Crash under load: SIGKILL `smlog mount` while dbench or a tar extraction runs on it
//! and writers publish files (write a temporary name, fsync, rename, fsync the
//! directory). After each kill: detach the dead mount, `smlog recover` then `smlog fsck`
//! must be clean, and on
//! the next mount every file whose directory fsync returned before the kill has its exact
//! content, no rename is half done, and no file holds other bytes than its writer's.
//! `SMLOG_MOUNT_CRASH_ITERATIONS` kills (default 10); every third mount uses the
//! kernel's writeback cache.

mod mount_common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mount_common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The bytes of file `i` of writer `w` in iteration `k`: derived, so a check needs no copy.
fn content(k: u32, w: u32, i: u32) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(u64::from(k) << 40 | u64::from(w) << 32 | u64::from(i));
    let len = match rng.gen_range(0..4) {
        0 => rng.gen_range(0..100),
        1 => rng.gen_range(100..8192),
        _ => rng.gen_range(8192..100_000),
    };
    let mut bytes = vec![0; len];
    rng.fill(&mut bytes[..]);
    bytes
}

/// A file a writer meant to publish.
#[derive(Clone, Debug)]
struct Attempt {
    k: u32,
    w: u32,
    i: u32,
    /// Directory of the file, relative to the mount point.
    dir: String,
    /// Whether the directory fsync after the rename returned: the file must be there.
    published: bool,
}

impl Attempt {
    fn tmp(&self) -> String {
        format!("{}/tmp-{}", self.dir, self.i)
    }
    fn name(&self) -> String {
        format!("{}/file-{}", self.dir, self.i)
    }
}

fn publish(mnt: &Path, attempt: &Attempt) -> std::io::Result<()> {
    let data = content(attempt.k, attempt.w, attempt.i);
    let mut file = fs::File::create(mnt.join(attempt.tmp()))?;
    file.write_all(&data)?;
    file.sync_all()?;
    drop(file);
    fs::rename(mnt.join(attempt.tmp()), mnt.join(attempt.name()))?;
    fs::File::open(mnt.join(&attempt.dir))?.sync_all()
}

/// Writer `w` of iteration `k`: publishes files until the mount dies or `stop`.
fn writer(mnt: PathBuf, k: u32, w: u32, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<Attempt>>>) {
    let dir = format!("w-{k}-{w}");
    if fs::create_dir(mnt.join(&dir)).is_err() {
        return;
    }
    if fs::File::open(&mnt).and_then(|d| d.sync_all()).is_err() {
        return;
    }
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let attempt = Attempt {
            k,
            w,
            i,
            dir: dir.clone(),
            published: false,
        };
        let index = {
            let mut log = log.lock().unwrap();
            log.push(attempt.clone());
            log.len() - 1
        };
        if publish(&mnt, &attempt).is_err() {
            return;
        }
        log.lock().unwrap()[index].published = true;
    }
}

/// Checks every attempt on a fresh mount; returns how many were published.
fn check(mnt: &Path, attempts: &[Attempt]) -> usize {
    let mut published = 0;
    for a in attempts {
        let name = mnt.join(a.name());
        let tmp = mnt.join(a.tmp());
        let at_name = fs::read(&name).ok();
        let at_tmp = tmp.exists();
        let context = format!("{a:?}");
        if a.published {
            published += 1;
            let bytes = at_name.unwrap_or_else(|| panic!("{context}: a published file is gone"));
            assert!(
                bytes == content(a.k, a.w, a.i),
                "{context}: content differs"
            );
            assert!(!at_tmp, "{context}: the temporary name is back");
        } else {
            assert!(!(at_tmp && at_name.is_some()), "{context}: half renamed");
            if let Some(bytes) = at_name {
                // Renamed after its fsync: the whole content.
                assert!(
                    bytes == content(a.k, a.w, a.i),
                    "{context}: content differs"
                );
            }
        }
    }
    published
}

/// Load beside the writers: dbench (two clients) on even iterations, a tar extraction
/// loop on odd ones.
fn start_load(root: &Path, mnt: &Path, k: u32) -> Option<Child> {
    let dir = mnt.join(format!("load-{k}"));
    fs::create_dir(&dir).ok()?;
    let mut command = if k.is_multiple_of(2) && program_exists("dbench") {
        let mut c = Command::new("dbench");
        c.args(["-t", "60", "-D"]).arg(&dir).arg("2");
        c
    } else {
        let mut c = Command::new("bash");
        c.args([
            "-c",
            &format!(
                "for n in $(seq 100); do mkdir x$n && tar -C x$n -xf {} || exit 0; done",
                root.join("load.tar").display()
            ),
        ]);
        c
    };
    let child = command
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Some(child)
}

#[test]
fn sigkill_under_load_loses_no_fsynced_file_and_fsck_stays_clean() {
    if let Some(why) = fuse_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let iterations: u32 = std::env::var("SMLOG_MOUNT_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let tmp = test_dir("crash");
    let root = tmp.path();
    let dir = root.join("engine");
    let mnt = root.join("mnt");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    sh(
        root,
        &format!("tar -C {} -cf load.tar engine/src docs", repo.display()),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut published = 0;
    let mut last_batch = 0;
    for k in 0..iterations {
        let started = std::time::Instant::now();
        // Every third mount lets the kernel cache writes: fsync must still write them
        // back and make them durable before it returns.
        let args: &[&str] = if k % 3 == 2 {
            &["--writeback-cache"]
        } else {
            &[]
        };
        let m = match Mounted::start(&dir, &mnt, args) {
            Ok(m) => m,
            Err(NotPermitted(log)) => {
                eprintln!("skipped: mounting is not permitted here: {log}");
                return;
            }
        };
        // The last kill's files now (all of them again at the end).
        let checked_from = attempts.len() - last_batch;
        published += check(&mnt, &attempts[checked_from..]);
        let checked = started.elapsed();
        let mut load = start_load(root, &mnt, k);
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (mnt, stop, log) = (mnt.clone(), Arc::clone(&stop), Arc::clone(&log));
                std::thread::spawn(move || writer(mnt, k, w, stop, log))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1500)));
        let killed_at = started.elapsed();
        m.kill();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        if let Some(load) = load.as_mut() {
            let _ = load.kill();
            let _ = load.wait();
        }
        let batch: Vec<Attempt> = log.lock().unwrap().drain(..).collect();
        last_batch = batch.len();
        attempts.extend(batch);
        let before_recovery = started.elapsed();
        let recovered = recover_and_fsck(&dir);
        let finished = recovered.lines().filter(|l| l.contains("txn ")).count();
        eprintln!(
            "kill {k}: {last_batch} files attempted, {finished} in flight finished; \
             mounted and checked {checked:.1?}, killed {killed_at:.1?}, recovery from \
             {before_recovery:.1?} to {:.1?}",
            started.elapsed()
        );
    }
    let m = Mounted::start(&dir, &mnt, &[]).expect("mounted before");
    let last = attempts.iter().filter(|a| a.published).count();
    assert_eq!(check(&mnt, &attempts), last);
    published = published.max(last);
    m.unmount();
    assert_fsck_clean(&dir);
    eprintln!(
        "{iterations} kills under load: {} files attempted, {last} published and intact",
        attempts.len()
    );
    assert!(published > 0, "no writer published a file before a kill");
}
