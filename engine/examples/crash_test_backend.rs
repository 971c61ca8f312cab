//! Crash-testing your own backend with smlog's harness.
//!
//! A tiny mail store on the engine: a message is delivered as a file in `new/`, read by
//! renaming it into `cur/`, deleted by unlinking it. Its invariants: each message is in
//! exactly one of the two directories, whole. The harness runs random deliveries, reads
//! and deletes through crashes, failed writes and fdatasyncs, and crashes during recovery,
//! and checks after every recovery that the store equals the model after every operation
//! acknowledged durable (and maybe a few more, each whole), and the invariants.
//!
//! Run: `cargo run -p smlog --features sim --example crash_test_backend [SEEDS]`

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use smlog::{FsError, Ino, NewAttrs, RenameFlags, TxnOptions, ROOT_INO};
use smlog_recovery::harness::{run_seed, shrink, Config, Scenario, SimEngine, Stats};

/// The mail store's operations.
#[derive(Clone, Debug)]
enum MailOp {
    Deliver { id: u32, len: usize },
    MarkRead { id: u32 },
    Delete { id: u32 },
}

/// Where each message is, and its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Mailbox {
    new: BTreeMap<u32, Vec<u8>>,
    cur: BTreeMap<u32, Vec<u8>>,
}

fn body(id: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| (id as usize * 31 + i * 7) as u8).collect()
}

const ATTRS: NewAttrs = NewAttrs {
    mode: 0o600,
    uid: 8,
    gid: 8,
    umask: 0,
};

struct MailStore;

impl MailStore {
    fn dir(engine: &SimEngine, name: &[u8]) -> Result<Ino, FsError> {
        Ok(engine.lookup(ROOT_INO, name)?.ino)
    }

    fn list(engine: &SimEngine, name: &[u8]) -> Result<BTreeMap<u32, Vec<u8>>, FsError> {
        let dir = Self::dir(engine, name)?;
        let mut out = BTreeMap::new();
        for entry in engine.readdir(dir, None, usize::MAX)? {
            let id: u32 = String::from_utf8_lossy(&entry.name)
                .parse()
                .unwrap_or(u32::MAX);
            let size = engine.getattr(entry.ino)?.size as usize;
            out.insert(id, engine.read(entry.ino, 0, size)?);
        }
        Ok(out)
    }
}

impl Scenario for MailStore {
    type Op = MailOp;
    type Model = Mailbox;

    fn model(&self) -> Mailbox {
        Mailbox::default()
    }

    fn setup(&self) -> Vec<MailOp> {
        // The directories are made by the first delivery's `run` when missing.
        Vec::new()
    }

    fn random_op(&self, rng: &mut ChaCha8Rng, model: &Mailbox) -> MailOp {
        let known: Vec<u32> = model.new.keys().chain(model.cur.keys()).copied().collect();
        match rng.gen_range(0..3) {
            0 if !known.is_empty() => MailOp::MarkRead {
                id: known[rng.gen_range(0..known.len())],
            },
            1 if !known.is_empty() => MailOp::Delete {
                id: known[rng.gen_range(0..known.len())],
            },
            _ => MailOp::Deliver {
                id: rng.gen_range(0..1000),
                len: rng.gen_range(1..100_000),
            },
        }
    }

    fn run(&self, engine: &SimEngine, op: &MailOp, options: TxnOptions) -> Result<(), FsError> {
        for name in [&b"new"[..], b"cur"] {
            if let Err(FsError::NotFound) = engine.lookup(ROOT_INO, name) {
                engine.mkdir(ROOT_INO, name, ATTRS, options)?;
            }
        }
        let (new, cur) = (Self::dir(engine, b"new")?, Self::dir(engine, b"cur")?);
        match op {
            MailOp::Deliver { id, len } => {
                let name = id.to_string();
                if engine.lookup(cur, name.as_bytes()).is_ok() {
                    return Err(FsError::Exists);
                }
                // Written under a temporary name, then renamed: never half visible.
                let tmp = format!("{id}.tmp");
                // A delivery cut by a crash may have left its temporary file.
                match engine.unlink(new, tmp.as_bytes(), options) {
                    Ok(()) | Err(FsError::NotFound) => {}
                    Err(e) => return Err(e),
                }
                let file = engine.create(new, tmp.as_bytes(), ATTRS, options)?;
                let bytes = body(*id, *len);
                for (i, chunk) in bytes.chunks(64 * 1024).enumerate() {
                    engine.write(file.ino, (i * 64 * 1024) as u64, chunk, options)?;
                }
                let flags = RenameFlags {
                    no_replace: true,
                    exchange: false,
                };
                match engine.rename(new, tmp.as_bytes(), new, name.as_bytes(), flags, options) {
                    Err(FsError::Exists) => {
                        engine.unlink(new, tmp.as_bytes(), options)?;
                        Err(FsError::Exists)
                    }
                    other => other,
                }
            }
            MailOp::MarkRead { id } => {
                let name = id.to_string();
                engine.rename(
                    new,
                    name.as_bytes(),
                    cur,
                    name.as_bytes(),
                    RenameFlags::default(),
                    options,
                )
            }
            MailOp::Delete { id } => {
                let name = id.to_string();
                match engine.unlink(new, name.as_bytes(), options) {
                    Err(FsError::NotFound) => engine.unlink(cur, name.as_bytes(), options),
                    other => other,
                }
            }
        }
    }

    fn apply(&self, model: &mut Mailbox, op: &MailOp) -> Result<(), i32> {
        match op {
            MailOp::Deliver { id, len } => {
                if model.new.contains_key(id) || model.cur.contains_key(id) {
                    return Err(libc_eexist());
                }
                model.new.insert(*id, body(*id, *len));
                Ok(())
            }
            MailOp::MarkRead { id } => match model.new.remove(id) {
                Some(bytes) => {
                    model.cur.insert(*id, bytes);
                    Ok(())
                }
                None => Err(libc_enoent()),
            },
            MailOp::Delete { id } => {
                if model.new.remove(id).is_some() || model.cur.remove(id).is_some() {
                    Ok(())
                } else {
                    Err(libc_enoent())
                }
            }
        }
    }

    fn matches(&self, engine: &SimEngine, model: &Mailbox) -> Result<bool, FsError> {
        if engine.lookup(ROOT_INO, b"new").is_err() {
            return Ok(model == &Mailbox::default());
        }
        let new = Self::list(engine, b"new")?;
        let cur = Self::list(engine, b"cur")?;
        // A delivery cut by the crash leaves its temporary file: not a message.
        let new: BTreeMap<u32, Vec<u8>> =
            new.into_iter().filter(|(id, _)| *id != u32::MAX).collect();
        Ok(new == model.new && cur == model.cur)
    }

    fn check(&self, engine: &SimEngine) -> Result<(), String> {
        let fsck = engine.fsck();
        if !fsck.is_clean() {
            return Err(format!("fsck: {:?}", fsck.problems));
        }
        if engine.lookup(ROOT_INO, b"new").is_err() {
            return Ok(());
        }
        let new = Self::list(engine, b"new").map_err(|e| e.to_string())?;
        let cur = Self::list(engine, b"cur").map_err(|e| e.to_string())?;
        match new
            .keys()
            .find(|id| **id != u32::MAX && cur.contains_key(id))
        {
            Some(id) => Err(format!("message {id} is in both new/ and cur/")),
            None => Ok(()),
        }
    }
}

fn libc_eexist() -> i32 {
    17
}

fn libc_enoent() -> i32 {
    2
}

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let config = Config::default();
    let mut total = Stats::default();
    for seed in 0..seeds {
        match run_seed(&MailStore, seed, &config) {
            Ok(stats) => total.add(&stats),
            Err(failure) => {
                let shortest = shrink(&MailStore, seed, &config, &failure);
                eprintln!("FAILED: {failure}");
                eprintln!("shortest failing prefix: {} operations", shortest.ops);
                for line in &shortest.history {
                    eprintln!("    {line}");
                }
                std::process::exit(1);
            }
        }
    }
    println!(
        "mail store: {seeds} seeds, {} crash-recover cycles, {} operations, {} faults: \
         every invariant held",
        total.cycles, total.ops, total.faults
    );
}
