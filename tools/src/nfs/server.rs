//! The NFSv3 and MOUNT procedures of `smlog nfs`, each one engine call.
//!
//! A call arrives as one RPC record; [`Server::call`] checks the caller (address,
//! credential), walks the arguments' lengths ([`Shape`]), decodes them with `nfs3_types`,
//! runs the procedure and returns the reply's bytes. It blocks (the engine's calls do);
//! the connection code runs it off the network threads.
//!
//! Durability follows RFC 1813: a change of metadata is durable before its reply; an
//! `UNSTABLE` write is `Async` and COMMIT makes everything before it durable with one group
//! commit; the write verifier is new at every start, so after a crash a client resends
//! what it had not seen committed. Non-idempotent procedures run under a request key made
//! of the caller, the procedure, its arguments and the xid, so a retransmission — even to
//! a server restarted after a crash — gets the first call's outcome, not a second effect.

use std::cell::Cell;
use std::io::Cursor;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nfs3_types::mount::{self, dirpath, export_node, exports, fhandle3, mountres3, mountres3_ok};
use nfs3_types::nfs3::{self, *};
use nfs3_types::rpc::{accept_stat_data, auth_stat, rejected_reply};
use nfs3_types::xdr_codec::{List, Opaque, Unpack, Void};
use sha2::{Digest, Sha256};
use smlog::constants::{
    FILE_SIZE_BYTES_MAX, LINK_COUNT_MAX, NAME_SIZE_BYTES_MAX, WRITE_SIZE_BYTES_MAX,
};
use smlog::internals::machines::acl::ACL_ACCESS;
use smlog::serve::{
    permitted, privileges_to_drop, st_blocks, time_of, Caller, DirStream, DirStreams, ListingKey,
    MAY_EXEC, MAY_READ, MAY_WRITE,
};
use smlog::{
    Durability, Engine, FileKind, FsError, Ino, NewAttrs, Outcome, RenameFlags, RequestKey,
    SetAttrChanges, Stat, Time, TxnResult, ROOT_INO,
};
use smlog_cluster::command::FileOp;

use super::handle;
use super::volume::{Failure, Volume};
use super::xdr::{self, Answer, Call, Credential, Shape};

/// Directories whose listings are kept at once (each the names of one pass); past it, or
/// past [`LISTED_NAMES_MAX`] names in all, the least recently read is dropped, and its next
/// READDIR takes the names again (its cookies stay good: they are positions in the
/// volume's listing order).
const DIR_STREAMS_MAX: usize = 4096;
/// Names kept in all the listings at once.
const LISTED_NAMES_MAX: usize = 1 << 20;
/// Entries asked of the engine per round of a READDIR.
const READDIR_BATCH: usize = 128;
/// Bytes of a READDIR(PLUS) reply besides its entries: RPC header, status, directory
/// attributes, cookie verifier, list end and eof.
const READDIR_OVERHEAD_BYTES: usize = 24 + 4 + 88 + 8 + 8;

/// How `smlog nfs` serves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The export's path (what MNT must ask for).
    pub export: Vec<u8>,
    /// Make every write durable before it returns (FILE_SYNC), whatever the client asks.
    pub sync: bool,
    /// Map uid 0 to `anon`.
    pub root_squash: bool,
    /// Take AUTH_NONE calls (as `anon`).
    pub auth_none: bool,
    /// Who a squashed or anonymous caller becomes.
    pub anon: (u32, u32),
    /// Networks allowed to connect.
    pub allow: Vec<(IpAddr, u8)>,
    /// Print a line per call on stderr.
    pub trace: bool,
}

/// A file system served over NFSv3.
#[derive(Debug)]
pub struct Server<V: Volume> {
    volume: V,
    config: Config,
    /// The volume's id, in handles.
    id: u64,
    /// The write verifier: new at every start.
    verifier: [u8; 8],
    streams: Mutex<DirStreams>,
}

impl<V: Volume> Server<V> {
    /// Serves `volume` as configured.
    pub fn new(volume: V, config: Config) -> Server<V> {
        let id = volume.id();
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let verifier = (nanos ^ u64::from(std::process::id()).rotate_left(40)).to_be_bytes();
        Server {
            volume,
            config,
            id,
            verifier,
            streams: Mutex::new(DirStreams::new(
                ListingKey::of_volume(id),
                DIR_STREAMS_MAX,
                LISTED_NAMES_MAX,
            )),
        }
    }

    /// The volume served.
    pub fn volume(&self) -> &V {
        &self.volume
    }

    /// The engine reads come from now.
    fn engine(&self) -> Arc<Engine<V::Device>> {
        self.volume.engine()
    }

    /// Whether `ip` may connect.
    pub fn admits(&self, ip: IpAddr) -> bool {
        xdr::allowed(ip, &self.config.allow)
    }

    /// The reply to the RPC record `record` from `peer`; `None` when the record is not a
    /// call at all, or when the outcome of the change it asked is unknown (a cluster with
    /// no leader): the connection is then closed unanswered, and a client resends the
    /// call under the same xid, to this server or another.
    pub fn call(&self, record: &[u8], peer: IpAddr) -> Option<Vec<u8>> {
        let call = match Call::parse(record) {
            Ok(call) => call,
            Err(e) => {
                log::debug!("smlog nfs: {peer}: {e}");
                return None;
            }
        };
        let Some((answer, results)) = self.answer(&call, peer) else {
            log::warn!(
                "smlog nfs: {peer} xid {:#x}: the outcome is unknown; no reply",
                call.xid
            );
            return None;
        };
        if self.config.trace {
            // The status word leads an NFS or MNT result.
            let status = results
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            eprintln!(
                "smlog nfs: {peer} xid {:#x} prog {} v{} proc {}: {answer:?} status {status:?}",
                call.xid, call.prog, call.vers, call.proc
            );
        }
        Some(xdr::reply(call.xid, answer, &results))
    }

    /// The answer to `call`, or `None` to leave it unanswered.
    fn answer(&self, call: &Call<'_>, peer: IpAddr) -> Option<(Answer, Vec<u8>)> {
        let accepted = |data| Some((Answer::Accepted(data), Vec::new()));
        if call.rpcvers != 2 {
            return Some((
                Answer::Denied(rejected_reply::RPC_MISMATCH { low: 2, high: 2 }),
                Vec::new(),
            ));
        }
        let caller = match &call.cred {
            Credential::Sys(sys) => {
                let mut caller = Caller {
                    uid: sys.uid,
                    gid: sys.gid,
                    groups: sys.gids.clone(),
                };
                if self.config.root_squash {
                    // As knfsd: root's uid, and group 0 wherever it appears, are squashed.
                    if caller.uid == 0 {
                        caller = self.anon();
                    } else {
                        if caller.gid == 0 {
                            caller.gid = self.config.anon.1;
                        }
                        caller.groups.retain(|&g| g != 0);
                    }
                }
                caller
            }
            // Every program's NULL is a ping, answered whoever asks.
            Credential::None if call.proc == 0 || self.config.auth_none => self.anon(),
            Credential::None => {
                return Some((xdr::auth_error(auth_stat::AUTH_TOOWEAK), Vec::new()))
            }
            Credential::Other { .. } => {
                return Some((xdr::auth_error(auth_stat::AUTH_BADCRED), Vec::new()))
            }
        };
        let shape = match (call.prog, call.vers) {
            (nfs3::PROGRAM, nfs3::VERSION) => nfs_shape(call.proc),
            (mount::PROGRAM, mount::VERSION) => mount_shape(call.proc),
            (nfs3::PROGRAM, _) | (mount::PROGRAM, _) => {
                return accepted(accept_stat_data::PROG_MISMATCH { low: 3, high: 3 })
            }
            _ => return accepted(accept_stat_data::PROG_UNAVAIL),
        };
        let Some(shape) = shape else {
            return accepted(accept_stat_data::PROC_UNAVAIL);
        };
        if let Err(e) = shape.check(call.args) {
            log::debug!("smlog nfs: {peer}: xid {}: {e}", call.xid);
            return accepted(accept_stat_data::GARBAGE_ARGS);
        }
        let request = Request {
            caller,
            key: self.key(call, peer),
            unanswered: Cell::new(false),
        };
        let results = if call.prog == mount::PROGRAM {
            self.mount_proc(call.proc, call.args)
        } else {
            self.nfs_proc(call.proc, call.args, &request)
        };
        if request.unanswered.get() {
            return None;
        }
        match results {
            Some(results) => Some((Answer::Accepted(accept_stat_data::SUCCESS), results)),
            // Arguments that walk but do not decode (a value out of an enum's range).
            None => accepted(accept_stat_data::GARBAGE_ARGS),
        }
    }

    fn anon(&self) -> Caller {
        Caller {
            uid: self.config.anon.0,
            gid: self.config.anon.1,
            groups: Vec::new(),
        }
    }

    /// The request key of a call: the caller (address and credential), the procedure and
    /// its arguments name the client; the xid numbers its request. A retransmission
    /// carries all of them unchanged, a new call a new xid, and a reused xid with other
    /// arguments is another request.
    fn key(&self, call: &Call<'_>, peer: IpAddr) -> RequestKey {
        let mut hash = Sha256::new();
        hash.update(b"smlog-nfs-request\0");
        match peer {
            IpAddr::V4(v4) => hash.update(v4.octets()),
            IpAddr::V6(v6) => hash.update(v6.octets()),
        }
        if let Credential::Sys(sys) = &call.cred {
            hash.update((sys.machine.len() as u32).to_be_bytes());
            hash.update(&sys.machine);
            hash.update(sys.uid.to_be_bytes());
            hash.update(sys.gid.to_be_bytes());
            for gid in &sys.gids {
                hash.update(gid.to_be_bytes());
            }
        }
        hash.update(call.prog.to_be_bytes());
        hash.update(call.vers.to_be_bytes());
        hash.update(call.proc.to_be_bytes());
        hash.update(call.args);
        let digest = hash.finalize();
        RequestKey {
            client_id: u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")),
            request_id: u64::from(call.xid),
        }
    }

    // ---- MOUNT ----

    fn mount_proc(&self, proc: u32, args: &[u8]) -> Option<Vec<u8>> {
        use mount::MOUNT_PROGRAM::*;
        let export = || dirpath(Opaque::borrowed(&self.config.export));
        Some(match mount::MOUNT_PROGRAM::try_from(proc).ok()? {
            MOUNTPROC3_NULL | MOUNTPROC3_UMNT | MOUNTPROC3_UMNTALL => Vec::new(),
            MOUNTPROC3_MNT => {
                let (path, _) = dirpath::unpack(&mut Cursor::new(args)).ok()?;
                let reply = match self.mount_point(&path.0) {
                    Ok(ino) => {
                        let mut flavors = vec![1];
                        if self.config.auth_none {
                            flavors.push(0);
                        }
                        mountres3::Ok(mountres3_ok {
                            fhandle: fhandle3(handle::encode(self.id, ino).data),
                            auth_flavors: flavors,
                        })
                    }
                    Err(stat) => mountres3::Err(stat),
                };
                xdr::pack(&reply)
            }
            // No list of mounts is kept: clients are not tracked.
            MOUNTPROC3_DUMP => xdr::pack(&false),
            MOUNTPROC3_EXPORT => {
                let list: exports = List(vec![export_node {
                    ex_dir: export(),
                    ex_groups: List(Vec::new()),
                }]);
                xdr::pack(&list)
            }
        })
    }

    /// The directory a MNT of `path` mounts: the export, or a directory under it (as
    /// knfsd allows, and libnfs asks for the directory of the file it names).
    fn mount_point(&self, path: &[u8]) -> Result<Ino, mount::mountstat3> {
        let export = self.config.export.as_slice();
        let trimmed = |p: &[u8]| -> Vec<u8> {
            let mut p = p.to_vec();
            while p.len() > 1 && p.ends_with(b"/") {
                p.pop();
            }
            p
        };
        let (export, mut path) = (trimmed(export), trimmed(path));
        // libnfs asks for "" when the file it names is in the export's top directory.
        if path.is_empty() {
            path = export.clone();
        }
        let rest = if path == export {
            &[][..]
        } else if export == b"/" && path.starts_with(b"/") {
            &path[1..]
        } else if path.starts_with(&export) && path.get(export.len()) == Some(&b'/') {
            &path[export.len() + 1..]
        } else {
            return Err(mount::mountstat3::MNT3ERR_NOENT);
        };
        let mut ino = ROOT_INO;
        for name in rest.split(|&b| b == b'/').filter(|n| !n.is_empty()) {
            let found = self.engine().lookup(ino, name).map_err(|e| match e {
                FsError::NameTooLong { .. } => mount::mountstat3::MNT3ERR_NAMETOOLONG,
                _ => mount::mountstat3::MNT3ERR_NOENT,
            })?;
            if found.kind != FileKind::Dir {
                return Err(mount::mountstat3::MNT3ERR_NOTDIR);
            }
            ino = found.ino;
        }
        Ok(ino)
    }

    // ---- NFS ----

    fn nfs_proc(&self, proc: u32, args: &[u8], request: &Request) -> Option<Vec<u8>> {
        use nfs3::NFS_PROGRAM::*;
        fn decode<T: Unpack>(args: &[u8]) -> Option<T> {
            T::unpack(&mut Cursor::new(args))
                .ok()
                .map(|(value, _)| value)
        }
        let proc = nfs3::NFS_PROGRAM::try_from(proc).ok()?;
        Some(match proc {
            NFSPROC3_NULL => Vec::new(),
            NFSPROC3_GETATTR => xdr::pack(&self.getattr(decode(args)?)),
            NFSPROC3_SETATTR => xdr::pack(&self.setattr(decode(args)?, request)),
            NFSPROC3_LOOKUP => xdr::pack(&self.lookup(decode(args)?, request)),
            NFSPROC3_ACCESS => xdr::pack(&self.access(decode(args)?, request)),
            NFSPROC3_READLINK => xdr::pack(&self.readlink(decode(args)?)),
            NFSPROC3_READ => xdr::pack(&self.read(decode(args)?, request)),
            NFSPROC3_WRITE => xdr::pack(&self.write(decode(args)?, request)),
            NFSPROC3_CREATE => xdr::pack(&self.create(decode(args)?, request)),
            NFSPROC3_MKDIR => xdr::pack(&self.mkdir(decode(args)?, request)),
            NFSPROC3_SYMLINK => xdr::pack(&self.symlink(decode(args)?, request)),
            NFSPROC3_MKNOD => xdr::pack(&self.mknod(decode(args)?, request)),
            NFSPROC3_REMOVE => xdr::pack(&self.remove(decode(args)?, request, false)),
            NFSPROC3_RMDIR => {
                let args: RMDIR3args = decode(args)?;
                let res = self.remove(
                    REMOVE3args {
                        object: args.object,
                    },
                    request,
                    true,
                );
                xdr::pack(&match res {
                    Nfs3Result::Ok(ok) => Nfs3Result::Ok(RMDIR3resok {
                        dir_wcc: ok.dir_wcc,
                    }),
                    Nfs3Result::Err((s, fail)) => Nfs3Result::Err((
                        s,
                        RMDIR3resfail {
                            dir_wcc: fail.dir_wcc,
                        },
                    )),
                })
            }
            NFSPROC3_RENAME => xdr::pack(&self.rename(decode(args)?, request)),
            NFSPROC3_LINK => xdr::pack(&self.link(decode(args)?, request)),
            NFSPROC3_READDIR => xdr::pack(&self.readdir(decode(args)?, request)),
            NFSPROC3_READDIRPLUS => xdr::pack(&self.readdirplus(decode(args)?, request)),
            NFSPROC3_FSSTAT => xdr::pack(&self.fsstat(decode(args)?)),
            NFSPROC3_FSINFO => xdr::pack(&self.fsinfo(decode(args)?)),
            NFSPROC3_PATHCONF => xdr::pack(&self.pathconf(decode(args)?)),
            NFSPROC3_COMMIT => xdr::pack(&self.commit(decode(args)?, request)),
        })
    }

    /// The inode a handle names, and its attributes (NFS3ERR_STALE when it is gone).
    fn stat_of(&self, fh: &nfs_fh3) -> Result<Stat, nfsstat3> {
        let ino = handle::decode(self.id, fh)?;
        self.engine().getattr(ino).map_err(|e| match e {
            FsError::NotFound => nfsstat3::NFS3ERR_STALE,
            e => status(&e),
        })
    }

    fn fattr(&self, attr: &Stat) -> fattr3 {
        fattr(attr, self.id)
    }

    fn post(&self, ino: Ino) -> post_op_attr {
        match self.engine().getattr(ino) {
            Ok(attr) => Nfs3Option::Some(self.fattr(&attr)),
            Err(_) => Nfs3Option::None,
        }
    }

    fn wcc(&self, before: &Stat) -> wcc_data {
        wcc_data {
            before: Nfs3Option::Some(wcc_attr {
                size: before.size,
                mtime: nfstime(before.mtime),
                ctime: nfstime(before.ctime),
            }),
            after: self.post(before.ino),
        }
    }

    fn acl(&self, ino: Ino) -> Option<Vec<u8>> {
        self.engine().getxattr(ino, ACL_ACCESS).ok()
    }

    fn may(&self, attr: &Stat, caller: &Caller, want: u32) -> bool {
        let acl = if caller.uid != attr.uid && !caller.is_root() {
            self.acl(attr.ino)
        } else {
            None
        };
        permitted(attr, acl.as_deref(), caller, want)
    }

    /// May `caller` change the entries of directory `dir` (search and write)?
    fn may_change_dir(&self, dir: &Stat, caller: &Caller) -> Result<(), nfsstat3> {
        if dir.kind != FileKind::Dir {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        if !self.may(dir, caller, MAY_WRITE | MAY_EXEC) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        Ok(())
    }

    /// The sticky-bit rule: in a sticky directory only the owner of the entry or of the
    /// directory (or root) removes or renames it.
    fn may_unlink(&self, dir: &Stat, name: &[u8], caller: &Caller) -> Result<(), nfsstat3> {
        if dir.mode & libc::S_ISVTX == 0 || caller.is_root() || caller.uid == dir.uid {
            return Ok(());
        }
        match self.engine().lookup(dir.ino, name) {
            Ok(entry) if entry.uid != caller.uid => Err(nfsstat3::NFS3ERR_ACCES),
            _ => Ok(()),
        }
    }

    /// Makes `op` under the request's key, durable before the reply (RFC 1813 asks it of
    /// every change of metadata).
    fn change(&self, op: FileOp, request: &Request) -> Result<TxnResult, nfsstat3> {
        self.change_under(op, Some(request.key), request)
    }

    /// Makes `op` under `key` (`None`: an idempotent change), durable before the reply.
    fn change_under(
        &self,
        op: FileOp,
        key: Option<RequestKey>,
        request: &Request,
    ) -> Result<TxnResult, nfsstat3> {
        self.volume
            .change(op, key, Durability::Sync)
            .map_err(|failure| self.failed(failure, request))
    }

    /// The status of a failed change; one whose outcome is unknown leaves the call
    /// unanswered (the reply is dropped), so the client resends it under the same xid.
    fn failed(&self, failure: Failure, request: &Request) -> nfsstat3 {
        match failure {
            Failure::Errno(errno) => status_of(errno),
            Failure::Unknown => {
                request.unanswered.set(true);
                nfsstat3::NFS3ERR_IO
            }
        }
    }

    /// Makes `op`, a change that makes or names an inode, under `key`: the inode's
    /// attributes after it.
    fn make(
        &self,
        op: FileOp,
        key: Option<RequestKey>,
        request: &Request,
    ) -> Result<Stat, nfsstat3> {
        match self.change_under(op, key, request)? {
            TxnResult::Ino(ino) => self.engine().getattr(ino).map_err(|e| status(&e)),
            TxnResult::Done | TxnResult::Bytes(_) => Err(nfsstat3::NFS3ERR_SERVERFAULT),
        }
    }

    /// Whether this request already committed (a retransmission).
    fn done_before(&self, request: &Request) -> bool {
        matches!(
            self.engine().outcome(request.key),
            Some(Outcome::Committed(_))
        )
    }

    /// The inode a create under this request made, when it is a retransmission of one
    /// that committed: its first reply named that inode, whatever became of it since.
    /// Answered once the first is durable. `sattr`: the attributes the create set after
    /// it, in a transaction of their own that may not have run (the first call's outcome
    /// was unknown); they are set now, under that transaction's key, so at most once.
    fn replayed_create(
        &self,
        request: &Request,
        sattr: Option<&sattr3>,
    ) -> Option<Result<Ino, nfsstat3>> {
        let Outcome::Committed(TxnResult::Ino(ino)) = self.engine().outcome(request.key)? else {
            return None;
        };
        let finished = self.volume.sync().map_err(|f| self.failed(f, request));
        Some(finished.and_then(|()| {
            if let (Some(sattr), Ok(made)) = (sattr, self.engine().getattr(ino)) {
                match self.finish_create(&made, sattr, &request.caller, request) {
                    // Refused now (the file changed owner since, say): the first call set
                    // them, or the caller may not any more.
                    Ok(()) | Err(nfsstat3::NFS3ERR_PERM | nfsstat3::NFS3ERR_ACCES) => {}
                    Err(s) => return Err(s),
                }
            }
            Ok(ino)
        }))
    }

    fn getattr(&self, args: GETATTR3args) -> GETATTR3res {
        match self.stat_of(&args.object) {
            Ok(attr) => Nfs3Result::Ok(GETATTR3resok {
                obj_attributes: self.fattr(&attr),
            }),
            Err(s) => Nfs3Result::Err((s, Void)),
        }
    }

    fn setattr(&self, args: SETATTR3args, request: &Request) -> SETATTR3res {
        let fail = |s, wcc| Nfs3Result::Err((s, SETATTR3resfail { obj_wcc: wcc }));
        let attr = match self.stat_of(&args.object) {
            Ok(attr) => attr,
            Err(s) => return fail(s, wcc_data::default()),
        };
        let retransmitted = self.done_before(request);
        if let Nfs3Option::Some(guard) = args.guard {
            if !retransmitted && nfstime(attr.ctime) != guard {
                return fail(nfsstat3::NFS3ERR_NOT_SYNC, self.wcc(&attr));
            }
        }
        let changes = match self.changes(&attr, &args.new_attributes, &request.caller) {
            Ok(changes) => changes,
            Err(s) if !retransmitted => return fail(s, self.wcc(&attr)),
            Err(_) => SetAttrChanges::default(),
        };
        let op = FileOp::SetAttr {
            ino: attr.ino,
            changes,
        };
        match self.change(op, request) {
            Ok(_) => Nfs3Result::Ok(SETATTR3resok {
                obj_wcc: self.wcc(&attr),
            }),
            Err(s) => fail(s, self.wcc(&attr)),
        }
    }

    /// The changes `sattr` asks of `attr`, if `caller` may make them (as the kernel's
    /// `setattr_prepare` and `notify_change` decide).
    fn changes(
        &self,
        attr: &Stat,
        sattr: &sattr3,
        caller: &Caller,
    ) -> Result<SetAttrChanges, nfsstat3> {
        let owner = caller.is_root() || caller.uid == attr.uid;
        let mut changes = SetAttrChanges::default();
        if let Nfs3Option::Some(size) = sattr.size {
            match attr.kind {
                FileKind::File => {}
                FileKind::Dir => return Err(nfsstat3::NFS3ERR_ISDIR),
                _ => return Err(nfsstat3::NFS3ERR_INVAL),
            }
            // The owner may truncate what it opened before a chmod took its write bit
            // (knfsd's owner override).
            if !owner && !self.may(attr, caller, MAY_WRITE) {
                return Err(nfsstat3::NFS3ERR_ACCES);
            }
            if size > FILE_SIZE_BYTES_MAX {
                return Err(nfsstat3::NFS3ERR_FBIG);
            }
            changes.size = Some(size);
        }
        // As the kernel's `chown_ok` and `chgrp_ok`: root gives anything away; the owner
        // may "change" its own uid to itself, and its group to one it is in.
        let is_owner = caller.uid == attr.uid;
        if let Nfs3Option::Some(uid) = sattr.uid {
            if !(caller.is_root() || is_owner && uid == attr.uid) {
                return Err(nfsstat3::NFS3ERR_PERM);
            }
            changes.uid = Some(uid);
        }
        if let Nfs3Option::Some(gid) = sattr.gid {
            if !(caller.is_root() || is_owner && (gid == attr.gid || caller.in_group(gid))) {
                return Err(nfsstat3::NFS3ERR_PERM);
            }
            changes.gid = Some(gid);
        }
        if let Nfs3Option::Some(mode) = sattr.mode {
            if !owner {
                return Err(nfsstat3::NFS3ERR_PERM);
            }
            let mut mode = mode & 0o7777;
            let group = changes.gid.unwrap_or(attr.gid);
            if !caller.is_root() && !caller.in_group(group) {
                mode &= !libc::S_ISGID;
            }
            changes.mode = Some(mode);
        }
        // A chown of anything but a directory revokes setuid, and setgid where it means
        // something (group execute), whoever makes it (knfsd's `nfsd_sanitize_attrs`); a
        // change of size by anyone but root does too (`should_remove_suid`; a size set to
        // what it is already changes nothing here).
        let chown = changes.uid.is_some() || changes.gid.is_some();
        let truncation = changes.size.is_some_and(|size| size != attr.size) && !caller.is_root();
        if attr.kind != FileKind::Dir && (chown || truncation) {
            let mode = changes.mode.unwrap_or(attr.mode & 0o7777);
            // A truncation by a caller outside the file's group drops setgid even
            // without group execute (`setattr_should_drop_sgid`, Linux 6.2 on).
            let in_group = chown || caller.in_group(attr.gid);
            let kept = mode & !privileges_to_drop(mode, in_group);
            if kept != attr.mode & 0o7777 || changes.mode.is_some() {
                changes.mode = Some(kept);
            }
        }
        let now = || time_of(SystemTime::now());
        let set_time = |to_now: bool| -> Result<(), nfsstat3> {
            // To now: the owner or anyone who may write; to a given time: the owner.
            let allowed = owner || (to_now && self.may(attr, caller, MAY_WRITE));
            if allowed {
                Ok(())
            } else if to_now {
                Err(nfsstat3::NFS3ERR_ACCES)
            } else {
                Err(nfsstat3::NFS3ERR_PERM)
            }
        };
        match sattr.atime {
            set_atime::DONT_CHANGE => {}
            set_atime::SET_TO_SERVER_TIME => {
                set_time(true)?;
                changes.atime = Some(now());
            }
            set_atime::SET_TO_CLIENT_TIME(t) => {
                set_time(false)?;
                changes.atime = Some(time_from(t));
            }
        }
        match sattr.mtime {
            set_mtime::DONT_CHANGE => {}
            set_mtime::SET_TO_SERVER_TIME => {
                set_time(true)?;
                changes.mtime = Some(now());
            }
            set_mtime::SET_TO_CLIENT_TIME(t) => {
                set_time(false)?;
                changes.mtime = Some(time_from(t));
            }
        }
        Ok(changes)
    }

    /// The directory `dir` and what `name` in it names, for a LOOKUP (`.` and `..`
    /// included).
    fn lookup_in(&self, dir: &Stat, name: &[u8], caller: &Caller) -> Result<Stat, nfsstat3> {
        if dir.kind != FileKind::Dir {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        if !self.may(dir, caller, MAY_EXEC) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        check_name(name)?;
        let found = match name {
            b"." => self.engine().getattr(dir.ino),
            b".." => self
                .engine()
                .parent(dir.ino)
                .and_then(|p| self.engine().getattr(p)),
            name => self.engine().lookup(dir.ino, name),
        };
        found.map_err(|e| status(&e))
    }

    fn lookup(&self, args: LOOKUP3args, request: &Request) -> LOOKUP3res {
        let dir = match self.stat_of(&args.what.dir) {
            Ok(dir) => dir,
            Err(s) => {
                return Nfs3Result::Err((
                    s,
                    LOOKUP3resfail {
                        dir_attributes: Nfs3Option::None,
                    },
                ))
            }
        };
        match self.lookup_in(&dir, &args.what.name.0, &request.caller) {
            Ok(found) => Nfs3Result::Ok(LOOKUP3resok {
                object: handle::encode(self.id, found.ino),
                obj_attributes: Nfs3Option::Some(self.fattr(&found)),
                dir_attributes: Nfs3Option::Some(self.fattr(&dir)),
            }),
            Err(s) => Nfs3Result::Err((
                s,
                LOOKUP3resfail {
                    dir_attributes: Nfs3Option::Some(self.fattr(&dir)),
                },
            )),
        }
    }

    fn access(&self, args: ACCESS3args, request: &Request) -> ACCESS3res {
        let attr = match self.stat_of(&args.object) {
            Ok(attr) => attr,
            Err(s) => {
                return Nfs3Result::Err((
                    s,
                    ACCESS3resfail {
                        obj_attributes: Nfs3Option::None,
                    },
                ))
            }
        };
        let caller = &request.caller;
        let may = |want| self.may(&attr, caller, want);
        let mut granted = 0;
        let dir = attr.kind == FileKind::Dir;
        for (bit, want) in [
            (ACCESS3_READ, MAY_READ),
            (ACCESS3_LOOKUP, MAY_EXEC),
            (ACCESS3_MODIFY, MAY_WRITE),
            (ACCESS3_EXTEND, MAY_WRITE),
            (ACCESS3_DELETE, MAY_WRITE),
            (ACCESS3_EXECUTE, MAY_EXEC),
        ] {
            let applies = match bit {
                ACCESS3_LOOKUP | ACCESS3_DELETE => dir,
                ACCESS3_EXECUTE => !dir,
                _ => true,
            };
            if args.access & bit != 0 && applies && may(want) {
                granted |= bit;
            }
        }
        Nfs3Result::Ok(ACCESS3resok {
            obj_attributes: Nfs3Option::Some(self.fattr(&attr)),
            access: granted,
        })
    }

    fn readlink(&self, args: READLINK3args) -> READLINK3res<'static> {
        let fail = |s, attr| {
            Nfs3Result::Err((
                s,
                READLINK3resfail {
                    symlink_attributes: attr,
                },
            ))
        };
        let attr = match self.stat_of(&args.symlink) {
            Ok(attr) => attr,
            Err(s) => return fail(s, Nfs3Option::None),
        };
        match self.engine().readlink(attr.ino) {
            Ok(target) => Nfs3Result::Ok(READLINK3resok {
                symlink_attributes: Nfs3Option::Some(self.fattr(&attr)),
                data: nfspath3(Opaque::owned(target)),
            }),
            Err(e) => fail(status(&e), Nfs3Option::Some(self.fattr(&attr))),
        }
    }

    fn read(&self, args: READ3args, request: &Request) -> READ3res<'static> {
        let fail = |s, attr| {
            Nfs3Result::Err((
                s,
                READ3resfail {
                    file_attributes: attr,
                },
            ))
        };
        let attr = match self.stat_of(&args.file) {
            Ok(attr) => attr,
            Err(s) => return fail(s, Nfs3Option::None),
        };
        let post = Nfs3Option::Some(self.fattr(&attr));
        match attr.kind {
            FileKind::File => {}
            FileKind::Dir => return fail(nfsstat3::NFS3ERR_ISDIR, post),
            _ => return fail(nfsstat3::NFS3ERR_INVAL, post),
        }
        let caller = &request.caller;
        // knfsd's owner override: the owner reads what it may have opened before a chmod.
        if caller.uid != attr.uid && !self.may(&attr, caller, MAY_READ) {
            return fail(nfsstat3::NFS3ERR_ACCES, post);
        }
        let count = (args.count as usize).min(WRITE_SIZE_BYTES_MAX);
        match self.engine().read(attr.ino, args.offset, count) {
            Ok(data) => {
                let attr = self.engine().getattr(attr.ino).unwrap_or(attr);
                let eof = args.offset.saturating_add(data.len() as u64) >= attr.size;
                Nfs3Result::Ok(READ3resok {
                    file_attributes: Nfs3Option::Some(self.fattr(&attr)),
                    count: data.len() as u32,
                    eof,
                    data: Opaque::owned(data),
                })
            }
            Err(e) => fail(status(&e), post),
        }
    }

    fn write(&self, args: WRITE3args, request: &Request) -> WRITE3res {
        let fail = |s, wcc| Nfs3Result::Err((s, WRITE3resfail { file_wcc: wcc }));
        let attr = match self.stat_of(&args.file) {
            Ok(attr) => attr,
            Err(s) => return fail(s, wcc_data::default()),
        };
        match attr.kind {
            FileKind::File => {}
            FileKind::Dir => return fail(nfsstat3::NFS3ERR_ISDIR, self.wcc(&attr)),
            _ => return fail(nfsstat3::NFS3ERR_INVAL, self.wcc(&attr)),
        }
        if args.count as usize != args.data.len() {
            return fail(nfsstat3::NFS3ERR_INVAL, self.wcc(&attr));
        }
        let caller = &request.caller;
        if caller.uid != attr.uid && !self.may(&attr, caller, MAY_WRITE) {
            return fail(nfsstat3::NFS3ERR_ACCES, self.wcc(&attr));
        }
        // A write by anyone but root revokes setuid and setgid first (the kernel's
        // `file_remove_privs`). Setting the same mode again is the same change: no key.
        let drop = privileges_to_drop(attr.mode, caller.in_group(attr.gid));
        if drop != 0 && !caller.is_root() {
            let op = FileOp::SetAttr {
                ino: attr.ino,
                changes: SetAttrChanges {
                    mode: Some(attr.mode & 0o7777 & !drop),
                    ..SetAttrChanges::default()
                },
            };
            if let Err(s) = self.change_under(op, None, request) {
                return fail(s, self.wcc(&attr));
            }
        }
        let stable = self.config.sync
            || args.stable != stable_how::UNSTABLE
            || self.volume.changes_are_durable();
        let durability = if stable {
            Durability::Sync
        } else {
            Durability::Async
        };
        // A write repeated is the same write: it needs no request key.
        match self
            .volume
            .write(attr.ino, args.offset, &args.data, durability)
        {
            Ok(written) => Nfs3Result::Ok(WRITE3resok {
                file_wcc: self.wcc(&attr),
                count: written as u32,
                committed: if stable {
                    stable_how::FILE_SYNC
                } else {
                    stable_how::UNSTABLE
                },
                verf: writeverf3(self.verifier),
            }),
            Err(failure) => fail(self.failed(failure, request), self.wcc(&attr)),
        }
    }

    fn commit(&self, args: COMMIT3args, request: &Request) -> COMMIT3res {
        let fail = |s, wcc| Nfs3Result::Err((s, COMMIT3resfail { file_wcc: wcc }));
        let attr = match self.stat_of(&args.file) {
            Ok(attr) => attr,
            Err(s) => return fail(s, wcc_data::default()),
        };
        match self.volume.sync() {
            Ok(()) => Nfs3Result::Ok(COMMIT3resok {
                file_wcc: self.wcc(&attr),
                verf: writeverf3(self.verifier),
            }),
            Err(failure) => fail(self.failed(failure, request), self.wcc(&attr)),
        }
    }

    /// A new inode's owner: the caller (the engine gives it the directory's group when
    /// that is setgid).
    /// In a setgid directory the new inode takes the directory's group; a caller outside
    /// that group gets no setgid file (`inode_init_owner`: the bit is cleared for a
    /// non-directory).
    fn new_attrs(&self, dir: &Stat, caller: &Caller, mode: u32, is_dir: bool) -> NewAttrs {
        let mut mode = mode & 0o7777;
        if !is_dir
            && dir.mode & libc::S_ISGID != 0
            && !caller.is_root()
            && !caller.in_group(dir.gid)
        {
            mode &= !libc::S_ISGID;
        }
        NewAttrs {
            mode,
            uid: caller.uid,
            gid: caller.gid,
            // The client applied its umask to the mode it sent.
            umask: 0,
        }
    }

    /// Checks a directory and a new name in it for a create of any kind: the directory
    /// before, or the status and what to report of it (the reply's, at once).
    #[allow(clippy::result_large_err)]
    fn prepare_create(
        &self,
        dir: &nfs_fh3,
        name: &[u8],
        caller: &Caller,
    ) -> Result<Stat, (nfsstat3, wcc_data)> {
        let dir = self.stat_of(dir).map_err(|s| (s, wcc_data::default()))?;
        self.may_change_dir(&dir, caller)
            .and_then(|()| check_name(name))
            .and(match name {
                b"." | b".." => Err(nfsstat3::NFS3ERR_EXIST),
                _ => Ok(()),
            })
            .map_err(|s| (s, self.wcc(&dir)))?;
        Ok(dir)
    }

    /// The sattr3 fields a create cannot set in its own transaction, applied after it
    /// (owner, group, size, times); the mode went with the create.
    fn finish_create(
        &self,
        created: &Stat,
        sattr: &sattr3,
        caller: &Caller,
        request: &Request,
    ) -> Result<(), nfsstat3> {
        let rest = sattr3 {
            mode: Nfs3Option::None,
            ..sattr.clone()
        };
        let changes = self.changes(created, &rest, caller)?;
        if changes == SetAttrChanges::default() {
            return Ok(());
        }
        let op = FileOp::SetAttr {
            ino: created.ino,
            changes,
        };
        self.change_under(op, Some(derived_key(request.key)), request)
            .map(|_| ())
    }

    fn created(&self, ino: Ino, dir: &Stat) -> (post_op_fh3, post_op_attr, wcc_data) {
        (
            Nfs3Option::Some(handle::encode(self.id, ino)),
            self.post(ino),
            self.wcc(dir),
        )
    }

    fn create(&self, args: CREATE3args, request: &Request) -> CREATE3res {
        let fail = |(s, wcc)| Nfs3Result::Err((s, CREATE3resfail { dir_wcc: wcc }));
        let caller = &request.caller;
        let name: &[u8] = &args.where_.name.0;
        let dir = match self.prepare_create(&args.where_.dir, name, caller) {
            Ok(dir) => dir,
            Err(e) => return fail(e),
        };
        let sattr = match &args.how {
            createhow3::UNCHECKED(sattr) | createhow3::GUARDED(sattr) => Some(sattr),
            createhow3::EXCLUSIVE(_) => None,
        };
        let result = if let Some(replayed) = self.replayed_create(request, sattr) {
            replayed
        } else {
            match &args.how {
                createhow3::UNCHECKED(sattr) | createhow3::GUARDED(sattr) => {
                    let guarded = matches!(args.how, createhow3::GUARDED(_));
                    let mode = match sattr.mode {
                        Nfs3Option::Some(mode) => mode,
                        Nfs3Option::None => 0o644,
                    };
                    let op = FileOp::Create {
                        parent: dir.ino,
                        name: name.to_vec(),
                        attrs: self.new_attrs(&dir, caller, mode, false),
                    };
                    match self.make(op, Some(request.key), request) {
                        Ok(created) => self
                            .finish_create(&created, sattr, caller, request)
                            .map(|()| created.ino),
                        // UNCHECKED over an existing file: the attributes (a size, usually)
                        // are set on it, as RFC 1813 says.
                        Err(nfsstat3::NFS3ERR_EXIST) if !guarded => {
                            match self.engine().lookup(dir.ino, name) {
                                // Only the size, as knfsd: the mode and owner asked were for
                                // a new file. Under a key of its own (the create's records
                                // its refusal), so a retransmission does the same again.
                                Ok(existing) if existing.kind == FileKind::File => {
                                    let size_only = sattr3 {
                                        size: sattr.size,
                                        ..sattr3::default()
                                    };
                                    let changes = self.changes(&existing, &size_only, caller);
                                    changes.and_then(|changes| {
                                        let op = FileOp::SetAttr {
                                            ino: existing.ino,
                                            changes,
                                        };
                                        let key = Some(derived_key(request.key));
                                        self.change_under(op, key, request).map(|_| existing.ino)
                                    })
                                }
                                Ok(_) => Err(nfsstat3::NFS3ERR_EXIST),
                                Err(e) => Err(status(&e)),
                            }
                        }
                        Err(s) => Err(s),
                    }
                }
                createhow3::EXCLUSIVE(verf) => self.create_exclusive(&dir, name, verf, request),
            }
        };
        match result {
            Ok(ino) => {
                let (obj, obj_attributes, dir_wcc) = self.created(ino, &dir);
                Nfs3Result::Ok(CREATE3resok {
                    obj,
                    obj_attributes,
                    dir_wcc,
                })
            }
            Err(s) => fail((s, self.wcc(&dir))),
        }
    }

    /// An exclusive create: the verifier is kept in the new file's access and
    /// modification times (seconds), as knfsd keeps it, so a retry of the create (even
    /// under another xid, after this server restarted) finds its own file and succeeds;
    /// the client then sets the real attributes with a SETATTR.
    fn create_exclusive(
        &self,
        dir: &Stat,
        name: &[u8],
        verf: &createverf3,
        request: &Request,
    ) -> Result<Ino, nfsstat3> {
        let caller = &request.caller;
        let atime = Time {
            secs: i64::from(u32::from_be_bytes(verf.0[..4].try_into().expect("4"))),
            nanos: 0,
        };
        let mtime = Time {
            secs: i64::from(u32::from_be_bytes(verf.0[4..].try_into().expect("4"))),
            nanos: 0,
        };
        let matches = |attr: &Stat| attr.atime == atime && attr.mtime == mtime;
        let op = FileOp::Create {
            parent: dir.ino,
            name: name.to_vec(),
            attrs: self.new_attrs(dir, caller, 0o600, false),
        };
        let created = match self.make(op, Some(request.key), request) {
            Ok(created) => created,
            Err(nfsstat3::NFS3ERR_EXIST) => {
                return match self.engine().lookup(dir.ino, name) {
                    Ok(existing) if existing.kind == FileKind::File && matches(&existing) => {
                        Ok(existing.ino)
                    }
                    _ => Err(nfsstat3::NFS3ERR_EXIST),
                };
            }
            Err(s) => return Err(s),
        };
        if matches(&created) {
            return Ok(created.ino);
        }
        let changes = SetAttrChanges {
            atime: Some(atime),
            mtime: Some(mtime),
            ..SetAttrChanges::default()
        };
        // Setting the same times again is the same change: no key.
        let op = FileOp::SetAttr {
            ino: created.ino,
            changes,
        };
        self.change_under(op, None, request).map(|_| created.ino)
    }

    fn mkdir(&self, args: MKDIR3args, request: &Request) -> MKDIR3res {
        let fail = |(s, wcc)| Nfs3Result::Err((s, MKDIR3resfail { dir_wcc: wcc }));
        let caller = &request.caller;
        let name: &[u8] = &args.where_.name.0;
        let dir = match self.prepare_create(&args.where_.dir, name, caller) {
            Ok(dir) => dir,
            Err(e) => return fail(e),
        };
        let mode = match args.attributes.mode {
            Nfs3Option::Some(mode) => mode,
            Nfs3Option::None => 0o755,
        };
        let replayed = self.replayed_create(request, Some(&args.attributes));
        let made = replayed.unwrap_or_else(|| {
            let op = FileOp::Mkdir {
                parent: dir.ino,
                name: name.to_vec(),
                attrs: self.new_attrs(&dir, caller, mode, true),
            };
            self.make(op, Some(request.key), request).and_then(|made| {
                self.finish_create(&made, &args.attributes, caller, request)
                    .map(|()| made.ino)
            })
        });
        match made {
            Ok(ino) => {
                let (obj, obj_attributes, dir_wcc) = self.created(ino, &dir);
                Nfs3Result::Ok(MKDIR3resok {
                    obj,
                    obj_attributes,
                    dir_wcc,
                })
            }
            Err(s) => fail((s, self.wcc(&dir))),
        }
    }

    fn symlink(&self, args: SYMLINK3args, request: &Request) -> SYMLINK3res {
        let fail = |(s, wcc)| Nfs3Result::Err((s, SYMLINK3resfail { dir_wcc: wcc }));
        let caller = &request.caller;
        let name: &[u8] = &args.where_.name.0;
        let dir = match self.prepare_create(&args.where_.dir, name, caller) {
            Ok(dir) => dir,
            Err(e) => return fail(e),
        };
        let made = self.replayed_create(request, None).unwrap_or_else(|| {
            let op = FileOp::Symlink {
                parent: dir.ino,
                name: name.to_vec(),
                target: args.symlink.symlink_data.0.to_vec(),
                attrs: self.new_attrs(&dir, caller, 0o777, false),
            };
            self.make(op, Some(request.key), request)
                .map(|made| made.ino)
        });
        match made {
            Ok(ino) => {
                let (obj, obj_attributes, dir_wcc) = self.created(ino, &dir);
                Nfs3Result::Ok(SYMLINK3resok {
                    obj,
                    obj_attributes,
                    dir_wcc,
                })
            }
            Err(s) => fail((s, self.wcc(&dir))),
        }
    }

    fn mknod(&self, args: MKNOD3args, request: &Request) -> MKNOD3res {
        let fail = |(s, wcc)| Nfs3Result::Err((s, MKNOD3resfail { dir_wcc: wcc }));
        let caller = &request.caller;
        let name: &[u8] = &args.where_.name.0;
        let dir = match self.prepare_create(&args.where_.dir, name, caller) {
            Ok(dir) => dir,
            Err(e) => return fail(e),
        };
        let device = |spec: &specdata3| libc::makedev(spec.specdata1, spec.specdata2);
        let (kind, sattr) = match &args.what {
            mknoddata3::NF3CHR(d) => (
                FileKind::CharDevice {
                    rdev: device(&d.spec),
                },
                &d.dev_attributes,
            ),
            mknoddata3::NF3BLK(d) => (
                FileKind::BlockDevice {
                    rdev: device(&d.spec),
                },
                &d.dev_attributes,
            ),
            mknoddata3::NF3SOCK(sattr) => (FileKind::Socket, sattr),
            mknoddata3::NF3FIFO(sattr) => (FileKind::Fifo, sattr),
            mknoddata3::default => return fail((nfsstat3::NFS3ERR_BADTYPE, self.wcc(&dir))),
        };
        // Devices are root's to make (CAP_MKNOD), as on a local file system.
        if matches!(
            kind,
            FileKind::CharDevice { .. } | FileKind::BlockDevice { .. }
        ) && !caller.is_root()
        {
            return fail((nfsstat3::NFS3ERR_PERM, self.wcc(&dir)));
        }
        let mode = match sattr.mode {
            Nfs3Option::Some(mode) => mode,
            Nfs3Option::None => 0o644,
        };
        let made = self
            .replayed_create(request, Some(sattr))
            .unwrap_or_else(|| {
                let op = FileOp::Mknod {
                    parent: dir.ino,
                    name: name.to_vec(),
                    kind,
                    attrs: self.new_attrs(&dir, caller, mode, false),
                };
                self.make(op, Some(request.key), request).and_then(|made| {
                    self.finish_create(&made, sattr, caller, request)
                        .map(|()| made.ino)
                })
            });
        match made {
            Ok(ino) => {
                let (obj, obj_attributes, dir_wcc) = self.created(ino, &dir);
                Nfs3Result::Ok(MKNOD3resok {
                    obj,
                    obj_attributes,
                    dir_wcc,
                })
            }
            Err(s) => fail((s, self.wcc(&dir))),
        }
    }

    fn remove(&self, args: REMOVE3args, request: &Request, rmdir: bool) -> REMOVE3res {
        let fail = |s, wcc| Nfs3Result::Err((s, REMOVE3resfail { dir_wcc: wcc }));
        let caller = &request.caller;
        let name: &[u8] = &args.object.name.0;
        let dir = match self.stat_of(&args.object.dir) {
            Ok(dir) => dir,
            Err(s) => return fail(s, wcc_data::default()),
        };
        let checked = self
            .may_change_dir(&dir, caller)
            .and_then(|()| check_name(name))
            .and(match name {
                b"." => Err(nfsstat3::NFS3ERR_INVAL),
                b".." if rmdir => Err(nfsstat3::NFS3ERR_EXIST),
                b".." => Err(nfsstat3::NFS3ERR_INVAL),
                _ => Ok(()),
            })
            .and_then(|()| {
                if self.done_before(request) {
                    Ok(())
                } else {
                    self.may_unlink(&dir, name, caller)
                }
            });
        if let Err(s) = checked {
            return fail(s, self.wcc(&dir));
        }
        let (parent, name) = (dir.ino, name.to_vec());
        let op = if rmdir {
            FileOp::Rmdir { parent, name }
        } else {
            FileOp::Unlink { parent, name }
        };
        match self.change(op, request) {
            Ok(_) => Nfs3Result::Ok(REMOVE3resok {
                dir_wcc: self.wcc(&dir),
            }),
            Err(s) => fail(s, self.wcc(&dir)),
        }
    }

    fn rename(&self, args: RENAME3args, request: &Request) -> RENAME3res {
        let caller = &request.caller;
        let from_name: &[u8] = &args.from.name.0;
        let to_name: &[u8] = &args.to.name.0;
        let dirs = self
            .stat_of(&args.from.dir)
            .and_then(|from| self.stat_of(&args.to.dir).map(|to| (from, to)));
        let (from, to) = match dirs {
            Ok(dirs) => dirs,
            Err(s) => {
                return Nfs3Result::Err((
                    s,
                    RENAME3resfail {
                        fromdir_wcc: wcc_data::default(),
                        todir_wcc: wcc_data::default(),
                    },
                ))
            }
        };
        let checked = self
            .may_change_dir(&from, caller)
            .and_then(|()| self.may_change_dir(&to, caller))
            .and_then(|()| check_name(from_name))
            .and_then(|()| check_name(to_name))
            .and_then(|()| {
                if [from_name, to_name]
                    .iter()
                    .any(|n| matches!(*n, b"." | b".."))
                {
                    Err(nfsstat3::NFS3ERR_INVAL)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| {
                if self.done_before(request) {
                    return Ok(());
                }
                self.may_unlink(&from, from_name, caller)?;
                self.may_unlink(&to, to_name, caller)?;
                // A directory moved to another parent has its `..` rewritten: it must be
                // writable too (as Linux's rename asks).
                if from.ino != to.ino {
                    if let Ok(moved) = self.engine().lookup(from.ino, from_name) {
                        if moved.kind == FileKind::Dir && !self.may(&moved, caller, MAY_WRITE) {
                            return Err(nfsstat3::NFS3ERR_ACCES);
                        }
                    }
                }
                Ok(())
            });
        let result = checked.and_then(|()| {
            let op = FileOp::Rename {
                from_parent: from.ino,
                from_name: from_name.to_vec(),
                to_parent: to.ino,
                to_name: to_name.to_vec(),
                flags: RenameFlags::default(),
            };
            self.change(op, request).map(|_| ())
        });
        let fromdir_wcc = self.wcc(&from);
        let todir_wcc = self.wcc(&to);
        match result {
            Ok(()) => Nfs3Result::Ok(RENAME3resok {
                fromdir_wcc,
                todir_wcc,
            }),
            Err(s) => Nfs3Result::Err((
                s,
                RENAME3resfail {
                    fromdir_wcc,
                    todir_wcc,
                },
            )),
        }
    }

    fn link(&self, args: LINK3args, request: &Request) -> LINK3res {
        let caller = &request.caller;
        let name: &[u8] = &args.link.name.0;
        let fail = |s, file, wcc| {
            Nfs3Result::Err((
                s,
                LINK3resfail {
                    file_attributes: file,
                    linkdir_wcc: wcc,
                },
            ))
        };
        let file = match self.stat_of(&args.file) {
            Ok(file) => file,
            Err(s) => return fail(s, Nfs3Option::None, wcc_data::default()),
        };
        let dir = match self.prepare_create(&args.link.dir, name, caller) {
            Ok(dir) => dir,
            Err((s, wcc)) => return fail(s, self.post(file.ino), wcc),
        };
        if file.kind == FileKind::Dir {
            return fail(nfsstat3::NFS3ERR_ISDIR, self.post(file.ino), self.wcc(&dir));
        }
        let op = FileOp::Link {
            ino: file.ino,
            parent: dir.ino,
            name: name.to_vec(),
        };
        match self.change(op, request) {
            Ok(_) => Nfs3Result::Ok(LINK3resok {
                file_attributes: self.post(file.ino),
                linkdir_wcc: self.wcc(&dir),
            }),
            Err(s) => fail(s, self.post(file.ino), self.wcc(&dir)),
        }
    }

    /// Up to `budget` bytes of entries of directory `dir` after `cookie`, each costing
    /// `cost(name)` bytes; and whether the directory ended.
    fn entries(
        &self,
        dir: &Stat,
        cookie: u64,
        verf: [u8; 8],
        budget: usize,
        cost: impl Fn(&[u8]) -> usize,
    ) -> Result<(Vec<smlog::serve::StreamEntry>, bool), nfsstat3> {
        if cookie != 0 && verf != self.cookie_verifier() {
            return Err(nfsstat3::NFS3ERR_BAD_COOKIE);
        }
        // A cookie is a position in the volume's listing order, good on any stream of the
        // directory (on any node, after any restart): whatever the cookie, a directory not
        // read lately gets a new stream.
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let result = Self::read_entries(
            &self.engine(),
            streams.stream(dir.ino),
            cookie,
            budget,
            cost,
        );
        streams.trim(dir.ino);
        result
    }

    /// The cookie verifier: the volume's id, so a cookie stays good across restarts and
    /// nodes (cookies are positions in the volume's listing order, not per server).
    fn cookie_verifier(&self) -> [u8; 8] {
        self.id.to_be_bytes()
    }

    /// Up to `budget` bytes of `stream`'s entries after `cookie`.
    fn read_entries(
        engine: &Engine<V::Device>,
        stream: &mut DirStream,
        cookie: u64,
        budget: usize,
        cost: impl Fn(&[u8]) -> usize,
    ) -> Result<(Vec<smlog::serve::StreamEntry>, bool), nfsstat3> {
        let mut out = Vec::new();
        let mut spent = 0;
        let mut offset = cookie;
        loop {
            let batch = stream
                .read(engine, offset, READDIR_BATCH)
                .map_err(|e| match e {
                    FsError::Invalid(_) => nfsstat3::NFS3ERR_BAD_COOKIE,
                    e => status(&e),
                })?;
            if batch.is_empty() {
                return Ok((out, true));
            }
            for entry in batch {
                let size = cost(&entry.name);
                if spent + size > budget {
                    if out.is_empty() {
                        return Err(nfsstat3::NFS3ERR_TOOSMALL);
                    }
                    return Ok((out, false));
                }
                spent += size;
                offset = entry.offset;
                out.push(entry);
            }
        }
    }

    fn readdir(&self, args: READDIR3args, request: &Request) -> READDIR3res<'static> {
        let fail = |s, attr| {
            Nfs3Result::Err((
                s,
                READDIR3resfail {
                    dir_attributes: attr,
                },
            ))
        };
        let dir = match self.readable_dir(&args.dir, &request.caller) {
            Ok(dir) => dir,
            Err((s, attr)) => return fail(s, attr),
        };
        // Clamped as knfsd clamps it: a reply is at most what a READ may carry.
        let budget = (args.count as usize)
            .min(WRITE_SIZE_BYTES_MAX)
            .saturating_sub(READDIR_OVERHEAD_BYTES);
        let cost = |name: &[u8]| 4 + 8 + 4 + name.len().next_multiple_of(4) + 8;
        match self.entries(&dir, args.cookie, args.cookieverf.0, budget, cost) {
            Ok((entries, eof)) => Nfs3Result::Ok(READDIR3resok {
                dir_attributes: Nfs3Option::Some(self.fattr(&dir)),
                cookieverf: cookieverf3(self.cookie_verifier()),
                reply: dirlist3 {
                    entries: List(
                        entries
                            .into_iter()
                            .map(|e| entry3 {
                                fileid: e.ino.0,
                                name: filename3(Opaque::owned(e.name)),
                                cookie: e.offset,
                            })
                            .collect(),
                    ),
                    eof,
                },
            }),
            Err(s) => fail(s, Nfs3Option::Some(self.fattr(&dir))),
        }
    }

    fn readdirplus(&self, args: READDIRPLUS3args, request: &Request) -> READDIRPLUS3res<'static> {
        let fail = |s, attr| {
            Nfs3Result::Err((
                s,
                READDIRPLUS3resfail {
                    dir_attributes: attr,
                },
            ))
        };
        let dir = match self.readable_dir(&args.dir, &request.caller) {
            Ok(dir) => dir,
            Err((s, attr)) => return fail(s, attr),
        };
        let budget = (args.maxcount as usize)
            .min(WRITE_SIZE_BYTES_MAX)
            .saturating_sub(READDIR_OVERHEAD_BYTES);
        // Handles and attributes of the entries only for a caller who may search the
        // directory (as knfsd): read permission alone lists names.
        let searchable = self.may(&dir, &request.caller, MAY_EXEC);
        let cost =
            |name: &[u8]| 4 + 8 + 4 + name.len().next_multiple_of(4) + 8 + 4 + 84 + 4 + 4 + 28;
        match self.entries(&dir, args.cookie, args.cookieverf.0, budget, cost) {
            Ok((entries, eof)) => {
                let entries = entries
                    .into_iter()
                    .map(|e| {
                        let attr = self.engine().getattr(e.ino).ok().filter(|_| searchable);
                        entryplus3 {
                            fileid: e.ino.0,
                            name: filename3(Opaque::owned(e.name)),
                            cookie: e.offset,
                            name_attributes: match &attr {
                                Some(attr) => Nfs3Option::Some(self.fattr(attr)),
                                None => Nfs3Option::None,
                            },
                            name_handle: match attr {
                                Some(_) => Nfs3Option::Some(handle::encode(self.id, e.ino)),
                                None => Nfs3Option::None,
                            },
                        }
                    })
                    .collect();
                Nfs3Result::Ok(READDIRPLUS3resok {
                    dir_attributes: Nfs3Option::Some(self.fattr(&dir)),
                    cookieverf: cookieverf3(self.cookie_verifier()),
                    reply: dirlistplus3 {
                        entries: List(entries),
                        eof,
                    },
                })
            }
            Err(s) => fail(s, Nfs3Option::Some(self.fattr(&dir))),
        }
    }

    fn readable_dir(
        &self,
        fh: &nfs_fh3,
        caller: &Caller,
    ) -> Result<Stat, (nfsstat3, post_op_attr)> {
        let dir = self.stat_of(fh).map_err(|s| (s, Nfs3Option::None))?;
        if dir.kind != FileKind::Dir {
            return Err((nfsstat3::NFS3ERR_NOTDIR, Nfs3Option::Some(self.fattr(&dir))));
        }
        if !self.may(&dir, caller, MAY_READ) {
            return Err((nfsstat3::NFS3ERR_ACCES, Nfs3Option::Some(self.fattr(&dir))));
        }
        Ok(dir)
    }

    fn fsstat(&self, args: FSSTAT3args) -> FSSTAT3res {
        let fail = |s| {
            Nfs3Result::Err((
                s,
                FSSTAT3resfail {
                    obj_attributes: Nfs3Option::None,
                },
            ))
        };
        let attr = match self.stat_of(&args.fsroot) {
            Ok(attr) => attr,
            Err(s) => return fail(s),
        };
        match self.engine().statfs() {
            Ok(fs) => {
                let files_free = u64::from(u32::MAX).saturating_sub(fs.inodes);
                Nfs3Result::Ok(FSSTAT3resok {
                    obj_attributes: Nfs3Option::Some(self.fattr(&attr)),
                    tbytes: fs.blocks_total * fs.block_size_bytes,
                    fbytes: fs.blocks_free * fs.block_size_bytes,
                    abytes: fs.blocks_free * fs.block_size_bytes,
                    tfiles: fs.inodes + files_free,
                    ffiles: files_free,
                    afiles: files_free,
                    invarsec: 0,
                })
            }
            Err(e) => fail(status(&e)),
        }
    }

    fn fsinfo(&self, args: FSINFO3args) -> FSINFO3res {
        let attr = match self.stat_of(&args.fsroot) {
            Ok(attr) => attr,
            Err(s) => {
                return Nfs3Result::Err((
                    s,
                    FSINFO3resfail {
                        obj_attributes: Nfs3Option::None,
                    },
                ))
            }
        };
        let max = WRITE_SIZE_BYTES_MAX as u32;
        Nfs3Result::Ok(FSINFO3resok {
            obj_attributes: Nfs3Option::Some(self.fattr(&attr)),
            rtmax: max,
            rtpref: max,
            rtmult: 4096,
            wtmax: max,
            wtpref: max,
            wtmult: 4096,
            dtpref: 64 * 1024,
            maxfilesize: FILE_SIZE_BYTES_MAX,
            time_delta: nfstime3 {
                seconds: 0,
                nseconds: 1,
            },
            properties: FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME,
        })
    }

    fn pathconf(&self, args: PATHCONF3args) -> PATHCONF3res {
        match self.stat_of(&args.object) {
            Ok(attr) => Nfs3Result::Ok(PATHCONF3resok {
                obj_attributes: Nfs3Option::Some(self.fattr(&attr)),
                linkmax: LINK_COUNT_MAX,
                name_max: NAME_SIZE_BYTES_MAX as u32,
                no_trunc: true,
                chown_restricted: true,
                case_insensitive: false,
                case_preserving: true,
            }),
            Err(s) => Nfs3Result::Err((
                s,
                PATHCONF3resfail {
                    obj_attributes: Nfs3Option::None,
                },
            )),
        }
    }
}

/// Who asks, and under which request key a change it asks for runs.
#[derive(Debug)]
struct Request {
    caller: Caller,
    key: RequestKey,
    /// The call's outcome is unknown: it gets no reply.
    unanswered: Cell<bool>,
}

/// The key of the second transaction a request may run (the attributes after a create,
/// the size of an existing file an unchecked create met): the request's, with its client
/// id changed, so each has an outcome of its own.
fn derived_key(key: RequestKey) -> RequestKey {
    RequestKey {
        client_id: key.client_id ^ 0x5e7a_77e5_0000_0001,
        ..key
    }
}

/// The argument layout of NFSv3 procedure `proc`.
fn nfs_shape(proc: u32) -> Option<Shape> {
    Some(match proc {
        0 => Shape::Void,
        1 | 5 | 18 | 19 | 20 => Shape::Handle,
        2 => Shape::SetAttr,
        3 | 12 | 13 => Shape::DirOp,
        4 => Shape::Access,
        6 | 21 => Shape::HandleOffsetCount,
        7 => Shape::Write,
        8 => Shape::Create,
        9 => Shape::Mkdir,
        10 => Shape::Symlink,
        11 => Shape::Mknod,
        14 => Shape::Rename,
        15 => Shape::Link,
        16 => Shape::Readdir,
        17 => Shape::Readdirplus,
        _ => return None,
    })
}

/// The argument layout of MOUNT v3 procedure `proc`.
fn mount_shape(proc: u32) -> Option<Shape> {
    Some(match proc {
        0 | 2 | 4 | 5 => Shape::Void,
        1 | 3 => Shape::DirPath,
        _ => return None,
    })
}

/// A name a client may ask for: not empty, no `/`, no NUL, at most 255 bytes.
fn check_name(name: &[u8]) -> Result<(), nfsstat3> {
    if name.len() > NAME_SIZE_BYTES_MAX {
        return Err(nfsstat3::NFS3ERR_NAMETOOLONG);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    Ok(())
}

/// The NFS status of an engine error.
pub fn status(e: &FsError) -> nfsstat3 {
    status_of(e.errno())
}

/// The NFS status of an errno.
pub fn status_of(errno: i32) -> nfsstat3 {
    match errno {
        libc::ENOENT => nfsstat3::NFS3ERR_NOENT,
        libc::EEXIST => nfsstat3::NFS3ERR_EXIST,
        libc::ENOTDIR => nfsstat3::NFS3ERR_NOTDIR,
        libc::EISDIR => nfsstat3::NFS3ERR_ISDIR,
        libc::ENOTEMPTY => nfsstat3::NFS3ERR_NOTEMPTY,
        libc::ENAMETOOLONG => nfsstat3::NFS3ERR_NAMETOOLONG,
        libc::EINVAL => nfsstat3::NFS3ERR_INVAL,
        libc::ENOSPC => nfsstat3::NFS3ERR_NOSPC,
        libc::EFBIG => nfsstat3::NFS3ERR_FBIG,
        libc::EMLINK => nfsstat3::NFS3ERR_MLINK,
        libc::EPERM => nfsstat3::NFS3ERR_PERM,
        libc::EACCES => nfsstat3::NFS3ERR_ACCES,
        libc::EXDEV => nfsstat3::NFS3ERR_XDEV,
        libc::ENXIO => nfsstat3::NFS3ERR_NXIO,
        libc::EROFS => nfsstat3::NFS3ERR_ROFS,
        libc::EOPNOTSUPP => nfsstat3::NFS3ERR_NOTSUPP,
        _ => nfsstat3::NFS3ERR_IO,
    }
}

fn nfstime(time: Time) -> nfstime3 {
    nfstime3 {
        seconds: time.secs.clamp(0, i64::from(u32::MAX)) as u32,
        nseconds: if time.secs < 0 { 0 } else { time.nanos },
    }
}

fn time_from(time: nfstime3) -> Time {
    Time {
        secs: i64::from(time.seconds),
        nanos: time.nseconds.min(999_999_999),
    }
}

/// NFS attributes of `attr` on volume `volume`.
pub fn fattr(attr: &Stat, volume: u64) -> fattr3 {
    let (type_, rdev) = match attr.kind {
        FileKind::File => (ftype3::NF3REG, 0),
        FileKind::Dir => (ftype3::NF3DIR, 0),
        FileKind::Symlink => (ftype3::NF3LNK, 0),
        FileKind::Fifo => (ftype3::NF3FIFO, 0),
        FileKind::Socket => (ftype3::NF3SOCK, 0),
        FileKind::CharDevice { rdev } => (ftype3::NF3CHR, rdev),
        FileKind::BlockDevice { rdev } => (ftype3::NF3BLK, rdev),
    };
    fattr3 {
        type_,
        mode: attr.mode & 0o7777,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        size: attr.size,
        used: st_blocks(attr) * 512,
        rdev: specdata3 {
            specdata1: libc::major(rdev),
            specdata2: libc::minor(rdev),
        },
        fsid: volume,
        fileid: attr.ino.0,
        atime: nfstime(attr.atime),
        mtime: nfstime(attr.mtime),
        ctime: nfstime(attr.ctime),
    }
}
