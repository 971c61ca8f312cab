//! SQLite as a peer of the engine's file operations: the same namespace as tables (inodes,
//! directory entries, 4 KiB blocks), run by [`crate::fs`]'s loop for `smlog-bench compare`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::fs::{measure, FsBenchOptions, FsBenchReport, FsOp, Target};

/// A file-operation row of the comparison: smlog and the host file system, then SQLite.
#[derive(Clone, Debug, Serialize)]
pub struct FsCompareRow {
    /// smlog and the host, as `smlog bench fs` reports them.
    #[serde(flatten)]
    pub fs: FsBenchReport,
    /// Durable operations per second on SQLite holding the namespace as tables.
    pub sqlite_ops_per_sec: f64,
    /// SQLite p50, microseconds.
    pub sqlite_p50_us: f64,
    /// SQLite p99, microseconds.
    pub sqlite_p99_us: f64,
}

/// Runs [`crate::fs::fs_bench`] (smlog, then the host), then SQLite on the same operation.
pub fn fs_compare(options: &FsBenchOptions) -> Result<FsCompareRow, String> {
    let fs = crate::fs::fs_bench(options)?;
    let base = options
        .dir
        .join(format!("smlog-bench-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let result = (|| {
        std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
        let sqlite = Arc::new(SqliteTarget {
            path: base.join("fs.sqlite"),
        });
        measure(sqlite, options.threads, options.op, options.seconds)
    })();
    let _ = std::fs::remove_dir_all(&base);
    let (sqlite_ops, sqlite_hist) = result?;
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64;
    Ok(FsCompareRow {
        fs,
        sqlite_ops_per_sec: sqlite_ops,
        sqlite_p50_us: q(&sqlite_hist, 0.5),
        sqlite_p99_us: q(&sqlite_hist, 0.99),
    })
}

/// SQLite holding the same namespace as tables (inodes, directory entries, 4 KiB blocks),
/// WAL mode, `synchronous=FULL`, one SQL transaction per operation; each thread has its own
/// connection and directory.
struct SqliteTarget {
    path: PathBuf,
}

struct SqliteDir {
    connection: rusqlite::Connection,
    dir: i64,
    file: i64,
    block: Vec<u8>,
    renames: u64,
}

impl SqliteTarget {
    fn open(&self) -> Result<rusqlite::Connection, String> {
        let e = |e: rusqlite::Error| e.to_string();
        let connection = rusqlite::Connection::open(&self.path).map_err(e)?;
        connection
            .busy_timeout(Duration::from_secs(120))
            .map_err(e)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(e)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(e)?;
        connection
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS inodes (ino INTEGER PRIMARY KEY, kind INTEGER, \
                     mode INTEGER, size INTEGER, nlink INTEGER, mtime INTEGER);
                 CREATE TABLE IF NOT EXISTS dirents (parent INTEGER, name BLOB, ino INTEGER, \
                     PRIMARY KEY (parent, name)) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS blocks (ino INTEGER, idx INTEGER, data BLOB, \
                     PRIMARY KEY (ino, idx)) WITHOUT ROWID;",
            )
            .map_err(e)?;
        Ok(connection)
    }
}

fn sqlite_create(
    c: &rusqlite::Connection,
    parent: i64,
    name: &str,
    kind: i64,
) -> rusqlite::Result<i64> {
    let tx = c.unchecked_transaction()?;
    tx.execute(
        "INSERT INTO inodes (kind, mode, size, nlink, mtime) VALUES (?1, 420, 0, 1, 0)",
        [kind],
    )?;
    let ino = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO dirents (parent, name, ino) VALUES (?1, ?2, ?3)",
        rusqlite::params![parent, name.as_bytes(), ino],
    )?;
    tx.commit()?;
    Ok(ino)
}

impl Target for SqliteTarget {
    type Dir = SqliteDir;
    fn setup(&self, thread: usize) -> Result<SqliteDir, String> {
        let e = |e: rusqlite::Error| e.to_string();
        let connection = self.open()?;
        let dir = sqlite_create(&connection, 1, &format!("t{thread}"), 2).map_err(e)?;
        let file = sqlite_create(&connection, dir, "data", 1).map_err(e)?;
        sqlite_create(&connection, dir, "r0", 1).map_err(e)?;
        Ok(SqliteDir {
            connection,
            dir,
            file,
            block: vec![0x5A; 4096],
            renames: 0,
        })
    }

    fn op(&self, d: &mut SqliteDir, op: FsOp, n: u64) -> Result<(), String> {
        let e = |e: rusqlite::Error| e.to_string();
        let op = op.nth(n);
        let c = &d.connection;
        match op {
            FsOp::Create => sqlite_create(c, d.dir, &format!("f{n}"), 1)
                .map(drop)
                .map_err(e),
            FsOp::Write4k => {
                d.block[0] = n as u8;
                let idx = (n % 256) as i64;
                let tx = c.unchecked_transaction().map_err(e)?;
                tx.execute(
                    "INSERT OR REPLACE INTO blocks (ino, idx, data) VALUES (?1, ?2, ?3)",
                    rusqlite::params![d.file, idx, &d.block],
                )
                .map_err(e)?;
                tx.execute(
                    "UPDATE inodes SET size = max(size, ?2), mtime = ?3 WHERE ino = ?1",
                    rusqlite::params![d.file, (idx + 1) * 4096, n as i64],
                )
                .map_err(e)?;
                tx.commit().map_err(e)
            }
            FsOp::Rename => {
                d.renames += 1;
                let (from, to) = if d.renames % 2 == 1 {
                    ("r0", "r1")
                } else {
                    ("r1", "r0")
                };
                c.execute(
                    "UPDATE dirents SET name = ?3 WHERE parent = ?1 AND name = ?2",
                    rusqlite::params![d.dir, from.as_bytes(), to.as_bytes()],
                )
                .map(drop)
                .map_err(e)
            }
            FsOp::Mixed => {
                let name = format!("f{}", n - 3);
                let tx = c.unchecked_transaction().map_err(e)?;
                let ino: i64 = tx
                    .query_row(
                        "DELETE FROM dirents WHERE parent = ?1 AND name = ?2 RETURNING ino",
                        rusqlite::params![d.dir, name.as_bytes()],
                        |row| row.get(0),
                    )
                    .map_err(e)?;
                tx.execute("DELETE FROM inodes WHERE ino = ?1", [ino])
                    .map_err(e)?;
                tx.execute("DELETE FROM blocks WHERE ino = ?1", [ino])
                    .map_err(e)?;
                tx.commit().map_err(e)
            }
        }
    }
}
