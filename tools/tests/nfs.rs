//! `smlog nfs` driven by NFS clients: `nfs3_client` for each procedure, and raw RPC
//! records for what no client sends on purpose (a retransmission with the same xid,
//! garbage, a wrong program). The server is the real binary on a loopback port, SIGKILLed
//! and restarted where a test says so.

// XDR is big-endian by definition (RFC 4506).
#![allow(clippy::big_endian_bytes)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::{Opaque, Pack, Unpack};
use nfs3_client::tokio::TokioConnector;
use nfs3_client::Nfs3ConnectionBuilder;

/// A running `smlog nfs` on a loopback port.
struct NfsServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl NfsServer {
    fn start(dir: &Path, extra: &[&str]) -> NfsServer {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, port) = spawn(dir, &extra, 0);
        NfsServer {
            child,
            port,
            dir: dir.to_path_buf(),
            extra,
        }
    }

    /// SIGKILL, then start again on the same port.
    fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        self.child.wait().unwrap();
        let (child, port) = spawn(&self.dir, &self.extra, self.port);
        self.child = child;
        assert_eq!(port, self.port);
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, extra: &[String], port: u16) -> (Child, u16) {
    // A cluster node's directory is made by `smlog cluster init`, never by `smlog nfs`.
    let create = !extra.iter().any(|a| a == "--node");
    let mut child = Command::new(env!("CARGO_BIN_EXE_smlog"))
        .arg("nfs")
        .arg(dir)
        .args(create.then_some("--create"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("smlog nfs: serving on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    (child, port)
}

fn scratch(name: &str) -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .unwrap()
}

/// How long a call under load may go unanswered before it is taken as cut by the crash.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

fn cred(uid: u32, gid: u32) -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix {
        stamp: 1,
        machinename: Opaque::owned(b"test".to_vec()),
        uid,
        gid,
        gids: vec![],
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

type Client = nfs3_client::Nfs3Connection<nfs3_client::tokio::TokioIo<tokio::net::TcpStream>>;

async fn connect(port: u16, uid: u32, gid: u32) -> Client {
    Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", "/")
        .mount_port(port)
        .nfs3_port(port)
        .connect_from_privileged_port(false)
        .credential(cred(uid, gid))
        .mount()
        .await
        .unwrap()
}

fn dirop(dir: &nfs_fh3, name: &str) -> diropargs3<'static> {
    diropargs3 {
        dir: dir.clone(),
        name: filename3(Opaque::owned(name.as_bytes().to_vec())),
    }
}

fn status<T, E>(res: &Nfs3Result<T, E>) -> nfsstat3 {
    match res {
        Nfs3Result::Ok(_) => nfsstat3::NFS3_OK,
        Nfs3Result::Err((s, _)) => *s,
    }
}

/// The handle a create-like call answered (it must have answered one).
fn handle_of(obj: post_op_fh3) -> nfs_fh3 {
    match obj {
        Nfs3Option::Some(fh) => fh,
        Nfs3Option::None => panic!("no handle"),
    }
}

fn mode(mode: u32) -> sattr3 {
    sattr3 {
        mode: Nfs3Option::Some(mode),
        ..sattr3::default()
    }
}

async fn lookup(c: &mut Client, dir: &nfs_fh3, name: &str) -> Result<(nfs_fh3, fattr3), nfsstat3> {
    match c
        .lookup(&LOOKUP3args {
            what: dirop(dir, name),
        })
        .await
        .unwrap()
    {
        Nfs3Result::Ok(ok) => match ok.obj_attributes {
            Nfs3Option::Some(attr) => Ok((ok.object, attr)),
            Nfs3Option::None => panic!("no attributes"),
        },
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

/// The names of directory `dir` from `cookie` to its end (with `verf`, the cookie's
/// verifier), in the server's order; and the last cookie and verifier.
async fn names_from(
    c: &mut Client,
    dir: &nfs_fh3,
    mut cookie: u64,
    mut verf: cookieverf3,
    pages: usize,
) -> (Vec<String>, u64, cookieverf3) {
    let mut out = Vec::new();
    for _ in 0..pages {
        let args = READDIR3args {
            dir: dir.clone(),
            cookie,
            cookieverf: verf,
            count: 300,
        };
        let ok = c.readdir(&args).await.unwrap().unwrap();
        verf = ok.cookieverf;
        for e in &ok.reply.entries.0 {
            out.push(String::from_utf8(e.name.0.to_vec()).unwrap());
            cookie = e.cookie;
        }
        if ok.reply.eof {
            break;
        }
    }
    (out, cookie, verf)
}

async fn names(c: &mut Client, dir: &nfs_fh3) -> Vec<String> {
    let (mut out, _, _) = names_from(c, dir, 0, cookieverf3::default(), usize::MAX).await;
    out.sort();
    out
}

#[test]
fn every_procedure_answers_as_rfc_1813_says() {
    let dir = scratch("nfs-procs");
    let server = NfsServer::start(&dir.path().join("fs"), &["--no-root-squash"]);
    runtime().block_on(async {
        let mut c = connect(server.port, 0, 0).await;
        let root = c.root_nfs_fh3();
        c.null().await.unwrap();
        let info = c
            .fsinfo(&FSINFO3args {
                fsroot: root.clone(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.wtmax, 1 << 20);

        // CREATE: guarded, then guarded again (EXIST), then unchecked over it with a size.
        let create = |name: &str, how| CREATE3args {
            where_: dirop(&root, name),
            how,
        };
        let a = c
            .create(&create("a", createhow3::GUARDED(mode(0o640))))
            .await
            .unwrap()
            .unwrap();
        let a_fh = handle_of(a.obj);
        let again = c
            .create(&create("a", createhow3::GUARDED(mode(0o640))))
            .await
            .unwrap();
        assert_eq!(status(&again), nfsstat3::NFS3ERR_EXIST);

        // WRITE unstable, COMMIT, READ.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let w = c
            .write(&WRITE3args {
                file: a_fh.clone(),
                offset: 0,
                count: data.len() as u32,
                stable: stable_how::UNSTABLE,
                data: Opaque::borrowed(&data),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.count, data.len() as u32);
        assert_eq!(w.committed, stable_how::UNSTABLE);
        let commit = c
            .commit(&COMMIT3args {
                file: a_fh.clone(),
                offset: 0,
                count: 0,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(commit.verf, w.verf);
        let r = c
            .read(&READ3args {
                file: a_fh.clone(),
                offset: 0,
                count: 1 << 20,
            })
            .await
            .unwrap()
            .unwrap();
        assert!(r.eof);
        assert_eq!(&r.data[..], &data[..]);
        let unchecked = c
            .create(&create(
                "a",
                // The mode asked is for a new file: an existing one keeps its own.
                createhow3::UNCHECKED(sattr3 {
                    size: Nfs3Option::Some(10),
                    mode: Nfs3Option::Some(0o600),
                    ..sattr3::default()
                }),
            ))
            .await
            .unwrap();
        assert_eq!(status(&unchecked), nfsstat3::NFS3_OK);
        let (_, attr) = lookup(&mut c, &root, "a").await.unwrap();
        assert_eq!(
            (attr.size, attr.mode, attr.type_),
            (10, 0o640, ftype3::NF3REG)
        );

        // EXCLUSIVE: the same verifier again is the same file; another is EXIST.
        let verf = createverf3(*b"\x01\x02\x03\x04\x05\x06\x07\x08");
        let x1 = c
            .create(&create("x", createhow3::EXCLUSIVE(verf)))
            .await
            .unwrap()
            .unwrap();
        let x2 = c
            .create(&create("x", createhow3::EXCLUSIVE(verf)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(x1.obj, x2.obj);
        let other = createverf3(*b"zzzzzzzz");
        let x3 = c
            .create(&create("x", createhow3::EXCLUSIVE(other)))
            .await
            .unwrap();
        assert_eq!(status(&x3), nfsstat3::NFS3ERR_EXIST);

        // SETATTR with a guard: the wrong ctime is NOT_SYNC, the right one applies.
        let stale_guard = SETATTR3args {
            object: a_fh.clone(),
            new_attributes: mode(0o600),
            guard: Nfs3Option::Some(nfstime3 {
                seconds: 1,
                nseconds: 0,
            }),
        };
        assert_eq!(
            status(&c.setattr(&stale_guard).await.unwrap()),
            nfsstat3::NFS3ERR_NOT_SYNC
        );
        let good_guard = SETATTR3args {
            guard: Nfs3Option::Some(attr.ctime),
            ..stale_guard
        };
        assert_eq!(
            status(&c.setattr(&good_guard).await.unwrap()),
            nfsstat3::NFS3_OK
        );
        assert_eq!(lookup(&mut c, &root, "a").await.unwrap().1.mode, 0o600);

        // MKDIR, SYMLINK + READLINK, MKNOD (a FIFO, a device, a bad type), LINK.
        let d = c
            .mkdir(&MKDIR3args {
                where_: dirop(&root, "d"),
                attributes: mode(0o755),
            })
            .await
            .unwrap()
            .unwrap();
        let d_fh = handle_of(d.obj);
        let s = c
            .symlink(&SYMLINK3args {
                where_: dirop(&d_fh, "s"),
                symlink: symlinkdata3 {
                    symlink_attributes: sattr3::default(),
                    symlink_data: nfspath3(Opaque::borrowed(b"../a")),
                },
            })
            .await
            .unwrap()
            .unwrap();
        let s_fh = handle_of(s.obj);
        let target = c
            .readlink(&READLINK3args { symlink: s_fh })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&target.data.0[..], b"../a");
        let fifo = c
            .mknod(&MKNOD3args {
                where_: dirop(&d_fh, "p"),
                what: mknoddata3::NF3FIFO(mode(0o600)),
            })
            .await
            .unwrap();
        assert_eq!(status(&fifo), nfsstat3::NFS3_OK);
        let dev = c
            .mknod(&MKNOD3args {
                where_: dirop(&d_fh, "c"),
                what: mknoddata3::NF3CHR(devicedata3 {
                    dev_attributes: mode(0o600),
                    spec: specdata3 {
                        specdata1: 1,
                        specdata2: 3,
                    },
                }),
            })
            .await
            .unwrap();
        assert_eq!(status(&dev), nfsstat3::NFS3_OK);
        let (_, c_attr) = lookup(&mut c, &d_fh, "c").await.unwrap();
        assert_eq!(
            (c_attr.type_, c_attr.rdev.specdata1, c_attr.rdev.specdata2),
            (ftype3::NF3CHR, 1, 3)
        );
        let link = c
            .link(&LINK3args {
                file: a_fh.clone(),
                link: dirop(&d_fh, "hard"),
            })
            .await
            .unwrap()
            .unwrap();
        let Nfs3Option::Some(linked) = link.file_attributes else {
            panic!("no attributes")
        };
        assert_eq!(linked.nlink, 2);
        assert_eq!(
            names(&mut c, &d_fh).await,
            [".", "..", "c", "hard", "p", "s"]
        );

        // READDIRPLUS gives a handle and attributes per name.
        let plus = c
            .readdirplus(&READDIRPLUS3args {
                dir: d_fh.clone(),
                cookie: 0,
                cookieverf: cookieverf3::default(),
                dircount: 4096,
                maxcount: 64 * 1024,
            })
            .await
            .unwrap()
            .unwrap();
        assert!(plus.reply.eof);
        let hard = plus
            .reply
            .entries
            .0
            .iter()
            .find(|e| e.name.0.as_ref() == b"hard")
            .unwrap();
        assert_eq!(hard.name_handle, Nfs3Option::Some(a_fh.clone()));

        // RENAME, REMOVE, RMDIR (not empty, then empty).
        let rename = c
            .rename(&RENAME3args {
                from: dirop(&d_fh, "hard"),
                to: dirop(&root, "b"),
            })
            .await
            .unwrap();
        assert_eq!(status(&rename), nfsstat3::NFS3_OK);
        assert_eq!(
            status(
                &c.rmdir(&RMDIR3args {
                    object: dirop(&root, "d")
                })
                .await
                .unwrap()
            ),
            nfsstat3::NFS3ERR_NOTEMPTY
        );
        for name in ["c", "p", "s"] {
            let removed = c
                .remove(&REMOVE3args {
                    object: dirop(&d_fh, name),
                })
                .await
                .unwrap();
            assert_eq!(status(&removed), nfsstat3::NFS3_OK);
        }
        assert_eq!(
            status(
                &c.rmdir(&RMDIR3args {
                    object: dirop(&root, "d")
                })
                .await
                .unwrap()
            ),
            nfsstat3::NFS3_OK
        );
        // The removed directory's handle is stale; a damaged handle is no handle.
        let gone = c
            .getattr(&GETATTR3args {
                object: d_fh.clone(),
            })
            .await
            .unwrap();
        assert_eq!(status(&gone), nfsstat3::NFS3ERR_STALE);
        let mut bytes = d_fh.data.to_vec();
        bytes.truncate(10);
        let bad = c
            .getattr(&GETATTR3args {
                object: nfs_fh3 {
                    data: Opaque::owned(bytes),
                },
            })
            .await
            .unwrap();
        assert_eq!(status(&bad), nfsstat3::NFS3ERR_BADHANDLE);
        assert_eq!(
            lookup(&mut c, &root, "nothing").await.unwrap_err(),
            nfsstat3::NFS3ERR_NOENT
        );
        let long = "n".repeat(256);
        assert_eq!(
            lookup(&mut c, &root, &long).await.unwrap_err(),
            nfsstat3::NFS3ERR_NAMETOOLONG
        );

        // ACCESS, FSSTAT, PATHCONF.
        let access = c
            .access(&ACCESS3args {
                object: root.clone(),
                access: 0x3f,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            access.access,
            ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE
        );
        let stat = c
            .fsstat(&FSSTAT3args {
                fsroot: root.clone(),
            })
            .await
            .unwrap()
            .unwrap();
        assert!(stat.tbytes >= stat.fbytes && stat.fbytes > 0);
        let conf = c
            .pathconf(&PATHCONF3args {
                object: root.clone(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(conf.name_max, 255);
        assert_eq!(names(&mut c, &root).await, [".", "..", "a", "b", "x"]);
    });
}

#[test]
fn credentials_are_checked_and_root_is_squashed() {
    let dir = scratch("nfs-auth");
    let server = NfsServer::start(&dir.path().join("fs"), &[]);
    runtime().block_on(async {
        // Root is squashed to 65534: what it makes is nobody's, and a directory of
        // nobody's 0755 is not writable by uid 1000.
        let mut root_client = connect(server.port, 0, 0).await;
        let root = root_client.root_nfs_fh3();
        // The root directory is root's 0755: the squashed root may not write in it.
        let refused = root_client
            .mkdir(&MKDIR3args {
                where_: dirop(&root, "r"),
                attributes: mode(0o755),
            })
            .await
            .unwrap();
        assert_eq!(status(&refused), nfsstat3::NFS3ERR_ACCES);
        let mut user = connect(server.port, 1000, 1000).await;
        let refused = user
            .create(&CREATE3args {
                where_: dirop(&root, "f"),
                how: createhow3::GUARDED(mode(0o644)),
            })
            .await
            .unwrap();
        assert_eq!(status(&refused), nfsstat3::NFS3ERR_ACCES);
        let access = user
            .access(&ACCESS3args {
                object: root.clone(),
                access: ACCESS3_READ | ACCESS3_MODIFY,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(access.access, ACCESS3_READ);
    });
    drop(server);
    // Without root squash, root makes a directory for uid 1000; uid 1000 works in it and
    // uid 1001 may not read a 0600 file of 1000's.
    let server = NfsServer::start(&dir.path().join("fs"), &["--no-root-squash"]);
    runtime().block_on(async {
        let mut root_client = connect(server.port, 0, 0).await;
        let root = root_client.root_nfs_fh3();
        let home = root_client
            .mkdir(&MKDIR3args {
                where_: dirop(&root, "home"),
                attributes: sattr3 {
                    mode: Nfs3Option::Some(0o755),
                    uid: Nfs3Option::Some(1000),
                    gid: Nfs3Option::Some(1000),
                    ..sattr3::default()
                },
            })
            .await
            .unwrap()
            .unwrap();
        let home = handle_of(home.obj);
        let mut user = connect(server.port, 1000, 1000).await;
        let f = user
            .create(&CREATE3args {
                where_: dirop(&home, "secret"),
                how: createhow3::GUARDED(mode(0o600)),
            })
            .await
            .unwrap()
            .unwrap();
        let f = handle_of(f.obj);
        let (_, attr) = lookup(&mut user, &home, "secret").await.unwrap();
        assert_eq!((attr.uid, attr.gid), (1000, 1000));
        let mut other = connect(server.port, 1001, 1001).await;
        let read = other
            .read(&READ3args {
                file: f.clone(),
                offset: 0,
                count: 10,
            })
            .await
            .unwrap();
        assert_eq!(status(&read), nfsstat3::NFS3ERR_ACCES);
        // In a setgid directory of a group the caller is not in, a new file takes the
        // directory's group but not the setgid bit it asked for.
        let sg = root_client
            .mkdir(&MKDIR3args {
                where_: dirop(&root, "sg"),
                attributes: sattr3 {
                    mode: Nfs3Option::Some(0o2777),
                    gid: Nfs3Option::Some(50),
                    ..sattr3::default()
                },
            })
            .await
            .unwrap()
            .unwrap();
        let sg = handle_of(sg.obj);
        let made = user
            .create(&CREATE3args {
                where_: dirop(&sg, "x"),
                how: createhow3::GUARDED(mode(0o2755)),
            })
            .await
            .unwrap();
        assert_eq!(status(&made), nfsstat3::NFS3_OK);
        let (_, x) = lookup(&mut user, &sg, "x").await.unwrap();
        assert_eq!((x.gid, x.mode), (50, 0o755));
        // Only root gives a file away.
        let chown = user
            .setattr(&SETATTR3args {
                object: f.clone(),
                new_attributes: sattr3 {
                    uid: Nfs3Option::Some(1001),
                    ..sattr3::default()
                },
                guard: Nfs3Option::None,
            })
            .await
            .unwrap();
        assert_eq!(status(&chown), nfsstat3::NFS3ERR_PERM);
        // Nor does anyone but the owner "change" the owner or group to what it is.
        for (uid, gid) in [(Some(1000), None), (None, Some(1000))] {
            let same = sattr3 {
                uid: uid.map_or(Nfs3Option::None, Nfs3Option::Some),
                gid: gid.map_or(Nfs3Option::None, Nfs3Option::Some),
                ..sattr3::default()
            };
            let args = SETATTR3args {
                object: f.clone(),
                new_attributes: same,
                guard: Nfs3Option::None,
            };
            let by_other = other.setattr(&args).await.unwrap();
            assert_eq!(status(&by_other), nfsstat3::NFS3ERR_PERM, "{uid:?} {gid:?}");
            let by_owner = user.setattr(&args).await.unwrap();
            assert_eq!(status(&by_owner), nfsstat3::NFS3_OK, "{uid:?} {gid:?}");
        }

        // Setuid and setgid (with group execute) go at a write or a change of size by
        // anyone but root, and at a chown by anyone; setgid without group execute stays.
        let made = user
            .create(&CREATE3args {
                where_: dirop(&home, "prog"),
                how: createhow3::GUARDED(mode(0o6755)),
            })
            .await
            .unwrap()
            .unwrap();
        let prog = handle_of(made.obj);
        async fn mode_of(c: &mut Client, fh: &nfs_fh3) -> u32 {
            let attr = c
                .getattr(&GETATTR3args { object: fh.clone() })
                .await
                .unwrap()
                .unwrap();
            attr.obj_attributes.mode
        }
        async fn set_mode(c: &mut Client, fh: &nfs_fh3, mode_bits: u32) {
            let args = SETATTR3args {
                object: fh.clone(),
                new_attributes: mode(mode_bits),
                guard: Nfs3Option::None,
            };
            assert_eq!(status(&c.setattr(&args).await.unwrap()), nfsstat3::NFS3_OK);
        }
        async fn write_one(c: &mut Client, fh: &nfs_fh3) {
            let args = WRITE3args {
                file: fh.clone(),
                offset: 0,
                count: 1,
                stable: stable_how::FILE_SYNC,
                data: Opaque::borrowed(b"x"),
            };
            assert_eq!(status(&c.write(&args).await.unwrap()), nfsstat3::NFS3_OK);
        }
        assert_eq!(mode_of(&mut user, &prog).await, 0o6755);
        write_one(&mut user, &prog).await;
        assert_eq!(
            mode_of(&mut user, &prog).await,
            0o755,
            "after the owner's write"
        );
        set_mode(&mut user, &prog, 0o6755).await;
        write_one(&mut root_client, &prog).await;
        assert_eq!(
            mode_of(&mut user, &prog).await,
            0o6755,
            "after root's write"
        );
        let truncate = SETATTR3args {
            object: prog.clone(),
            new_attributes: sattr3 {
                size: Nfs3Option::Some(0),
                ..sattr3::default()
            },
            guard: Nfs3Option::None,
        };
        assert_eq!(
            status(&user.setattr(&truncate).await.unwrap()),
            nfsstat3::NFS3_OK
        );
        assert_eq!(mode_of(&mut user, &prog).await, 0o755, "after a truncation");
        set_mode(&mut user, &prog, 0o2745).await;
        write_one(&mut user, &prog).await;
        assert_eq!(
            mode_of(&mut user, &prog).await,
            0o2745,
            "setgid without g+x"
        );
        // ... unless the writer is outside the file's group (Linux 6.2 on).
        let to_group_50 = SETATTR3args {
            object: prog.clone(),
            new_attributes: sattr3 {
                gid: Nfs3Option::Some(50),
                mode: Nfs3Option::Some(0o2745),
                ..sattr3::default()
            },
            guard: Nfs3Option::None,
        };
        assert_eq!(
            status(&root_client.setattr(&to_group_50).await.unwrap()),
            nfsstat3::NFS3_OK
        );
        assert_eq!(
            mode_of(&mut user, &prog).await,
            0o2745,
            "after root's chgrp"
        );
        write_one(&mut user, &prog).await;
        assert_eq!(
            mode_of(&mut user, &prog).await,
            0o745,
            "after a write by the owner outside the group"
        );
        set_mode(&mut user, &prog, 0o6755).await;
        let give = SETATTR3args {
            object: prog.clone(),
            new_attributes: sattr3 {
                uid: Nfs3Option::Some(1001),
                ..sattr3::default()
            },
            guard: Nfs3Option::None,
        };
        assert_eq!(
            status(&root_client.setattr(&give).await.unwrap()),
            nfsstat3::NFS3_OK
        );
        assert_eq!(mode_of(&mut user, &prog).await, 0o755, "after root's chown");
    });
}

// ---- raw RPC ----

/// One call's record: header (AUTH_SYS as uid 0), then `args`.
fn call_record(xid: u32, prog: u32, vers: u32, proc: u32, args: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for word in [xid, 0, 2, prog, vers, proc] {
        out.extend(word.to_be_bytes());
    }
    cred(0, 0).pack(&mut out).unwrap();
    opaque_auth::default().pack(&mut out).unwrap();
    out.extend(args);
    out
}

fn send(stream: &mut TcpStream, record: &[u8]) {
    try_send(stream, record).unwrap();
}

/// `record` as one last fragment.
fn try_send(stream: &mut TcpStream, record: &[u8]) -> std::io::Result<()> {
    stream.write_all(&(record.len() as u32 | 0x8000_0000).to_be_bytes())?;
    stream.write_all(record)
}

/// The next reply record, or `None` when the server closed the connection.
fn receive(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let len = (u32::from_be_bytes(header) & 0x7fff_ffff) as usize;
    let mut body = vec![0; len];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

/// A reply's xid, and its accept status and results (`None` for a denied call).
fn accepted(reply: &[u8]) -> (u32, Option<(u32, Vec<u8>)>) {
    let word = |at: usize| u32::from_be_bytes(reply[at..at + 4].try_into().unwrap());
    assert_eq!(word(4), 1, "a reply");
    if word(8) != 0 {
        return (word(0), None);
    }
    let verf_len = word(16) as usize;
    let at = 20 + verf_len.next_multiple_of(4);
    (word(0), Some((word(at), reply[at + 4..].to_vec())))
}

fn connect_raw(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

fn root_handle(port: u16) -> nfs_fh3 {
    let mut s = connect_raw(port);
    let mut path = Vec::new();
    nfs3_client::nfs3_types::mount::dirpath(Opaque::borrowed(b"/"))
        .pack(&mut path)
        .unwrap();
    send(&mut s, &call_record(1, 100_005, 3, 1, &path));
    let (_, answer) = accepted(&receive(&mut s).unwrap());
    let (stat, results) = answer.unwrap();
    assert_eq!(stat, 0);
    let (res, _) = nfs3_client::nfs3_types::mount::mountres3::unpack(&mut &results[..]).unwrap();
    match res {
        nfs3_client::nfs3_types::mount::mountres3::Ok(ok) => nfs_fh3 { data: ok.fhandle.0 },
        nfs3_client::nfs3_types::mount::mountres3::Err(e) => panic!("MNT: {e:?}"),
    }
}

fn packed(value: &impl Pack) -> Vec<u8> {
    let mut out = Vec::new();
    value.pack(&mut out).unwrap();
    out
}

#[test]
fn a_retransmission_gets_the_first_outcome_even_after_a_crash() {
    let dir = scratch("nfs-retransmit");
    let mut server = NfsServer::start(&dir.path().join("fs"), &["--no-root-squash"]);
    let root = root_handle(server.port);
    let create = packed(&CREATE3args {
        where_: dirop(&root, "once"),
        how: createhow3::GUARDED(mode(0o644)),
    });
    let record = call_record(0x5151, 100_003, 3, 8, &create);
    let created = |reply: &[u8]| {
        let (xid, answer) = accepted(reply);
        assert_eq!(xid, 0x5151);
        let (stat, results) = answer.unwrap();
        assert_eq!(stat, 0);
        created_handle(&results)
    };
    let mut s = connect_raw(server.port);
    send(&mut s, &record);
    let first = created(&receive(&mut s).unwrap());
    send(&mut s, &record);
    assert_eq!(created(&receive(&mut s).unwrap()), first);
    // The same call under another xid is a new request: EXIST.
    send(&mut s, &call_record(0x5152, 100_003, 3, 8, &create));
    let (_, answer) = accepted(&receive(&mut s).unwrap());
    let results = answer.unwrap().1;
    assert_eq!(
        status(&CREATE3res::unpack(&mut &results[..]).unwrap().0),
        nfsstat3::NFS3ERR_EXIST
    );

    // A REMOVE, answered; the server crashes; the client resends both on a new
    // connection: the first outcomes, not EXIST and NOENT.
    let remove = call_record(
        0x6161,
        100_003,
        3,
        12,
        &packed(&REMOVE3args {
            object: dirop(&root, "once"),
        }),
    );
    send(&mut s, &remove);
    let (_, answer) = accepted(&receive(&mut s).unwrap());
    let results = answer.unwrap().1;
    assert_eq!(
        status(&REMOVE3res::unpack(&mut &results[..]).unwrap().0),
        nfsstat3::NFS3_OK
    );
    drop(s);
    server.crash_and_restart();
    let mut s = connect_raw(server.port);
    send(&mut s, &record);
    assert_eq!(created(&receive(&mut s).unwrap()), first);
    send(&mut s, &remove);
    let (_, answer) = accepted(&receive(&mut s).unwrap());
    let results = answer.unwrap().1;
    assert_eq!(
        status(&REMOVE3res::unpack(&mut &results[..]).unwrap().0),
        nfsstat3::NFS3_OK
    );
    // One effect: created once, removed once.
    runtime().block_on(async {
        let mut c = connect(server.port, 0, 0).await;
        let root = c.root_nfs_fh3();
        assert_eq!(names(&mut c, &root).await, [".", ".."]);
    });
}

#[test]
fn committed_writes_and_readdir_cookies_survive_a_crash_and_the_verifier_tells_the_client() {
    let dir = scratch("nfs-commit");
    let mut server = NfsServer::start(&dir.path().join("fs"), &["--no-root-squash"]);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let (fh, verifier, list, first) = runtime().block_on(async {
        let mut c = connect(server.port, 0, 0).await;
        let root = c.root_nfs_fh3();
        let f = c
            .create(&CREATE3args {
                where_: dirop(&root, "big"),
                how: createhow3::GUARDED(mode(0o644)),
            })
            .await
            .unwrap()
            .unwrap();
        let fh = handle_of(f.obj);
        // A directory, listed part way before the crash and on after it.
        let made = c
            .mkdir(&MKDIR3args {
                where_: dirop(&root, "list"),
                attributes: mode(0o755),
            })
            .await
            .unwrap()
            .unwrap();
        let list = handle_of(made.obj);
        for i in 0..60 {
            let name = format!("entry-{i:02}");
            c.create(&CREATE3args {
                where_: dirop(&list, &name),
                how: createhow3::GUARDED(mode(0o644)),
            })
            .await
            .unwrap()
            .unwrap();
        }
        let first = names_from(&mut c, &list, 0, cookieverf3::default(), 1).await;
        for (i, chunk) in data.chunks(1 << 20).enumerate() {
            let w = c
                .write(&WRITE3args {
                    file: fh.clone(),
                    offset: (i << 20) as u64,
                    count: chunk.len() as u32,
                    stable: stable_how::UNSTABLE,
                    data: Opaque::borrowed(chunk),
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(w.count as usize, chunk.len());
        }
        let commit = c
            .commit(&COMMIT3args {
                file: fh.clone(),
                offset: 0,
                count: 0,
            })
            .await
            .unwrap()
            .unwrap();
        (fh, commit.verf, list, first)
    });
    server.crash_and_restart();
    runtime().block_on(async {
        let mut c = connect(server.port, 0, 0).await;
        // A READDIR cookie outlives the server: the listing goes on where it stopped.
        let (first_names, cookie, verf) = first;
        assert!(first_names.len() > 2 && first_names.len() < 62);
        let (rest, _, _) = names_from(&mut c, &list, cookie, verf, usize::MAX).await;
        let mut all: Vec<String> = first_names.into_iter().chain(rest).collect();
        all.sort();
        let mut want: Vec<String> = (0..60).map(|i| format!("entry-{i:02}")).collect();
        want.extend([".".to_string(), "..".to_string()]);
        want.sort();
        assert_eq!(all, want, "each name once across the restart");
        let commit = c
            .commit(&COMMIT3args {
                file: fh.clone(),
                offset: 0,
                count: 0,
            })
            .await
            .unwrap()
            .unwrap();
        assert_ne!(
            commit.verf, verifier,
            "a restarted server must change its write verifier"
        );
        let mut back = Vec::new();
        while back.len() < data.len() {
            let r = c
                .read(&READ3args {
                    file: fh.clone(),
                    offset: back.len() as u64,
                    count: 1 << 20,
                })
                .await
                .unwrap()
                .unwrap();
            back.extend_from_slice(&r.data);
            if r.eof {
                break;
            }
        }
        assert!(back == data, "committed bytes differ after the crash");
    });
}

#[test]
fn bad_input_gets_an_rpc_error_or_a_closed_connection_and_changes_nothing() {
    let dir = scratch("nfs-garbage");
    let server = NfsServer::start(&dir.path().join("fs"), &["--no-root-squash"]);
    let root = root_handle(server.port);
    let mut s = connect_raw(server.port);
    let accept = |s: &mut TcpStream| accepted(&receive(s).unwrap()).1.map(|a| a.0);
    // A wrong program, a wrong version, an unknown procedure.
    send(&mut s, &call_record(1, 200_000, 1, 0, &[]));
    assert_eq!(accept(&mut s), Some(1), "PROG_UNAVAIL");
    send(&mut s, &call_record(2, 100_003, 4, 0, &[]));
    assert_eq!(accept(&mut s), Some(2), "PROG_MISMATCH");
    send(&mut s, &call_record(3, 100_003, 3, 99, &[]));
    assert_eq!(accept(&mut s), Some(3), "PROC_UNAVAIL");
    // Arguments cut short, a name claiming 4 GiB, bytes left over: GARBAGE_ARGS.
    let create = packed(&CREATE3args {
        where_: dirop(&root, "g"),
        how: createhow3::GUARDED(mode(0o644)),
    });
    send(
        &mut s,
        &call_record(4, 100_003, 3, 8, &create[..create.len() - 3]),
    );
    assert_eq!(accept(&mut s), Some(4));
    let mut huge = packed(&root);
    huge.extend(u32::MAX.to_be_bytes());
    huge.extend(b"abcd");
    send(&mut s, &call_record(5, 100_003, 3, 3, &huge));
    assert_eq!(accept(&mut s), Some(4));
    let mut trailing = create.clone();
    trailing.extend([0; 8]);
    send(&mut s, &call_record(6, 100_003, 3, 8, &trailing));
    assert_eq!(accept(&mut s), Some(4));
    // AUTH_NONE is refused (denied, AUTH_ERROR) except for NULL.
    let mut none = Vec::new();
    for word in [7u32, 0, 2, 100_003, 3, 1, 0, 0, 0, 0] {
        none.extend(word.to_be_bytes());
    }
    none.extend(packed(&root));
    send(&mut s, &none);
    assert_eq!(accepted(&receive(&mut s).unwrap()), (7, None));
    // RPC version 3: denied.
    let mut v3 = call_record(8, 100_003, 3, 0, &[]);
    v3[8..12].copy_from_slice(&3u32.to_be_bytes());
    send(&mut s, &v3);
    assert_eq!(accepted(&receive(&mut s).unwrap()), (8, None));
    // The connection still serves.
    send(&mut s, &call_record(9, 100_003, 3, 0, &[]));
    assert_eq!(accept(&mut s), Some(0));

    // A fragment header claiming 2 GiB: the connection is closed, nothing read.
    let mut s = connect_raw(server.port);
    s.write_all(&0xffff_ffffu32.to_be_bytes()).unwrap();
    assert_eq!(receive(&mut s), None);
    // Garbage that is no RPC message: closed.
    let mut s = connect_raw(server.port);
    send(&mut s, b"GET / HTTP/1.1\r\n\r\n");
    let mut s2 = connect_raw(server.port);
    send(&mut s2, &[1, 2]);
    assert_eq!(receive(&mut s2), None);
    drop(s);
    // Nothing was made, and the server answers a real client.
    runtime().block_on(async {
        let mut c = connect(server.port, 0, 0).await;
        let root = c.root_nfs_fh3();
        assert_eq!(names(&mut c, &root).await, [".", ".."]);
    });
}

// ---- a real client: libnfs's command-line tools ----

/// Whether libnfs's tools are here; as root with apt-get they are installed first.
fn libnfs_tools() -> bool {
    let have = || {
        Command::new("sh")
            .args([
                "-c",
                "command -v nfs-cp && command -v nfs-ls && command -v nfs-cat",
            ])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if have() {
        return true;
    }
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    if root {
        let install = "export DEBIAN_FRONTEND=noninteractive; \
            apt-get install -y -q libnfs-utils >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libnfs-utils >/dev/null 2>&1; }";
        let _ = Command::new("sh").args(["-c", install]).status();
    }
    have()
}

/// A libnfs URL of `path` (absolute) in the export `/`: libnfs takes what precedes the
/// last `/` as the export to mount, so the export's own `/` is written out.
fn url(port: u16, path: &str) -> String {
    format!("nfs://127.0.0.1/{path}?nfsport={port}&mountport={port}&version=3")
}

fn run_ok(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn libnfs_copies_a_tree_in_and_out_byte_for_byte() {
    if !libnfs_tools() {
        eprintln!("skipped: libnfs-utils is missing (apt-get install -y libnfs-utils)");
        return;
    }
    let dir = scratch("nfs-libnfs");
    // libnfs calls as the user running it (root here): not squashed, so it may write.
    let server = NfsServer::start(&dir.path().join("fs"), &["--no-root-squash"]);
    let local = dir.path().join("local");
    std::fs::create_dir(&local).unwrap();
    // Many small files in a few directories, and one large one.
    let big_mb: usize = std::env::var("SMLOG_NFS_BIG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seed = 0x2545_f491_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for d in 0..4 {
        for f in 0..40 {
            let len = (next() % 20_000) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            files.push((format!("/d{d}/f{f}"), bytes));
        }
    }
    let big: Vec<u8> = (0..big_mb << 20)
        .map(|i| ((i as u64 * 2_654_435_761) >> 13) as u8)
        .collect();
    files.push(("/big".to_owned(), big));
    runtime().block_on(async {
        let mut c = connect(server.port, 0, 0).await;
        let root = c.root_nfs_fh3();
        for d in 0..4 {
            let made = c
                .mkdir(&MKDIR3args {
                    where_: dirop(&root, &format!("d{d}")),
                    attributes: mode(0o755),
                })
                .await
                .unwrap();
            assert_eq!(status(&made), nfsstat3::NFS3_OK);
        }
    });
    for (path, bytes) in &files {
        let source = local.join(path.trim_start_matches('/').replace('/', "_"));
        std::fs::write(&source, bytes).unwrap();
        run_ok(
            "nfs-cp",
            &[source.to_str().unwrap(), &url(server.port, path)],
        );
    }
    // Listed: every name, recursively.
    let listing = String::from_utf8(run_ok("nfs-ls", &["-R", &url(server.port, "/")])).unwrap();
    for (path, _) in &files {
        let name = path.rsplit('/').next().unwrap();
        assert!(
            listing.contains(name),
            "nfs-ls -R does not list {path}:\n{listing}"
        );
    }
    // Read back through the client, byte for byte: copies out, and a small one by cat.
    let back = dir.path().join("back");
    std::fs::create_dir(&back).unwrap();
    for (path, bytes) in &files {
        let target = back.join(path.trim_start_matches('/').replace('/', "_"));
        run_ok(
            "nfs-cp",
            &[&url(server.port, path), target.to_str().unwrap()],
        );
        assert!(
            std::fs::read(&target).unwrap() == *bytes,
            "{path} differs after a round trip"
        );
    }
    let (path, bytes) = &files[3];
    assert!(run_ok("nfs-cat", &[&url(server.port, path)]) == *bytes);
    // nfs-cp makes its target with an exclusive create: an existing file is refused.
    let again = Command::new("nfs-cp")
        .args([
            local.join("big").to_str().unwrap(),
            &url(server.port, "/big"),
        ])
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "nfs-cp over an existing file succeeded"
    );
}

#[test]
fn a_crash_under_load_keeps_every_committed_byte() {
    let dir = scratch("nfs-crash-load");
    let mut server = NfsServer::start(&dir.path().join("fs"), &["--no-root-squash"]);
    let port = server.port;
    // A copy by libnfs in the background, where it is installed: the crash hits it too.
    let copy = libnfs_tools().then(|| {
        let big = dir.path().join("big");
        let bytes: Vec<u8> = (0..(256usize << 20)).map(|i| (i / 4096) as u8).collect();
        std::fs::write(&big, bytes).unwrap();
        Command::new("nfs-cp")
            .args([big.to_str().unwrap(), &url(port, "/copy")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    });
    // SIGKILL at a moment of its own while the client below writes and commits.
    let pid = server.child.id() as i32;
    let delay = Duration::from_millis(400 + u64::from(std::process::id() % 800));
    let killer = std::thread::spawn(move || {
        std::thread::sleep(delay);
        // SAFETY: kill(2) on a pid this test spawned and has not reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let chunk =
        |i: usize| -> Vec<u8> { (0..256 * 1024).map(|j| (i * 31 + j / 512) as u8).collect() };
    let (fh, committed, verifier) = runtime().block_on(async {
        let mut c = connect(port, 0, 0).await;
        let root = c.root_nfs_fh3();
        let f = c
            .create(&CREATE3args {
                where_: dirop(&root, "w"),
                how: createhow3::GUARDED(mode(0o644)),
            })
            .await
            .unwrap()
            .unwrap();
        let fh = handle_of(f.obj);
        let (mut committed, mut verifier) = (0usize, None);
        let mut written = 0usize;
        'load: loop {
            for _ in 0..4 {
                let data = chunk(written);
                // nfs3_client reads a closed connection's end as no bytes yet, again and
                // again: a call that is not answered soon met the crash.
                let w = tokio::time::timeout(
                    CALL_TIMEOUT,
                    c.write(&WRITE3args {
                        file: fh.clone(),
                        offset: (written * data.len()) as u64,
                        count: data.len() as u32,
                        stable: stable_how::UNSTABLE,
                        data: Opaque::borrowed(&data),
                    }),
                )
                .await;
                match w {
                    Ok(Ok(Nfs3Result::Ok(_))) => written += 1,
                    _ => break 'load,
                }
            }
            match tokio::time::timeout(
                CALL_TIMEOUT,
                c.commit(&COMMIT3args {
                    file: fh.clone(),
                    offset: 0,
                    count: 0,
                }),
            )
            .await
            {
                Ok(Ok(Nfs3Result::Ok(ok))) => {
                    committed = written;
                    verifier = Some(ok.verf);
                }
                _ => break 'load,
            }
        }
        (fh, committed, verifier)
    });
    killer.join().unwrap();
    assert!(
        committed > 0,
        "the server died before the first COMMIT; no load was tested"
    );
    server.crash_and_restart();
    // libnfs reconnects (a hard mount's behaviour) and finishes its copy or gives up; what
    // it had not committed it may not resend, so its bytes are not checked, only that the
    // volume stays consistent under it.
    if let Some(mut copy) = copy {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = copy.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = copy.kill();
                let _ = copy.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        eprintln!("nfs-cp across the crash: {status:?}");
        if status.is_some_and(|s| s.success()) {
            let back = dir.path().join("copy-back");
            run_ok("nfs-cp", &[&url(port, "/copy"), back.to_str().unwrap()]);
            let same =
                std::fs::read(&back).unwrap() == std::fs::read(dir.path().join("big")).unwrap();
            eprintln!("its copy is byte for byte the source: {same}");
        }
    }
    runtime().block_on(async {
        let mut c = connect(port, 0, 0).await;
        // The client learns of the crash from the verifier, and resends what it had not
        // seen committed (here: checks what it had).
        let commit = c
            .commit(&COMMIT3args {
                file: fh.clone(),
                offset: 0,
                count: 0,
            })
            .await
            .unwrap()
            .unwrap();
        assert_ne!(Some(commit.verf), verifier);
        for i in 0..committed {
            let r = c
                .read(&READ3args {
                    file: fh.clone(),
                    offset: (i * 256 * 1024) as u64,
                    count: 256 * 1024,
                })
                .await
                .unwrap()
                .unwrap();
            assert!(
                r.data[..] == chunk(i)[..],
                "committed chunk {i} of {committed} differs"
            );
        }
    });
    eprintln!("{committed} chunks of 256 KiB committed before the SIGKILL, all there after it");
    // The engine is consistent, the partial copy included.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let fsck = Command::new(env!("CARGO_BIN_EXE_smlog"))
        .args(["fsck", dir.path().join("fs").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

// ---- a cluster ----

mod cluster_common;

/// `smlog nfs --node` on node `i`: the node runs in the server's process.
fn serve_node(nodes: &cluster_common::Nodes, i: usize) -> NfsServer {
    NfsServer::start(
        &nodes.dirs[i],
        &[
            "--node",
            "--no-root-squash",
            "--change-timeout-seconds",
            "3",
        ],
    )
}

/// Sends `record` on a new connection to `port`: the call's status and results, or
/// `None` when the server closed the connection unanswered.
fn call(port: u16, record: &[u8]) -> Option<(nfsstat3, Vec<u8>)> {
    let mut s = connect_raw(port);
    send(&mut s, record);
    let reply = receive(&mut s)?;
    let (_, answer) = accepted(&reply);
    let (accept, results) = answer.expect("accepted");
    assert_eq!(accept, 0, "accept status");
    let stat = nfsstat3::unpack(&mut &results[..]).unwrap().0;
    Some((stat, results))
}

/// [`call`], sent again (the same record, as a client resends) until it is answered.
fn call_until_answered(port: u16, record: &[u8]) -> (nfsstat3, Vec<u8>) {
    for _ in 0..10 {
        if let Some(answer) = call(port, record) {
            return answer;
        }
    }
    panic!("no answer in 10 tries");
}

fn created_handle(results: &[u8]) -> nfs_fh3 {
    match CREATE3res::unpack(&mut &results[..]).unwrap().0 {
        Nfs3Result::Ok(ok) => handle_of(ok.obj),
        Nfs3Result::Err((s, _)) => panic!("CREATE answered {s:?}"),
    }
}

/// The names in the root directory as the NFS server on `port` lists them (raw READDIR:
/// one call, the directory is small).
fn root_names(port: u16, root: &nfs_fh3) -> Vec<String> {
    let args = READDIR3args {
        dir: root.clone(),
        cookie: 0,
        cookieverf: cookieverf3::default(),
        count: 64 * 1024,
    };
    let (stat, results) =
        call_until_answered(port, &call_record(9, 100_003, 3, 16, &packed(&args)));
    assert_eq!(stat, nfsstat3::NFS3_OK);
    let ok = match READDIR3res::unpack(&mut &results[..]).unwrap().0 {
        Nfs3Result::Ok(ok) => ok,
        Nfs3Result::Err((s, _)) => panic!("READDIR answered {s:?}"),
    };
    assert!(ok.reply.eof);
    let mut names: Vec<String> = ok
        .reply
        .entries
        .0
        .iter()
        .map(|e| String::from_utf8(e.name.0.to_vec()).unwrap())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    names
}

/// Waits up to 10 s for `check` to pass (a follower applies a change a little after its
/// leader answered it).
fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..200 {
        match check() {
            Ok(value) => return value,
            Err(why) => last = why,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: {last}");
}

#[test]
fn every_node_serves_the_volume_with_one_set_of_handles_and_a_resend_has_one_effect_across_failovers(
) {
    let tmp = scratch("nfs-cluster");
    let nodes = cluster_common::Nodes::init(tmp.path(), 3);
    let key = nodes.key.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut servers = vec![Some(serve_node(&nodes, 0))];
    rt.block_on(cluster_common::leader(&nodes, &key));
    servers.push(Some(serve_node(&nodes, 1)));
    servers.push(Some(serve_node(&nodes, 2)));
    nodes.add(1);
    nodes.add(2);
    let port = |servers: &[Option<NfsServer>], i: usize| servers[i].as_ref().unwrap().port;

    // One volume, one set of handles: every node's root handle is the same.
    let root = root_handle(port(&servers, 0));
    for i in 1..3 {
        assert_eq!(
            root_handle(port(&servers, i)),
            root,
            "node {}'s root",
            i + 1
        );
    }

    // A file made and written through node 2; an UNSTABLE write comes back FILE_SYNC
    // (durable on a quorum already).
    let create = call_record(
        0x7001,
        100_003,
        3,
        8,
        &packed(&CREATE3args {
            where_: dirop(&root, "once"),
            how: createhow3::GUARDED(mode(0o644)),
        }),
    );
    let (stat, results) = call_until_answered(port(&servers, 1), &create);
    assert_eq!(stat, nfsstat3::NFS3_OK);
    let fh = created_handle(&results);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let write = WRITE3args {
        file: fh.clone(),
        offset: 0,
        count: data.len() as u32,
        stable: stable_how::UNSTABLE,
        data: Opaque::borrowed(&data),
    };
    let (stat, results) = call_until_answered(
        port(&servers, 1),
        &call_record(0x7002, 100_003, 3, 7, &packed(&write)),
    );
    assert_eq!(stat, nfsstat3::NFS3_OK);
    match WRITE3res::unpack(&mut &results[..]).unwrap().0 {
        Nfs3Result::Ok(ok) => {
            assert_eq!(ok.count as usize, data.len());
            assert_eq!(ok.committed, stable_how::FILE_SYNC);
        }
        Nfs3Result::Err((s, _)) => panic!("WRITE answered {s:?}"),
    }

    // The handle node 2 gave is good on nodes 1 and 3: they read the bytes.
    let read = call_record(
        0x7003,
        100_003,
        3,
        6,
        &packed(&READ3args {
            file: fh.clone(),
            offset: 0,
            count: 1 << 20,
        }),
    );
    for i in [0, 2] {
        eventually(&format!("node {} reads what node 2 wrote", i + 1), || {
            let (stat, results) = call_until_answered(port(&servers, i), &read);
            match READ3res::unpack(&mut &results[..]).unwrap().0 {
                Nfs3Result::Ok(ok) if *ok.data.0 == data[..] && ok.eof => Ok(()),
                Nfs3Result::Ok(ok) => Err(format!("{} bytes read", ok.data.0.len())),
                Nfs3Result::Err(_) => Err(format!("{stat:?}")),
            }
        });
    }

    // The leader is killed. The client resends the CREATE to another node: it gets the
    // first reply (the same handle), not EXIST. A REMOVE answered by one survivor and
    // resent to the other is answered OK, not NOENT.
    let killed = rt.block_on(cluster_common::leader(&nodes, &key));
    servers[killed] = None;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != killed).collect();
    let (a, b) = (survivors[0], survivors[1]);
    let (stat, results) = call_until_answered(port(&servers, a), &create);
    assert_eq!(
        stat,
        nfsstat3::NFS3_OK,
        "the CREATE resent to node {}",
        a + 1
    );
    assert_eq!(created_handle(&results), fh);
    let remove = call_record(
        0x7004,
        100_003,
        3,
        12,
        &packed(&REMOVE3args {
            object: dirop(&root, "once"),
        }),
    );
    assert_eq!(
        call_until_answered(port(&servers, a), &remove).0,
        nfsstat3::NFS3_OK
    );
    assert_eq!(
        call_until_answered(port(&servers, b), &remove).0,
        nfsstat3::NFS3_OK,
        "the REMOVE resent to node {}",
        b + 1
    );
    for i in [a, b] {
        eventually(&format!("node {} lists nothing", i + 1), || {
            let names = root_names(port(&servers, i), &root);
            names.is_empty().then_some(()).ok_or(format!("{names:?}"))
        });
    }

    // A second node goes: no quorum. A CREATE through the last one cannot be known to
    // take effect, so it is left unanswered (the connection closed). Once the node is back,
    // the same call resent gets an answer, and the file is there once.
    servers[a] = None;
    let late = call_record(
        0x7005,
        100_003,
        3,
        8,
        &packed(&CREATE3args {
            where_: dirop(&root, "late"),
            how: createhow3::GUARDED(mode(0o600)),
        }),
    );
    assert!(
        call(port(&servers, b), &late).is_none(),
        "a CREATE without a quorum was answered"
    );
    servers[a] = Some(serve_node(&nodes, a));
    let (stat, results) = call_until_answered(port(&servers, b), &late);
    assert_eq!(
        stat,
        nfsstat3::NFS3_OK,
        "the CREATE resent once a quorum is back"
    );
    let late_fh = created_handle(&results);
    let (stat, results) = call_until_answered(port(&servers, a), &late);
    assert_eq!(
        stat,
        nfsstat3::NFS3_OK,
        "the CREATE resent to node {}",
        a + 1
    );
    assert_eq!(created_handle(&results), late_fh);

    // The killed leader comes back and catches up: every node lists the one file.
    servers[killed] = Some(serve_node(&nodes, killed));
    for i in 0..3 {
        eventually(&format!("node {} lists late once", i + 1), || {
            let names = root_names(port(&servers, i), &root);
            (names == ["late"])
                .then_some(())
                .ok_or(format!("{names:?}"))
        });
    }
}

#[test]
fn a_sigterm_under_load_stops_cleanly_and_keeps_every_acknowledged_write() {
    let dir = scratch("nfs-sigterm");
    let mut server = NfsServer::start(&dir.path().join("fs"), &["--no-root-squash"]);
    let root = root_handle(server.port);
    const WRITERS: usize = 4;
    const CHUNK: usize = 64 * 1024;
    let chunk = |w: usize, i: u64| -> Vec<u8> {
        (0..CHUNK)
            .map(|b| (w as u64 * 31 + i * 7 + b as u64 % 251) as u8)
            .collect()
    };
    let mut files = Vec::new();
    for w in 0..WRITERS {
        let create = CREATE3args {
            where_: dirop(&root, &format!("w{w}")),
            how: createhow3::GUARDED(mode(0o644)),
        };
        let (stat, results) = call_until_answered(
            server.port,
            &call_record(100 + w as u32, 100_003, 3, 8, &packed(&create)),
        );
        assert_eq!(stat, nfsstat3::NFS3_OK);
        files.push(created_handle(&results));
    }
    // Each writer sends UNSTABLE writes (never COMMITted) one after another until its
    // connection closes; it counts those answered OK.
    let writers: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(w, fh)| {
            let (fh, port) = (fh.clone(), server.port);
            std::thread::spawn(move || {
                let mut s = connect_raw(port);
                let mut acked = 0u64;
                loop {
                    let data = chunk(w, acked);
                    let write = WRITE3args {
                        file: fh.clone(),
                        offset: acked * CHUNK as u64,
                        count: CHUNK as u32,
                        stable: stable_how::UNSTABLE,
                        data: Opaque::borrowed(&data),
                    };
                    let xid = 0x1000_0000 + (w as u32) * 0x10_0000 + acked as u32;
                    let record = call_record(xid, 100_003, 3, 7, &packed(&write));
                    if try_send(&mut s, &record).is_err() {
                        return acked;
                    }
                    let Some(reply) = receive(&mut s) else {
                        return acked;
                    };
                    let (_, answer) = accepted(&reply);
                    let (_, results) = answer.unwrap();
                    match WRITE3res::unpack(&mut &results[..]).unwrap().0 {
                        Nfs3Result::Ok(ok) if ok.count as usize == CHUNK => acked += 1,
                        other => panic!("writer {w}: {:?}", status(&other)),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "smlog nfs exited {exit:?} after SIGTERM");
    let acked: Vec<u64> = writers.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        acked.iter().all(|&n| n > 0),
        "writes acknowledged: {acked:?}"
    );

    // Restarted: every acknowledged write is there, although none was committed.
    server.crash_and_restart();
    for (w, fh) in files.iter().enumerate() {
        for i in 0..acked[w] {
            let read = READ3args {
                file: fh.clone(),
                offset: i * CHUNK as u64,
                count: CHUNK as u32,
            };
            let (stat, results) =
                call_until_answered(server.port, &call_record(7, 100_003, 3, 6, &packed(&read)));
            assert_eq!(stat, nfsstat3::NFS3_OK);
            match READ3res::unpack(&mut &results[..]).unwrap().0 {
                Nfs3Result::Ok(ok) => {
                    assert!(*ok.data.0 == chunk(w, i)[..], "writer {w} chunk {i}")
                }
                Nfs3Result::Err((s, _)) => panic!("READ answered {s:?}"),
            }
        }
    }
    eprintln!("acknowledged UNSTABLE writes, all kept through SIGTERM: {acked:?}");
}
