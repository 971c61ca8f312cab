//! `smlog mount --node` on a cluster: node 1 runs as `smlog cluster serve`, nodes 2 and 3
//! each run inside a mount process. The mounts cache attributes and names for 600 s, so
//! only the invalidations a node sends as it applies another node's change can show that
//! change within the test's few seconds. Checked: read-your-writes through a follower's
//! mount, every kind of change made on one mount seen on the other, a publisher writing
//! through a mount while the leader is SIGKILLed, and afterwards every acknowledged file
//! on every node, equal trees and fsck clean.

mod cluster_common;
mod mount_common;

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use cluster_common::{leader, status, volume, Nodes};
use mount_common::{fuse_missing, test_dir, Mounted, NotPermitted};
use smlog::ROOT_INO;
use smlog_recovery::harness::fs::tree_of;

/// Polls `check` for up to 5 s (far less than the 600 s the kernel may cache for).
fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if Instant::now() >= deadline => panic!("{what}: still {why} after 5 s"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn content(i: usize) -> Vec<u8> {
    (0..5_000 + i * 131).map(|b| (b * 7 + i) as u8).collect()
}

/// Writes file `i` as a careful program publishes one: a temporary name, fsync, rename.
fn publish(mount: &Path, i: usize) {
    let tmp = mount.join(format!(".tmp-{i}"));
    let mut file = fs::File::create(&tmp).unwrap();
    file.write_all(&content(i)).unwrap();
    file.sync_all().unwrap();
    drop(file);
    fs::rename(&tmp, mount.join(format!("p-{i}"))).unwrap();
}

#[test]
fn mounts_on_two_nodes_read_their_writes_see_each_others_and_ride_out_a_leader_kill() {
    if let Some(why) = fuse_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = test_dir("cluster");
    let mut nodes = Nodes::init(tmp.path(), 3);
    let key = nodes.key.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    nodes.serve(0);
    runtime.block_on(leader(&nodes, &key));
    let cache = ["--cache-seconds", "600"];
    let mount = |i: usize| match Mounted::start_node(
        &nodes.dirs[i],
        &tmp.path().join(format!("m{}", i + 1)),
        &cache,
    ) {
        Ok(m) => Some(m),
        Err(NotPermitted(log)) => {
            eprintln!("skipped: mounting is not permitted here: {log}");
            None
        }
    };
    let Some(m2) = mount(1) else { return };
    let Some(m3) = mount(2) else { return };
    nodes.add(1);
    nodes.add(2);
    let (a, b) = (m2.mountpoint.clone(), m3.mountpoint.clone());

    // Read-your-writes through a follower: each change is forwarded to node 1 and answered
    // once node 2 applied it, so node 2's engine lists it at once (a directory listing is
    // never cached by the kernel here).
    for i in 0..20 {
        let name = format!("r-{i}");
        fs::write(a.join(&name), content(i)).unwrap();
        let listed: Vec<String> = fs::read_dir(&a)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(listed.contains(&name), "{name} missing from {listed:?}");
    }

    // What node 3's kernel caches first: pages and attributes of `shared`, the entries
    // `target` and `gone`.
    fs::write(a.join("shared"), vec![b'A'; 8192]).unwrap();
    fs::write(a.join("target"), b"old target").unwrap();
    fs::write(a.join("gone"), b"soon removed").unwrap();
    eventually("node 3 reads shared", || {
        (read(&b.join("shared"))? == vec![b'A'; 8192])
            .then_some(())
            .ok_or("different".into())
    });
    let open_on_b = fs::File::open(b.join("shared")).unwrap();
    for (name, bytes) in [("target", &b"old target"[..]), ("gone", b"soon removed")] {
        eventually(&format!("node 3 reads {name}"), || {
            (read(&b.join(name))? == bytes)
                .then_some(())
                .ok_or("different".into())
        });
    }

    // Changes through node 2.
    fs::OpenOptions::new()
        .write(true)
        .open(a.join("shared"))
        .unwrap()
        .write_all_at(&[b'B'; 4096], 4096)
        .unwrap();
    fs::write(a.join("target.new"), b"the new target").unwrap();
    fs::rename(a.join("target.new"), a.join("target")).unwrap();
    fs::remove_file(a.join("gone")).unwrap();
    fs::create_dir(a.join("dir")).unwrap();
    fs::write(a.join("dir/inner"), b"inner").unwrap();
    let mut shared = vec![b'A'; 4096];
    shared.extend_from_slice(&[b'B'; 4096]);

    // Seen through node 3. A file open there reads the new pages (no open refreshes its
    // attributes, so only the invalidation drops what it cached); the name renamed over
    // and the name removed lead to the new file and to nothing.
    eventually("a file open on node 3 reads the rewritten pages", || {
        let mut seen = vec![0u8; shared.len()];
        open_on_b
            .read_exact_at(&mut seen, 0)
            .map_err(|e| e.to_string())?;
        (seen == shared).then_some(()).ok_or("the old pages".into())
    });
    assert_eq!(read(&b.join("shared")).unwrap(), shared);
    eventually("node 3 reads the new target", || {
        (read(&b.join("target"))? == b"the new target")
            .then_some(())
            .ok_or("the old target".into())
    });
    eventually("node 3 no longer finds gone", || {
        match b.join("gone").try_exists() {
            Ok(false) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    eventually("node 3 reads dir/inner", || {
        (read(&b.join("dir/inner"))? == b"inner")
            .then_some(())
            .ok_or("different".into())
    });
    // An extended attribute set on node 2 reads the same on node 3.
    let (target, name) = (
        std::ffi::CString::new(a.join("target").into_os_string().into_vec()).unwrap(),
        std::ffi::CString::new("user.origin").unwrap(),
    );
    // SAFETY: valid NUL-terminated strings, and a buffer of 6 bytes.
    let set = unsafe {
        libc::setxattr(
            target.as_ptr(),
            name.as_ptr(),
            b"node-2".as_ptr().cast(),
            6,
            0,
        )
    };
    assert_eq!(set, 0, "setxattr: {}", std::io::Error::last_os_error());
    let on_b = std::ffi::CString::new(b.join("target").into_os_string().into_vec()).unwrap();
    eventually("node 3 reads user.origin", || {
        let mut buf = [0u8; 16];
        // SAFETY: valid NUL-terminated strings, and a buffer of 16 bytes.
        let len = unsafe {
            libc::getxattr(
                on_b.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        (len == 6 && &buf[..6] == b"node-2")
            .then_some(())
            .ok_or(format!("{len} bytes"))
    });
    // A FIFO and a device made on node 2 are the same on node 3.
    for (name, mode, rdev) in [
        ("fifo", libc::S_IFIFO | 0o640, 0),
        ("dev", libc::S_IFCHR | 0o600, libc::makedev(1, 3)),
    ] {
        let path = std::ffi::CString::new(a.join(name).into_os_string().into_vec()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        let made = unsafe { libc::mknod(path.as_ptr(), mode, rdev) };
        assert_eq!(made, 0, "mknod {name}");
        eventually(&format!("node 3 sees {name}"), || {
            let seen = fs::symlink_metadata(b.join(name)).map_err(|e| e.to_string())?;
            let got = (seen.mode(), seen.rdev());
            (got == (mode, rdev))
                .then_some(())
                .ok_or(format!("{got:?}"))
        });
    }

    // And the other way: node 3 truncates, node 2's stat (no open) shows the new size.
    fs::OpenOptions::new()
        .write(true)
        .open(b.join("shared"))
        .unwrap()
        .set_len(100)
        .unwrap();
    eventually("node 2 sees the truncation", || {
        let len = fs::metadata(a.join("shared"))
            .map_err(|e| e.to_string())?
            .len();
        (len == 100).then_some(()).ok_or(format!("{len} bytes"))
    });

    // A publisher on node 2 while the leader (node 1, a plain node) is SIGKILLed: the
    // change in flight is retried under its request key; nothing acknowledged is lost.
    assert_eq!(runtime.block_on(leader(&nodes, &key)), 0);
    let publisher = {
        let a = a.clone();
        std::thread::spawn(move || {
            for i in 0..40 {
                publish(&a, i);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    nodes.kill(0);
    publisher
        .join()
        .expect("every publish succeeded through the failover");
    nodes.serve(0);
    for i in 0..40 {
        let name = format!("p-{i}");
        eventually(&format!("node 3 reads {name}"), || {
            (read(&b.join(&name))? == content(i))
                .then_some(())
                .ok_or("different".into())
        });
    }

    // Everything settles on node 1 too; then every node's volume is checked.
    runtime.block_on(async {
        let lead = leader(&nodes, &key).await;
        let last = status(&nodes.addrs[lead], &key)
            .await
            .unwrap()
            .last_log_index;
        for addr in &nodes.addrs {
            for _ in 0..400 {
                if status(addr, &key).await.and_then(|r| r.applied) >= last {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    });
    drop(open_on_b);
    m2.unmount();
    m3.unmount();
    nodes.stop_all();
    let mut trees = Vec::new();
    for dir in &nodes.dirs {
        let engine = volume(dir);
        for i in 0..40 {
            let stat = engine
                .lookup(ROOT_INO, format!("p-{i}").as_bytes())
                .unwrap_or_else(|e| panic!("{}: p-{i}: {e}", dir.display()));
            assert_eq!(engine.read(stat.ino, 0, 1 << 20).unwrap(), content(i));
        }
        let fsck = engine.fsck();
        assert!(fsck.is_clean(), "{}: {:?}", dir.display(), fsck.problems);
        trees.push(tree_of(&engine).unwrap());
    }
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[0], trees[2]);
}
