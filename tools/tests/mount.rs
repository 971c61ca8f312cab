//! `smlog mount` used by programs nobody here wrote: coreutils, tar, git, dbench; the
//! errno Linux gives for bad input; permissions; contents identical across a remount and
//! fsck clean after. Each test skips with one line when FUSE is not available.

mod mount_common;

use std::ffi::OsStr;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use mount_common::*;

macro_rules! skip_without_fuse {
    () => {
        if let Some(why) = fuse_missing() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Mounts, or skips the test (returns None) when mounting is not permitted here.
fn mount(dir: &Path, mountpoint: &Path, args: &[&str]) -> Option<Mounted> {
    match Mounted::start(dir, mountpoint, args) {
        Ok(m) => Some(m),
        Err(NotPermitted(log)) => {
            eprintln!("skipped: mounting is not permitted here: {log}");
            None
        }
    }
}

/// A tree with what `cp -a` and tar must carry: nested directories, modes (setuid
/// included), hard links, symbolic links, an empty file, a 3 MB file, a name that is not
/// UTF-8, and this repository's engine sources.
fn make_source_tree(root: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    sh(
        root,
        &format!(
            "mkdir -p src/a/b/c src/empty-dir
             cp -r {repo}/engine/src src/code
             echo private > src/a/f && chmod 600 src/a/f
             chmod 751 src/a/b
             ln -s ../code src/a/link
             ln -s /nowhere/at/all src/dangling
             ln src/a/f src/a/hard
             head -c 3000000 /dev/urandom > src/big
             : > src/empty
             printf data > $'src/\\xff\\xfename'
             cp src/code/lib.rs src/setuid && chmod 4755 src/setuid
             touch -h -d '2001-02-03 04:05:06' src/a/link
             touch -d '1999-12-31 23:59:59' src/a/b/c src/big",
            repo = repo.display()
        ),
    );
}

#[test]
fn coreutils_tar_and_git_work_and_a_remount_shows_the_same_tree() {
    skip_without_fuse!();
    let tmp = test_dir("programs");
    let root = tmp.path();
    let dir = root.join("engine");
    let mnt = root.join("mnt");
    let Some(m) = mount(&dir, &mnt, &[]) else {
        return;
    };
    make_source_tree(root);

    // coreutils: a tree in and out with cp -a, then mv, ln, ln -s, rm -r, stat, touch -d.
    sh(
        root,
        "cp -a src mnt/tree
         diff -r --no-dereference src mnt/tree
         cp -a mnt/tree out && diff -r --no-dereference src out
         [ \"$(stat -c '%a %h %s' mnt/tree/a/f)\" = \"$(stat -c '%a %h %s' src/a/f)\" ]
         [ \"$(stat -c '%a' mnt/tree/setuid)\" = 4755 ]
         [ \"$(stat -c '%Y' mnt/tree/big)\" = \"$(stat -c '%Y' src/big)\" ]
         [ \"$(readlink mnt/tree/a/link)\" = ../code ]
         mv mnt/tree/a/b mnt/tree/moved && [ -d mnt/tree/moved/c ] && [ ! -e mnt/tree/a/b ]
         mv mnt/tree/big mnt/tree/moved/c/big && cmp src/big mnt/tree/moved/c/big
         ln mnt/tree/empty mnt/tree/empty2 && [ \"$(stat -c %h mnt/tree/empty)\" = 2 ]
         ln -s empty mnt/tree/sym && [ \"$(readlink mnt/tree/sym)\" = empty ]
         touch -d '2011-11-11 11:11:11.5' mnt/tree/empty
         [ \"$(stat -c %y mnt/tree/empty2)\" = '2011-11-11 11:11:11.500000000 +0000' ]
         rm -r mnt/tree/code && [ ! -e mnt/tree/code ]
         mkdir mnt/tree/code && cp -a src/code/. mnt/tree/code/
         diff -r --no-dereference src/code mnt/tree/code",
    );

    // tar: extract an archive and create it again from the mount: the same bytes.
    sh(
        root,
        "opts='--sort=name --format=gnu --owner=0 --group=0 --numeric-owner'
         tar $opts -C src -cf a1.tar .
         mkdir mnt/x && tar -C mnt/x -xf a1.tar
         tar $opts -C mnt/x -cf a2.tar .
         [ \"$(sha256sum < a1.tar)\" = \"$(sha256sum < a2.tar)\" ]",
    );

    // git: a repository on the mount, packed and checked.
    sh(
        root,
        "export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t \
                GIT_COMMITTER_EMAIL=t@t GIT_CONFIG_NOSYSTEM=1 HOME=$PWD
         mkdir mnt/repo && cd mnt/repo
         git init -q
         cp -r ../../src/code . && git add . && git commit -qm one
         echo more >> code/lib.rs && git commit -qam two
         git gc -q && git fsck --full --strict
         [ \"$(git rev-list --count HEAD)\" = 2 ]
         git status --porcelain | wc -l | grep -qx 0",
    );

    let before = manifest(&mnt);
    let log = m.unmount();
    assert!(log.contains("unmounted; checkpoint"), "{log}");
    assert_fsck_clean(&dir);
    let m = mount(&dir, &mnt, &[]).expect("mounted once already");
    assert_eq!(manifest(&mnt), before, "the tree changed across a remount");
    m.unmount();
}

#[test]
fn dbench_runs_on_a_mount_and_leaves_it_clean() {
    skip_without_fuse!();
    if !program_exists("dbench") {
        eprintln!("skipped: dbench is missing (apt-get install -y dbench)");
        return;
    }
    let seconds: u32 = std::env::var("SMLOG_DBENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let tmp = test_dir("dbench");
    let dir = tmp.path().join("engine");
    let mnt = tmp.path().join("mnt");
    let Some(m) = mount(&dir, &mnt, &[]) else {
        return;
    };
    fs::create_dir(m.path("db")).unwrap();
    let out = run_output(
        Command::new("dbench")
            .args(["-t", &seconds.to_string(), "-D"])
            .arg(m.path("db"))
            .arg("4"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().find(|l| l.starts_with("Throughput"));
    assert!(
        out.status.success() && summary.is_some(),
        "dbench failed:\n{stdout}"
    );
    eprintln!("{}", summary.unwrap_or_default());
    let before = manifest(&mnt);
    m.unmount();
    assert_fsck_clean(&dir);
    let m = mount(&dir, &mnt, &[]).expect("mounted once already");
    assert_eq!(manifest(&mnt), before);
    m.unmount();
}

/// Writes `bytes` to `path`, waiting (10 s at most, else fails saying `never`) while it
/// gets ENOSPC: the space of a file the kernel let go comes back once its FORGET has been
/// handled, which may still be at work on another of the mount's threads.
fn write_when_room(path: &Path, bytes: &[u8], never: &str) {
    let mut tries = 0;
    while let Err(e) = fs::write(path, bytes) {
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        tries += 1;
        assert!(tries < 100, "{never}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `--capacity` makes a small disk: df tells it, a write past it is ENOSPC, and the space
/// a delete frees is usable as soon as the kernel lets the file go.
#[test]
fn a_full_mount_says_so_and_frees_space_when_a_file_goes() {
    skip_without_fuse!();
    let tmp = test_dir("full");
    let dir = tmp.path().join("engine");
    let mnt = tmp.path().join("mnt");
    let Some(m) = mount(&dir, &mnt, &["--capacity", "8M"]) else {
        return;
    };
    let df = sh(&mnt, "stat -f -c '%S %b %a' .");
    let fields: Vec<u64> = df.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert_eq!(fields[0] * fields[1], 8 << 20, "{df}");
    let chunk = vec![3u8; 6 << 20];
    fs::write(m.path("a"), &chunk).unwrap();
    sh(&mnt, "sync");
    let full = fs::write(m.path("b"), &chunk);
    assert_eq!(errno_of(full), Some(libc::ENOSPC));
    fs::remove_file(m.path("a")).unwrap();
    fs::remove_file(m.path("b")).unwrap();
    // The space comes back as the kernel forgets the files, which it tells the mount as
    // each unlink returns.
    write_when_room(
        &m.path("c"),
        &chunk,
        "the removed files' space never came back",
    );
    sh(&mnt, "sync");
    assert_eq!(fs::read(m.path("c")).unwrap(), chunk);
    m.unmount();
    assert_fsck_clean(&dir);
}

/// An unlinked file's space is held while it is open (the kernel opens files without
/// telling the mount, so the hold follows the kernel's own count of the inode) and comes
/// back once it is closed, before any unmount.
#[test]
fn an_unlinked_open_file_holds_its_space_until_closed() {
    skip_without_fuse!();
    let tmp = test_dir("held");
    let dir = tmp.path().join("engine");
    let mnt = tmp.path().join("mnt");
    let Some(m) = mount(&dir, &mnt, &["--capacity", "8M"]) else {
        return;
    };
    let chunk = vec![5u8; 6 << 20];
    fs::write(m.path("a"), &chunk).unwrap();
    sh(&mnt, "sync");
    // A listing with attributes (READDIRPLUS) counts as a lookup of each entry too: an
    // overcount here would hold the file past its close below.
    sh(&mnt, "ls -l . > /dev/null");
    let a = fs::File::open(m.path("a")).unwrap();
    fs::remove_file(m.path("a")).unwrap();
    let held = fs::write(m.path("b"), &chunk);
    assert_eq!(
        errno_of(held),
        Some(libc::ENOSPC),
        "the open file's space was freed"
    );
    fs::remove_file(m.path("b")).unwrap();
    assert_eq!(std::io::read_to_string(&a).unwrap().len(), chunk.len());
    drop(a);
    // The kernel gives the inode back (FORGET) as the close returns.
    write_when_room(
        &m.path("b"),
        &chunk,
        "the closed file's space never came back",
    );
    assert_eq!(fs::read(m.path("b")).unwrap(), chunk);
    m.unmount();
    assert_fsck_clean(&dir);
}

/// On a small host file system, df on the mount tells the host's free space, not the
/// engine's 64 GiB capacity. (A 200 MiB tmpfs made by the test, room for the log's first
/// segments; root only.)
#[test]
fn df_tells_the_host_file_systems_free_space_when_it_is_less() {
    skip_without_fuse!();
    let tmp = test_dir("small-host");
    let host = tmp.path().join("host");
    fs::create_dir(&host).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=200m", "none"])
        .arg(&host)
        .output();
    if !mounted.is_ok_and(|out| out.status.success()) {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let dir = host.join("engine");
    let mnt = tmp.path().join("mnt");
    let result = std::panic::catch_unwind(|| {
        let Some(m) = mount(&dir, &mnt, &["--buffered"]) else {
            return;
        };
        let df = sh(&mnt, "stat -f -c '%S %b %a' .");
        let fields: Vec<u64> = df.split_whitespace().map(|f| f.parse().unwrap()).collect();
        let (total, free) = (fields[0] * fields[1], fields[0] * fields[2]);
        assert!(total <= 200 << 20 && free <= total, "{df}");
        assert!(free > 0, "{df}");
        m.unmount();
    });
    let _ = Command::new("umount").arg(&host).status();
    result.unwrap();
}

fn errno_of<T>(result: std::io::Result<T>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

#[test]
fn bad_input_gets_the_errno_linux_gives() {
    skip_without_fuse!();
    let tmp = test_dir("errno");
    let dir = tmp.path().join("engine");
    let mnt = tmp.path().join("mnt");
    let Some(m) = mount(&dir, &mnt, &[]) else {
        return;
    };
    let long = "n".repeat(256);
    assert_eq!(
        errno_of(fs::write(m.path(&long), b"x")),
        Some(libc::ENAMETOOLONG)
    );
    fs::write(m.path(&"n".repeat(255)), b"x").unwrap();

    // Names are bytes: not UTF-8 is fine, and readdir returns them as they are.
    let raw = OsStr::from_bytes(b"\xff\xfe-not-utf8");
    fs::write(m.mountpoint.join(raw), b"bytes").unwrap();
    let names: Vec<_> = fs::read_dir(&m.mountpoint)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.iter().any(|n| n == raw), "{names:?}");

    // Past the largest file: EFBIG, and the file is unchanged.
    let mut file = fs::File::create(m.path("big")).unwrap();
    file.seek(SeekFrom::Start(1 << 44)).unwrap();
    assert_eq!(errno_of(file.write(b"x")), Some(libc::EFBIG));
    assert_eq!(fs::metadata(m.path("big")).unwrap().len(), 0);
    drop(file);

    fs::create_dir_all(m.path("d/sub")).unwrap();
    fs::write(m.path("d/file"), b"x").unwrap();
    assert_eq!(
        errno_of(fs::rename(m.path("d"), m.path("d/sub/d"))),
        Some(libc::EINVAL)
    );
    assert_eq!(errno_of(fs::remove_dir(m.path("d"))), Some(libc::ENOTEMPTY));
    assert_eq!(errno_of(fs::remove_file(m.path("d"))), Some(libc::EISDIR));
    assert_eq!(
        errno_of(fs::remove_dir(m.path("d/file"))),
        Some(libc::ENOTDIR)
    );
    assert_eq!(
        errno_of(fs::hard_link(m.path("d"), m.path("d2"))),
        Some(libc::EPERM)
    );
    assert_eq!(errno_of(fs::create_dir(m.path("d"))), Some(libc::EEXIST));
    assert_eq!(
        errno_of(fs::read_link(m.path("d/file"))),
        Some(libc::EINVAL)
    );
    assert_eq!(
        errno_of(fs::metadata(m.path("nothing"))),
        Some(libc::ENOENT)
    );
    fs::write(m.path("fifo-here"), b"x").unwrap();
    assert_eq!(
        mknod(&m.path("fifo-here"), libc::S_IFIFO | 0o644, 0),
        Err(libc::EEXIST)
    );

    // RENAME_NOREPLACE and RENAME_EXCHANGE.
    fs::write(m.path("p"), b"p").unwrap();
    fs::write(m.path("q"), b"q").unwrap();
    let rename2 = |from: &str, to: &str, flags: u32| {
        let from = std::ffi::CString::new(m.path(from).as_os_str().as_bytes()).unwrap();
        let to = std::ffi::CString::new(m.path(to).as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated paths; renameat2 takes no other pointers.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                flags,
            )
        };
        if r == 0 {
            None
        } else {
            std::io::Error::last_os_error().raw_os_error()
        }
    };
    assert_eq!(
        rename2("p", "q", libc::RENAME_NOREPLACE),
        Some(libc::EEXIST)
    );
    assert_eq!(rename2("p", "q", libc::RENAME_EXCHANGE), None);
    assert_eq!(fs::read(m.path("p")).unwrap(), b"q");
    assert_eq!(fs::read(m.path("q")).unwrap(), b"p");
    assert_eq!(
        rename2("p", "none", libc::RENAME_EXCHANGE),
        Some(libc::ENOENT)
    );

    m.unmount();
    assert_fsck_clean(&dir);
}

#[test]
fn an_unlinked_open_file_stays_readable_and_goes_at_close() {
    skip_without_fuse!();
    let tmp = test_dir("unlinked");
    let dir = tmp.path().join("engine");
    let mnt = tmp.path().join("mnt");
    let Some(m) = mount(&dir, &mnt, &[]) else {
        return;
    };
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(m.path("f"), &data).unwrap();
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("f"))
        .unwrap();
    let ino = file.metadata().unwrap().ino();
    fs::remove_file(m.path("f")).unwrap();
    assert!(!m.path("f").exists());
    // Rename over a second open file: the old target stays readable too.
    fs::write(m.path("g"), b"old g").unwrap();
    let g = fs::File::open(m.path("g")).unwrap();
    fs::write(m.path("h"), b"new g").unwrap();
    fs::rename(m.path("h"), m.path("g")).unwrap();

    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut back).unwrap();
    assert_eq!(back, data);
    file.write_all(b"more").unwrap();
    file.sync_all().unwrap();
    assert_eq!(file.metadata().unwrap().nlink(), 0);
    assert_eq!(file.metadata().unwrap().ino(), ino);
    assert_eq!(std::io::read_to_string(&g).unwrap(), "old g");
    assert_eq!(fs::read(m.path("g")).unwrap(), b"new g");
    drop(file);
    drop(g);
    m.unmount();
    // Closed before the unmount: reclaimed, nothing left for recovery.
    assert_fsck_clean(&dir);
    let m = mount(&dir, &mnt, &[]).expect("mounted once already");
    assert!(
        m.log_text().contains("0 orphans reclaimed"),
        "{}",
        m.log_text()
    );
    let names: Vec<_> = fs::read_dir(&m.mountpoint)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["g"]);
    m.unmount();
}

#[test]
fn permissions_are_enforced_for_other_users() {
    skip_without_fuse!();
    if !program_exists("setpriv") {
        eprintln!("skipped: setpriv is missing (util-linux)");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: checking another user's access needs root");
        return;
    }
    let tmp = test_dir("perms");
    let dir = tmp.path().join("engine");
    let mnt = tmp.path().join("mnt");
    // Let the other user reach the mount point.
    sh(tmp.path(), "chmod 755 .");
    let Some(m) = mount(&dir, &mnt, &["-o", "allow_other,default_permissions"]) else {
        return;
    };
    fs::write(m.path("public"), b"for all").unwrap();
    fs::write(m.path("private"), b"for root").unwrap();
    sh(&mnt, "chmod 644 public && chmod 600 private && chmod 755 .");
    let as_nobody = |script: &str| {
        run_output(
            Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "sh",
                    "-c",
                    script,
                ])
                .current_dir(&mnt),
        )
    };
    let out = as_nobody("cat public");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"for all");
    let out = as_nobody("cat private");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let out = as_nobody("echo x > new");
    assert!(
        !out.status.success(),
        "nobody wrote into a 0755 root-owned directory"
    );
    let out = as_nobody("chmod 777 public");
    assert!(!out.status.success(), "nobody changed root's file mode");
    assert_eq!(
        fs::metadata(m.path("public")).unwrap().mode() & 0o777,
        0o644
    );
    // A file nobody creates in a directory it may write is owned by nobody.
    fs::create_dir(m.path("shared")).unwrap();
    sh(&mnt, "chmod 777 shared");
    let out = as_nobody("echo x > shared/mine");
    assert!(out.status.success(), "{out:?}");
    let meta = fs::metadata(m.path("shared/mine")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    m.unmount();
}

#[test]
fn a_signal_unmounts_cleanly_and_the_contents_survive() {
    skip_without_fuse!();
    let tmp = test_dir("signal");
    let dir = tmp.path().join("engine");
    let mnt = tmp.path().join("mnt");
    let Some(mut m) = mount(&dir, &mnt, &["--sync"]) else {
        return;
    };
    fs::create_dir(m.path("d")).unwrap();
    symlink("target", m.path("d/link")).unwrap();
    fs::write(m.path("d/file"), b"kept by --sync").unwrap();
    // SAFETY: kill with a valid pid and signal.
    let sent = unsafe { libc::kill(m.child.id() as i32, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = m.child.wait().unwrap();
    assert!(status.success(), "{status}: {}", m.log_text());
    assert!(!is_mounted(&mnt));
    assert!(
        m.log_text().contains("SIGTERM: unmounting"),
        "{}",
        m.log_text()
    );
    drop(m);
    assert_fsck_clean(&dir);
    let m = mount(&dir, &mnt, &[]).expect("mounted once already");
    assert_eq!(fs::read(m.path("d/file")).unwrap(), b"kept by --sync");
    assert_eq!(
        fs::read_link(m.path("d/link")).unwrap(),
        Path::new("target")
    );
    m.unmount();
}

#[test]
fn a_signal_while_a_file_is_open_unmounts_once_it_is_closed() {
    skip_without_fuse!();
    let tmp = test_dir("signal-busy");
    let dir = tmp.path().join("engine");
    let mnt = tmp.path().join("mnt");
    let Some(mut m) = mount(&dir, &mnt, &[]) else {
        return;
    };
    fs::write(m.path("held"), b"open while the signal comes").unwrap();
    // The open file makes the first unmount busy; it closes a moment later, well within
    // the retries. (A retry that only reported success used to leave the mount up and
    // the process waiting forever.)
    let held = fs::File::open(m.path("held")).unwrap();
    // SAFETY: kill with a valid pid and signal.
    let sent = unsafe { libc::kill(m.child.id() as i32, libc::SIGTERM) };
    assert_eq!(sent, 0);
    std::thread::sleep(std::time::Duration::from_millis(400));
    drop(held);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = m.child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = m.child.kill();
            panic!(
                "the mount did not end after the file closed: {}",
                m.log_text()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}: {}", m.log_text());
    assert!(!is_mounted(&mnt));
    drop(m);
    assert_fsck_clean(&dir);
}

#[test]
fn bench_mount_reports_dbench_on_the_mount_and_on_the_host() {
    skip_without_fuse!();
    if !program_exists("dbench") {
        eprintln!("skipped: dbench is missing (apt-get install -y dbench)");
        return;
    }
    let tmp = test_dir("bench");
    let out = run_output(
        Command::new(env!("CARGO_BIN_EXE_smlog"))
            .args([
                "bench",
                "mount",
                "--seconds",
                "2",
                "--clients",
                "2",
                "--json",
                "--dir",
            ])
            .arg(tmp.path()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let mbps = report["mbps"].as_f64().unwrap();
    let baseline = report["baseline_mbps"].as_f64().unwrap();
    assert!(mbps > 0.0 && baseline > 0.0, "{report}");
    assert!((report["ratio"].as_f64().unwrap() - mbps / baseline).abs() < 1e-9);
    // Its engine and mount point are gone, and nothing is left mounted.
    assert!(!fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .contains(tmp.path().to_str().unwrap()));
}

/// `mknod(2)`: 0 or the errno.
fn mknod(path: &Path, mode: u32, rdev: u64) -> Result<(), i32> {
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let made = unsafe { libc::mknod(path.as_ptr(), mode, rdev) };
    if made == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// What `lstat` says of a name that a file system does not decide for itself (inode
/// numbers and times are its own, and so is a directory's size: ext4 gives its blocks').
fn lstat_view(path: &Path) -> (u32, u64, u32, u32, u64, Option<u64>, u64) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let size = (!m.is_dir()).then_some(m.size());
    (
        m.mode(),
        m.nlink(),
        m.uid(),
        m.gid(),
        m.rdev(),
        size,
        m.blocks(),
    )
}

/// FIFOs, sockets, character and block devices, and setgid directories, made the same way
/// on the host's ext4 and on a mount, compared `lstat` for `lstat` (type, mode, links,
/// owner, group, device number, size, blocks); the same after chmod, chown, link, rename
/// and unlink, and again after a remount.
#[test]
fn every_file_type_and_setgid_directories_match_ext4() {
    skip_without_fuse!();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: making devices and giving files away needs root");
        return;
    }
    let tmp = test_dir("types");
    let root = tmp.path();
    let host = root.join("host");
    fs::create_dir(&host).unwrap();
    let dir = root.join("engine");
    let mnt = root.join("mnt");
    let Some(m) = mount(&dir, &mnt, &[]) else {
        return;
    };
    let names = [
        "fifo",
        "sock",
        "chr",
        "blk",
        "g",
        "g/file",
        "g/dir",
        "g/dir/deeper",
        "g/fifo",
        "fifo-link",
        "moved-blk",
        "blk-big",
    ];
    let make = |base: &Path| {
        let at = |name: &str| base.join(name);
        mknod(&at("fifo"), libc::S_IFIFO | 0o640, 0).unwrap();
        std::os::unix::net::UnixListener::bind(at("sock")).unwrap();
        mknod(&at("chr"), libc::S_IFCHR | 0o620, libc::makedev(1, 3)).unwrap();
        mknod(&at("blk"), libc::S_IFBLK | 0o660, libc::makedev(8, 17)).unwrap();
        mknod(
            &at("blk2"),
            libc::S_IFBLK | 0o600,
            libc::makedev(259, 70_000),
        )
        .unwrap();
        mknod(
            &at("blk-big"),
            libc::S_IFBLK | 0o600,
            libc::makedev(259, 70_000),
        )
        .unwrap();
        // A setgid directory of another group: what is made in it takes the group, and a
        // directory the bit too.
        fs::create_dir(at("g")).unwrap();
        std::os::unix::fs::chown(at("g"), Some(0), Some(4321)).unwrap();
        fs::set_permissions(at("g"), fs::Permissions::from_mode(0o2775)).unwrap();
        fs::write(at("g/file"), b"in g").unwrap();
        fs::create_dir(at("g/dir")).unwrap();
        fs::create_dir(at("g/dir/deeper")).unwrap();
        mknod(&at("g/fifo"), libc::S_IFIFO | 0o600, 0).unwrap();
        // Everything that applies to them.
        fs::set_permissions(at("fifo"), fs::Permissions::from_mode(0o604)).unwrap();
        std::os::unix::fs::lchown(at("chr"), Some(12), Some(34)).unwrap();
        fs::hard_link(at("fifo"), at("fifo-link")).unwrap();
        fs::rename(at("blk"), at("moved-blk")).unwrap();
        mknod(&at("blk"), libc::S_IFBLK | 0o660, libc::makedev(8, 17)).unwrap();
        fs::remove_file(at("blk2")).unwrap();
        assert_eq!(
            mknod(&at("fifo"), libc::S_IFIFO | 0o600, 0),
            Err(libc::EEXIST)
        );
    };
    make(&host);
    make(&mnt);
    let compare = |when: &str| {
        for name in names.iter().chain(["blk"].iter()) {
            assert_eq!(
                lstat_view(&mnt.join(name)),
                lstat_view(&host.join(name)),
                "{name} {when}: smlog (left) and ext4 (right) differ"
            );
        }
        assert!(!mnt.join("blk2").exists());
    };
    compare("as made");
    let types: Vec<bool> = ["fifo", "sock", "chr", "moved-blk"]
        .iter()
        .map(|n| {
            let t = fs::symlink_metadata(mnt.join(n)).unwrap().file_type();
            use std::os::unix::fs::FileTypeExt;
            t.is_fifo() || t.is_socket() || t.is_char_device() || t.is_block_device()
        })
        .collect();
    assert_eq!(types, [true; 4]);
    m.unmount();
    let Some(m) = mount(&dir, &mnt, &[]) else {
        return;
    };
    compare("after a remount");
    m.unmount();
    assert_fsck_clean(&dir);
}

fn c_path(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// `lsetxattr(2)`: 0 or the errno.
fn lsetxattr(path: &Path, name: &str, value: &[u8], flags: i32) -> Result<(), i32> {
    let (path, name) = (c_path(path), std::ffi::CString::new(name).unwrap());
    // SAFETY: valid NUL-terminated strings, and a buffer of `value.len()` bytes.
    let done = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// `lgetxattr(2)` into a buffer of `size` bytes: the value, or the errno.
fn lgetxattr(path: &Path, name: &str, size: usize) -> Result<Vec<u8>, i32> {
    let (path, name) = (c_path(path), std::ffi::CString::new(name).unwrap());
    let mut buf = vec![0u8; size];
    // SAFETY: valid NUL-terminated strings, and a buffer of `size` bytes.
    let len =
        unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), size) };
    if len < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(len as usize);
    Ok(buf)
}

/// `llistxattr(2)`: the names, sorted (file systems list them in their own order).
fn llistxattr(path: &Path) -> Result<Vec<String>, i32> {
    let path = c_path(path);
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: a valid NUL-terminated path, and a buffer of its length.
    let len = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    let mut names: Vec<String> = buf[..len as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        // SELinux and others may add their own; only what the test sets is compared.
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| n.starts_with("user.") || n.starts_with("trusted."))
        .collect();
    names.sort();
    Ok(names)
}

/// `lremovexattr(2)`: 0 or the errno.
fn lremovexattr(path: &Path, name: &str) -> Result<(), i32> {
    let (path, name) = (c_path(path), std::ffi::CString::new(name).unwrap());
    // SAFETY: valid NUL-terminated strings.
    let done = unsafe { libc::lremovexattr(path.as_ptr(), name.as_ptr()) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// Extended attributes made the same way on the host's ext4 and on a mount: every call
/// answers the same (values, errnos: EEXIST, ENODATA, EOPNOTSUPP, ERANGE for a short
/// buffer, EPERM for a user attribute of a symbolic link), the lists are equal, and the
/// same again after a remount.
#[test]
fn extended_attributes_match_ext4() {
    skip_without_fuse!();
    let tmp = test_dir("xattr");
    let root = tmp.path();
    let host = root.join("host");
    fs::create_dir(&host).unwrap();
    let dir = root.join("engine");
    let mnt = root.join("mnt");
    let Some(m) = mount(&dir, &mnt, &[]) else {
        return;
    };
    let (create, replace) = (libc::XATTR_CREATE, libc::XATTR_REPLACE);
    let calls = |base: &Path| {
        let at = |name: &str| base.join(name);
        fs::write(at("f"), b"data").unwrap();
        fs::create_dir(at("d")).unwrap();
        symlink("f", at("l")).unwrap();
        // (call, file, attribute, value or buffer size, flags)
        let calls: [(&str, &str, &str, &[u8], i32); 18] = [
            ("set", "f", "user.a", b"1", 0),
            ("set", "f", "user.b", b"", 0),
            ("set", "f", "user.a", b"x", create),
            ("set", "f", "user.z", b"x", replace),
            ("set", "f", "user.a", b"one", replace),
            ("set", "d", "user.dir", &[0, 1, 2], 0),
            ("set", "f", "trusted.t", b"t", 0),
            ("set", "f", "os2.x", b"x", 0),
            ("set", "l", "user.a", b"x", 0),
            ("get", "f", "user.a", b"", 64),
            ("get", "f", "user.a", b"", 2),
            ("get", "f", "user.b", b"", 64),
            ("get", "f", "user.z", b"", 64),
            ("get", "d", "user.dir", b"", 64),
            ("remove", "f", "user.b", b"", 0),
            ("remove", "f", "user.b", b"", 0),
            ("list", "f", "", b"", 0),
            ("list", "d", "", b"", 0),
        ];
        calls
            .iter()
            .map(|&(call, file, name, value, flags)| {
                let path = at(file);
                let answer = match call {
                    "set" => format!("{:?}", lsetxattr(&path, name, value, flags)),
                    "get" => format!("{:?}", lgetxattr(&path, name, flags as usize)),
                    "remove" => format!("{:?}", lremovexattr(&path, name)),
                    _ => format!("{:?}", llistxattr(&path)),
                };
                format!("{call} {file} {name} {flags}: {answer}")
            })
            .collect::<Vec<String>>()
    };
    let want = calls(&host);
    let got = calls(&mnt);
    assert_eq!(
        got, want,
        "smlog (left) and ext4 (right) answer differently"
    );
    assert!(
        want.iter().any(|a| a.contains("Err(17)")),
        "EEXIST seen: {want:?}"
    );
    m.unmount();
    let Some(m) = mount(&dir, &mnt, &[]) else {
        return;
    };
    for (path, name) in [("f", "user.a"), ("f", "trusted.t"), ("d", "user.dir")] {
        assert_eq!(
            lgetxattr(&mnt.join(path), name, 64),
            lgetxattr(&host.join(path), name, 64),
            "{path} {name} after a remount"
        );
    }
    assert_eq!(llistxattr(&mnt.join("f")), llistxattr(&host.join("f")));
    m.unmount();
    assert_fsck_clean(&dir);
}

#[test]
fn listings_and_missing_names_follow_every_change_through_the_mount() {
    skip_without_fuse!();
    let tmp = test_dir("dircache");
    let dir = tmp.path().join("engine");
    let mnt = tmp.path().join("mnt");
    // Long TTLs: what the kernel caches is only dropped by the changes themselves.
    let Some(m) = mount(&dir, &mnt, &["--cache-seconds", "600"]) else {
        return;
    };
    let list = |d: &str| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(m.path(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    fs::create_dir(m.path("d")).unwrap();
    fs::create_dir(m.path("e")).unwrap();
    assert!(list("d").is_empty());
    // A missing name, looked up (and remembered as missing), then made: it is there.
    assert!(fs::metadata(m.path("d/a")).is_err());
    fs::write(m.path("d/a"), b"a").unwrap();
    assert_eq!(fs::read(m.path("d/a")).unwrap(), b"a");
    assert_eq!(list("d"), ["a"]);
    // Each change shows in the next listing of every directory it touched, although the
    // listings before it were cached.
    fs::write(m.path("d/b"), b"b").unwrap();
    assert_eq!(list("d"), ["a", "b"]);
    fs::rename(m.path("d/a"), m.path("e/a")).unwrap();
    assert_eq!(
        (list("d"), list("e")),
        (vec!["b".to_string()], vec!["a".to_string()])
    );
    fs::remove_file(m.path("d/b")).unwrap();
    assert!(list("d").is_empty());
    assert!(fs::metadata(m.path("d/b")).is_err());
    fs::create_dir(m.path("d/sub")).unwrap();
    assert_eq!(list("d"), ["sub"]);
    fs::remove_dir(m.path("d/sub")).unwrap();
    assert!(list("d").is_empty());
    std::os::unix::fs::symlink("../e/a", m.path("d/l")).unwrap();
    fs::hard_link(m.path("e/a"), m.path("d/h")).unwrap();
    assert_eq!(list("d"), ["h", "l"]);
    assert_eq!(fs::read(m.path("d/l")).unwrap(), b"a");
    assert_eq!(fs::read(m.path("d/h")).unwrap(), b"a");
    // And after a remount, the same.
    m.unmount();
    let m = mount(&dir, &mnt, &[]).expect("mounted once already");
    let mut names: Vec<String> = fs::read_dir(m.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["h", "l"]);
}

/// The names one `getdents64` call gives, or the errno.
fn getdents(fd: libc::c_int, buffer_bytes: usize) -> Result<Vec<String>, i32> {
    let mut buf = vec![0u8; buffer_bytes];
    // SAFETY: `buf` is writable for `buf.len()` bytes for the whole call.
    let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < n as usize {
        // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name NUL-ended
        // (host order: little endian on every machine this runs on).
        let reclen = u16::from_le_bytes([buf[at + 16], buf[at + 17]]) as usize;
        let name = &buf[at + 19..at + reclen];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap()];
        out.push(String::from_utf8(name.to_vec()).unwrap());
        at += reclen;
    }
    Ok(out)
}

/// The kernel keeps listings (FOPEN_CACHE_DIR). A reader part way through a kept listing
/// that another reader then drops and fills again (the directory changed) goes on from the
/// offsets it holds, in the new listing or with its own handle: every name that stayed comes
/// once, none that did not, and no error.
#[test]
fn a_reader_part_way_through_a_dropped_listing_neither_skips_nor_repeats() {
    skip_without_fuse!();
    let tmp = test_dir("droplisting");
    let dir = tmp.path().join("engine");
    let mnt = tmp.path().join("mnt");
    let Some(m) = mount(&dir, &mnt, &["--cache-seconds", "600"]) else {
        return;
    };
    fs::create_dir(m.path("d")).unwrap();
    let mut present: std::collections::BTreeSet<String> = (0..400)
        .map(|i| format!("file-with-a-longish-name-{i:04}"))
        .collect();
    for name in &present {
        fs::write(m.path(&format!("d/{name}")), b"").unwrap();
    }
    let list_all = || -> Vec<String> {
        fs::read_dir(m.path("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    let path = std::ffi::CString::new(m.path("d").as_os_str().as_bytes()).unwrap();
    for round in 0..6 {
        // Fill the kernel's listing, then read part of it through a new handle.
        assert_eq!(list_all().len(), present.len());
        // SAFETY: `path` is a NUL-ended string that outlives the call.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        assert!(fd >= 0);
        let mut seen: Vec<String> = Vec::new();
        while seen.len() < 60 {
            let batch = getdents(fd, 1024).unwrap();
            assert!(!batch.is_empty());
            seen.extend(batch);
        }
        let before = present.clone();
        // The change: the name at the reader's cursor goes (round 0, 2, 4: so its offset
        // is in no listing), another goes, a name comes; then another reader drops the
        // kept listing and fills it again.
        if round % 2 == 0 {
            let cursor = seen.last().unwrap().clone();
            if cursor != "." && cursor != ".." {
                fs::remove_file(m.path(&format!("d/{cursor}"))).unwrap();
                present.remove(&cursor);
            }
        }
        let victim = present
            .iter()
            .nth(round * 37 % present.len())
            .unwrap()
            .clone();
        fs::remove_file(m.path(&format!("d/{victim}"))).unwrap();
        present.remove(&victim);
        let added = format!("added-{round}");
        fs::write(m.path(&format!("d/{added}")), b"").unwrap();
        present.insert(added.clone());
        let mut again = list_all();
        again.sort();
        assert_eq!(again, present.iter().cloned().collect::<Vec<_>>());
        // The first reader goes on to the end.
        loop {
            match getdents(fd, 1024) {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => seen.extend(batch),
                Err(errno) => panic!("round {round}: getdents after the change: errno {errno}"),
            }
        }
        // SAFETY: `fd` is open and closed once.
        unsafe { libc::close(fd) };
        let mut counts = std::collections::BTreeMap::new();
        for name in seen.iter().filter(|n| *n != "." && *n != "..") {
            *counts.entry(name.clone()).or_insert(0) += 1;
        }
        for name in before.intersection(&present) {
            assert_eq!(counts.get(name), Some(&1), "round {round}: {name} stayed");
        }
        for (name, count) in &counts {
            assert_eq!(*count, 1, "round {round}: {name} listed {count} times");
            assert!(
                before.contains(name) || *name == added,
                "round {round}: {name} was never there"
            );
        }
    }
}

/// The kernel opens directories without asking the mount (no OPENDIR): a directory removed
/// while a handle is open on it still answers `fstat` through that handle, with no links, as
/// on a local file system; by rmdir and by a rename over it.
#[test]
fn a_removed_directory_still_open_answers_fstat() {
    skip_without_fuse!();
    let tmp = test_dir("removeddir");
    let dir = tmp.path().join("engine");
    let mnt = tmp.path().join("mnt");
    let Some(m) = mount(&dir, &mnt, &[]) else {
        return;
    };
    fs::create_dir(m.path("gone")).unwrap();
    fs::create_dir(m.path("over")).unwrap();
    fs::create_dir(m.path("from")).unwrap();
    let gone = fs::File::open(m.path("gone")).unwrap();
    let over = fs::File::open(m.path("over")).unwrap();
    let ino = gone.metadata().unwrap().ino();
    fs::remove_dir(m.path("gone")).unwrap();
    fs::rename(m.path("from"), m.path("over")).unwrap();
    for (handle, what) in [(&gone, "rmdir"), (&over, "rename over it")] {
        let meta = handle
            .metadata()
            .unwrap_or_else(|e| panic!("{what}: fstat: {e}"));
        assert!(meta.is_dir(), "{what}");
        assert_eq!(meta.nlink(), 0, "{what}");
    }
    assert_eq!(gone.metadata().unwrap().ino(), ino);
    // The name is gone, and the directory that took the other's name is a live one.
    assert!(fs::metadata(m.path("gone")).is_err());
    assert!(fs::metadata(m.path("over")).unwrap().nlink() >= 2);
    assert_ne!(
        fs::metadata(m.path("over")).unwrap().ino(),
        over.metadata().unwrap().ino()
    );
}

/// The mount, not the kernel, revokes setuid and setgid (FUSE_HANDLE_KILLPRIV_V2, so the
/// kernel asks for no `security.capability` before each write): as ext4 does, at a write,
/// truncation or fallocate by someone other than root, at any chown, and not at root's
/// write; a non-owner's chown(-1, -1) of such a file is refused.
#[test]
fn setuid_and_setgid_are_revoked_as_on_ext4() {
    skip_without_fuse!();
    if !program_exists("setpriv") {
        eprintln!("skipped: setpriv is missing (util-linux)");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: acting as another user needs root");
        return;
    }
    let tmp = test_dir("killpriv");
    let dir = tmp.path().join("engine");
    let mnt = tmp.path().join("mnt");
    sh(tmp.path(), "chmod 755 .");
    let Some(m) = mount(&dir, &mnt, &["-o", "allow_other,default_permissions"]) else {
        return;
    };
    sh(&mnt, "chmod 777 .");
    let as_user = |script: &str| {
        run_output(
            Command::new("setpriv")
                .args(["--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c"])
                .arg(script)
                .current_dir(&mnt),
        )
    };
    let mode = |name: &str| fs::metadata(m.path(name)).unwrap().mode() & 0o7777;
    // Root's files, writable by all.
    for name in ["w", "t", "f", "r", "c", "n", "g"] {
        fs::write(m.path(name), b"x").unwrap();
    }
    sh(&mnt, "chmod 6777 w t f r c n && chmod 2767 g");
    let out = as_user("echo more >> w && truncate -s 1 t && fallocate -l 8192 f");
    assert!(out.status.success(), "{out:?}");
    assert_eq!((mode("w"), mode("t"), mode("f")), (0o777, 0o777, 0o777));
    // setgid without group execute: kept at a write by a member of the group.
    sh(&mnt, "chgrp 1000 g && chmod 2767 g");
    assert!(as_user("echo more >> g").status.success());
    assert_eq!(mode("g"), 0o2767);
    // Root's write keeps them; root's chown revokes them.
    fs::write(m.path("r"), b"root writes").unwrap();
    assert_eq!(mode("r"), 0o6777);
    sh(&mnt, "chown 0:0 c");
    assert_eq!(mode("c"), 0o777);
    // A non-owner's chown(-1, -1): refused, nothing changes.
    let out = as_user("python3 -c 'import os; os.chown(\"n\", -1, -1)'");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Operation not permitted"), "{out:?}");
    assert_eq!(mode("n"), 0o6777);
}
