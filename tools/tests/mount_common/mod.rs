//! Mounting `smlog mount` in a child process for the FUSE tests, and the shell-outs they
//! share.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Installs what the FUSE tests use (Debian packages fuse3 and dbench) when it is missing
/// and this is root on a machine with apt-get; once per test binary.
fn install_prerequisites() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if program_exists("fusermount3") && program_exists("dbench") {
            return;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !program_exists("apt-get") {
            return;
        }
        eprintln!("installing fuse3 and dbench for the FUSE tests (apt-get)");
        let _ = Command::new("sh")
            .args([
                "-c",
                "DEBIAN_FRONTEND=noninteractive apt-get install -y -q fuse3 dbench \
                 || (apt-get update -q && DEBIAN_FRONTEND=noninteractive \
                     apt-get install -y -q fuse3 dbench)",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    });
}

/// Why FUSE tests cannot run here, if they cannot.
pub fn fuse_missing() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    install_prerequisites();
    if !program_exists("fusermount3") {
        return Some("fusermount3 is missing (apt-get install -y fuse3)".into());
    }
    None
}

/// Whether `program` runs.
pub fn program_exists(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A directory for one test: the engine's directory and a mount point (O_DIRECT needs a
/// real file system, so under the target directory).
pub fn test_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("smlog-mount-{name}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// Whether `mountpoint` is a mount point now.
pub fn is_mounted(mountpoint: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = mountpoint.to_string_lossy().replace(' ', "\\040");
    mounts
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(want.as_str()))
}

/// A running `smlog mount`.
#[derive(Debug)]
pub struct Mounted {
    pub child: Child,
    pub dir: PathBuf,
    pub mountpoint: PathBuf,
    pub log: PathBuf,
}

/// Result of [`Mounted::start`] when mounting is not permitted here.
#[derive(Debug)]
pub struct NotPermitted(pub String);

impl Mounted {
    /// Starts `smlog mount DIR MOUNTPOINT --create ARGS...` and waits until it is mounted.
    pub fn start(dir: &Path, mountpoint: &Path, args: &[&str]) -> Result<Mounted, NotPermitted> {
        Mounted::spawn(dir, mountpoint, &[&["--create"], args].concat())
    }

    /// Starts `smlog mount --node DIR MOUNTPOINT ARGS...` (a cluster node, run by the
    /// mount) and waits until it is mounted.
    pub fn start_node(
        dir: &Path,
        mountpoint: &Path,
        args: &[&str],
    ) -> Result<Mounted, NotPermitted> {
        Mounted::spawn(dir, mountpoint, &[&["--node"], args].concat())
    }

    fn spawn(dir: &Path, mountpoint: &Path, args: &[&str]) -> Result<Mounted, NotPermitted> {
        std::fs::create_dir_all(mountpoint).unwrap();
        let log = mountpoint.with_extension(format!("log-{}", std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_smlog"))
            .arg("mount")
            .arg(dir)
            .arg(mountpoint)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut mounted = Mounted {
            child,
            dir: dir.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(mountpoint) {
            if let Some(status) = mounted.child.try_wait().unwrap() {
                let text = mounted.log_text();
                if text.contains("Permission denied") || text.contains("Operation not permitted") {
                    return Err(NotPermitted(text));
                }
                panic!("smlog mount exited ({status}) before mounting:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "not mounted in 30 s:\n{}",
                mounted.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(mounted)
    }

    /// What the mount process wrote to stderr.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A path on the mount.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.mountpoint.join(relative)
    }

    /// Unmounts cleanly (`fusermount3 -u`); the mount process must exit 0.
    pub fn unmount(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = run_output(Command::new("fusermount3").arg("-u").arg(&self.mountpoint));
            if out.status.success() {
                break;
            }
            // Busy: a release may still be in flight.
            assert!(
                Instant::now() < deadline,
                "fusermount3 -u failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = self.child.wait().unwrap();
        let log = self.log_text();
        assert!(status.success(), "smlog mount exited {status}:\n{log}");
        log
    }

    /// SIGKILLs the mount process and detaches the dead mount (`fusermount3 -u -z`).
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let out = run_output(
            Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mountpoint),
        );
        if !out.status.success() {
            let out = run_output(Command::new("umount").arg("-l").arg(&self.mountpoint));
            assert!(
                out.status.success(),
                "could not detach the dead mount: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // A failing test must not leave a mount behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mountpoint)
                .output();
        }
    }
}

/// Runs `command`, returns its output.
pub fn run_output(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

/// Runs a shell script in `cwd`; panics with its output unless it succeeds. Returns
/// stdout.
pub fn sh(cwd: &Path, script: &str) -> String {
    let out = run_output(
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(cwd),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "script failed in {}:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
        cwd.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// After a crash: `smlog recover DIR` finishes what was in flight, then
/// [`assert_fsck_clean`].
pub fn recover_and_fsck(dir: &Path) -> String {
    let out = run_output(
        Command::new(env!("CARGO_BIN_EXE_smlog"))
            .arg("recover")
            .arg(dir),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "smlog recover {}: {stdout}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_fsck_clean(dir);
    stdout
}

/// `smlog fsck DIR` must report the store clean.
pub fn assert_fsck_clean(dir: &Path) {
    let out = run_output(
        Command::new(env!("CARGO_BIN_EXE_smlog"))
            .arg("fsck")
            .arg(dir),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("clean"),
        "smlog fsck {}: {stdout}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every path under `root` with its inode number, type, mode, link count, size, symlink
/// target and content hash: two trees are the same when their manifests are (inode
/// numbers too: they are stable across remounts).
pub fn manifest(root: &Path) -> String {
    sh(
        root,
        "find . -mindepth 1 -printf '%p %i %y %m %n %s %l\\n' | LC_ALL=C sort; \
         find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum",
    )
}
