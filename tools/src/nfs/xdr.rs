//! ONC RPC on the wire (RFC 5531), for `smlog nfs`: record marking, the call header, the
//! reply envelope, and a check of every length in a request before it is decoded.
//!
//! The wire types are `nfs3_types`'; decoding one allocates whatever length the bytes
//! declare, so no request reaches it before [`Shape`] has walked the bytes and found every
//! opaque field and array no longer than its protocol limit and than what is left of the
//! record, and no byte left over.

use std::net::IpAddr;

use nfs3_types::rpc::{
    accept_stat_data, accepted_reply, auth_stat, msg_body, opaque_auth, rejected_reply, reply_body,
    rpc_msg,
};
use nfs3_types::xdr_codec::Pack;

/// The largest record a client may send: a 1 MiB write with its headers. A larger one
/// closes the connection before anything of it is kept.
pub const RECORD_SIZE_BYTES_MAX: usize = smlog::constants::WRITE_SIZE_BYTES_MAX + 8 * 1024;

/// RFC 5531: an authentication body is at most 400 bytes.
const AUTH_BODY_SIZE_BYTES_MAX: usize = 400;
/// RFC 5531: AUTH_SYS's machine name is at most 255 bytes and it lists at most 16 groups.
const MACHINE_NAME_SIZE_BYTES_MAX: usize = 255;
const AUTH_SYS_GROUPS_MAX: usize = 16;
/// RFC 1813: a file handle is at most 64 bytes.
const HANDLE_SIZE_BYTES_MAX: usize = 64;
/// Names longer than the engine's 255 bytes are decoded (and answered
/// NFS3ERR_NAMETOOLONG); past this they are garbage.
const NAME_SIZE_BYTES_MAX: usize = 1024;
/// A symbolic link's target, and MOUNT's path (MNTPATHLEN).
const PATH_SIZE_BYTES_MAX: usize = 4096;

/// What a request's bytes are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Garbage {
    /// Fewer bytes than the fields need.
    #[error("the record ends inside a field")]
    Short,
    /// A length past its limit or past the record's end.
    #[error("a length of {0} bytes is past its limit")]
    TooLong(usize),
    /// Bytes left after the last field.
    #[error("{0} bytes after the last field")]
    Trailing(usize),
    /// A union's discriminant or a boolean of no defined value.
    #[error("a discriminant of no defined value ({0})")]
    Discriminant(u32),
}

/// A reader of XDR fields that bounds every length.
#[derive(Debug)]
pub struct Walker<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Walker<'a> {
    /// Walks `bytes` from its start.
    pub fn new(bytes: &'a [u8]) -> Walker<'a> {
        Walker { bytes, at: 0 }
    }

    /// Where the walk is.
    pub fn position(&self) -> usize {
        self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Garbage> {
        let end = self.at.checked_add(n).ok_or(Garbage::Short)?;
        let taken = self.bytes.get(self.at..end).ok_or(Garbage::Short)?;
        self.at = end;
        Ok(taken)
    }

    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32, Garbage> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<(), Garbage> {
        self.take(8).map(|_| ())
    }

    fn bool(&mut self) -> Result<bool, Garbage> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(Garbage::Discriminant(n)),
        }
    }

    /// A variable-length opaque of at most `max` bytes (and its padding).
    pub fn opaque(&mut self, max: usize) -> Result<&'a [u8], Garbage> {
        let len = self.u32()? as usize;
        if len > max || len > self.bytes.len() - self.at {
            return Err(Garbage::TooLong(len));
        }
        let data = self.take(len)?;
        self.take((4 - len % 4) % 4)?;
        Ok(data)
    }

    /// The walk is over: no byte may be left.
    pub fn end(&self) -> Result<(), Garbage> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            n => Err(Garbage::Trailing(n)),
        }
    }

    fn handle(&mut self) -> Result<(), Garbage> {
        self.opaque(HANDLE_SIZE_BYTES_MAX).map(|_| ())
    }

    fn dirop(&mut self) -> Result<(), Garbage> {
        self.handle()?;
        self.opaque(NAME_SIZE_BYTES_MAX).map(|_| ())
    }

    fn time_how(&mut self) -> Result<(), Garbage> {
        match self.u32()? {
            0 | 1 => Ok(()),
            2 => self.u64(),
            n => Err(Garbage::Discriminant(n)),
        }
    }

    fn sattr(&mut self) -> Result<(), Garbage> {
        for _ in 0..3 {
            if self.bool()? {
                self.u32()?;
            }
        }
        if self.bool()? {
            self.u64()?;
        }
        self.time_how()?;
        self.time_how()
    }
}

/// The argument layouts of the procedures served: each walks its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// No arguments.
    Void,
    /// A file handle alone (GETATTR, READLINK, FSSTAT, FSINFO, PATHCONF).
    Handle,
    /// SETATTR3args.
    SetAttr,
    /// A directory and a name (LOOKUP, REMOVE, RMDIR).
    DirOp,
    /// ACCESS3args.
    Access,
    /// READ3args, COMMIT3args.
    HandleOffsetCount,
    /// WRITE3args.
    Write,
    /// CREATE3args.
    Create,
    /// MKDIR3args.
    Mkdir,
    /// SYMLINK3args.
    Symlink,
    /// MKNOD3args.
    Mknod,
    /// RENAME3args.
    Rename,
    /// LINK3args.
    Link,
    /// READDIR3args.
    Readdir,
    /// READDIRPLUS3args.
    Readdirplus,
    /// MOUNT's dirpath.
    DirPath,
}

impl Shape {
    /// Walks `args`: every length within its limit, no byte left over.
    pub fn check(self, args: &[u8]) -> Result<(), Garbage> {
        let mut w = Walker::new(args);
        match self {
            Shape::Void => {}
            Shape::Handle => w.handle()?,
            Shape::SetAttr => {
                w.handle()?;
                w.sattr()?;
                if w.bool()? {
                    w.u64()?;
                }
            }
            Shape::DirOp => w.dirop()?,
            Shape::Access => {
                w.handle()?;
                w.u32()?;
            }
            Shape::HandleOffsetCount => {
                w.handle()?;
                w.u64()?;
                w.u32()?;
            }
            Shape::Write => {
                w.handle()?;
                w.u64()?;
                w.u32()?;
                match w.u32()? {
                    0..=2 => {}
                    n => return Err(Garbage::Discriminant(n)),
                }
                w.opaque(smlog::constants::WRITE_SIZE_BYTES_MAX)?;
            }
            Shape::Create => {
                w.dirop()?;
                match w.u32()? {
                    0 | 1 => w.sattr()?,
                    2 => w.u64()?,
                    n => return Err(Garbage::Discriminant(n)),
                }
            }
            Shape::Mkdir => {
                w.dirop()?;
                w.sattr()?;
            }
            Shape::Symlink => {
                w.dirop()?;
                w.sattr()?;
                w.opaque(PATH_SIZE_BYTES_MAX)?;
            }
            Shape::Mknod => {
                w.dirop()?;
                match w.u32()? {
                    // NF3CHR, NF3BLK: attributes and the device numbers.
                    3 | 4 => {
                        w.sattr()?;
                        w.u64()?;
                    }
                    // NF3SOCK, NF3FIFO: attributes.
                    6 | 7 => w.sattr()?,
                    // Other types carry nothing (they are answered NFS3ERR_BADTYPE).
                    1 | 2 | 5 => {}
                    n => return Err(Garbage::Discriminant(n)),
                }
            }
            Shape::Rename => {
                w.dirop()?;
                w.dirop()?;
            }
            Shape::Link => {
                w.handle()?;
                w.dirop()?;
            }
            Shape::Readdir => {
                w.handle()?;
                w.u64()?;
                w.u64()?;
                w.u32()?;
            }
            Shape::Readdirplus => {
                w.handle()?;
                w.u64()?;
                w.u64()?;
                w.u32()?;
                w.u32()?;
            }
            Shape::DirPath => {
                w.opaque(PATH_SIZE_BYTES_MAX)?;
            }
        }
        w.end()
    }
}

/// The AUTH_SYS credential (RFC 5531 appendix A).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSys {
    /// The client's name for itself.
    pub machine: Vec<u8>,
    /// User.
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups (at most 16).
    pub gids: Vec<u32>,
}

/// The credential of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// AUTH_NONE.
    None,
    /// AUTH_SYS.
    Sys(AuthSys),
    /// A flavor this server does not speak (or a malformed AUTH_SYS body).
    Other {
        /// The flavor.
        flavor: u32,
    },
}

impl AuthSys {
    fn parse(body: &[u8]) -> Option<AuthSys> {
        let mut w = Walker::new(body);
        let _stamp = w.u32().ok()?;
        let machine = w.opaque(MACHINE_NAME_SIZE_BYTES_MAX).ok()?.to_vec();
        let uid = w.u32().ok()?;
        let gid = w.u32().ok()?;
        let count = w.u32().ok()? as usize;
        if count > AUTH_SYS_GROUPS_MAX {
            return None;
        }
        let gids = (0..count).map(|_| w.u32()).collect::<Result<_, _>>().ok()?;
        w.end().ok()?;
        Some(AuthSys {
            machine,
            uid,
            gid,
            gids,
        })
    }
}

/// A call's header: who, which program and procedure; the arguments follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call<'a> {
    /// The transaction id.
    pub xid: u32,
    /// The RPC version (2 is the only one).
    pub rpcvers: u32,
    /// Program.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure.
    pub proc: u32,
    /// Credential.
    pub cred: Credential,
    /// The procedure's arguments (not yet checked).
    pub args: &'a [u8],
}

/// Why a record is no call to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotACall {
    /// Too short for a header, or its header does not parse: nothing can be answered.
    #[error("not an RPC message: {0}")]
    Garbage(Garbage),
    /// A reply, or another message type: ignored.
    #[error("an RPC message of type {0}, not a call")]
    NotCall(u32),
}

impl<'a> Call<'a> {
    /// Parses the header of the call in `record`.
    pub fn parse(record: &'a [u8]) -> Result<Call<'a>, NotACall> {
        let mut w = Walker::new(record);
        let g = NotACall::Garbage;
        let xid = w.u32().map_err(g)?;
        match w.u32().map_err(g)? {
            0 => {}
            other => return Err(NotACall::NotCall(other)),
        }
        let rpcvers = w.u32().map_err(g)?;
        let prog = w.u32().map_err(g)?;
        let vers = w.u32().map_err(g)?;
        let proc = w.u32().map_err(g)?;
        let flavor = w.u32().map_err(g)?;
        let body = w.opaque(AUTH_BODY_SIZE_BYTES_MAX).map_err(g)?;
        let cred = match flavor {
            0 => Credential::None,
            1 => AuthSys::parse(body).map_or(Credential::Other { flavor }, Credential::Sys),
            flavor => Credential::Other { flavor },
        };
        let _verf_flavor = w.u32().map_err(g)?;
        w.opaque(AUTH_BODY_SIZE_BYTES_MAX).map_err(g)?;
        Ok(Call {
            xid,
            rpcvers,
            prog,
            vers,
            proc,
            cred,
            args: &record[w.position()..],
        })
    }
}

/// How a call is answered, before its results.
#[derive(Debug)]
pub enum Answer {
    /// Accepted with this status; results follow for SUCCESS.
    Accepted(accept_stat_data),
    /// Refused: RPC version or authentication.
    Denied(rejected_reply),
}

/// A reply to `xid`: the envelope, then `results` (already XDR) for a successful call.
pub fn reply(xid: u32, answer: Answer, results: &[u8]) -> Vec<u8> {
    let body = match answer {
        Answer::Accepted(reply_data) => reply_body::MSG_ACCEPTED(accepted_reply {
            verf: opaque_auth::default(),
            reply_data,
        }),
        Answer::Denied(rejected) => reply_body::MSG_DENIED(rejected),
    };
    let message = rpc_msg {
        xid,
        body: msg_body::REPLY(body),
    };
    let mut out = Vec::with_capacity(message.packed_size() + results.len());
    message
        .pack(&mut out)
        .expect("a reply envelope packs into a vector");
    out.extend_from_slice(results);
    out
}

/// XDR of `value`.
pub fn pack(value: &impl Pack) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.packed_size());
    value.pack(&mut out).expect("results pack into a vector");
    out
}

/// Whether `ip` is in one of `allowed` (address, prefix length).
pub fn allowed(ip: IpAddr, allowed: &[(IpAddr, u8)]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    allowed.iter().any(|&(net, bits)| match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(bits.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(bits.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    })
}

/// Parses `ADDR/BITS` (or a bare address: all its bits).
pub fn parse_net(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, bits) = match text.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|e| format!("{text}: not an address: {e}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(bits) => bits
            .parse::<u8>()
            .ok()
            .filter(|&b| b <= max)
            .ok_or_else(|| format!("{text}: a prefix length is 0 to {max}"))?,
        None => max,
    };
    Ok((addr, bits))
}

/// An authentication refusal.
pub fn auth_error(stat: auth_stat) -> Answer {
    Answer::Denied(rejected_reply::AUTH_ERROR(stat))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn lengths_past_their_limit_or_the_record_are_garbage() {
        // A handle of 8 bytes, a name of 3 (padded): a fine LOOKUP.
        let mut ok = be(&[8, 1, 2, 3]);
        ok.extend(b"abc\0");
        assert_eq!(Shape::DirOp.check(&ok), Ok(()));
        // The name's length says 4 GiB: refused before anything is allocated.
        let mut huge = be(&[8, 1, 2, u32::MAX]);
        huge.extend(b"abc\0");
        assert_eq!(
            Shape::DirOp.check(&huge),
            Err(Garbage::TooLong(u32::MAX as usize))
        );
        // A 65-byte handle.
        assert_eq!(Shape::Handle.check(&be(&[65])), Err(Garbage::TooLong(65)));
        // Trailing bytes, a short record, a bad union arm.
        let mut trailing = ok.clone();
        trailing.extend([0; 4]);
        assert_eq!(Shape::DirOp.check(&trailing), Err(Garbage::Trailing(4)));
        // Cut inside the name's length word: short; inside the handle: its length is
        // past what is left.
        assert_eq!(Shape::DirOp.check(&ok[..14]), Err(Garbage::Short));
        assert_eq!(Shape::DirOp.check(&ok[..10]), Err(Garbage::TooLong(8)));
        let mut create = ok.clone();
        create.extend(be(&[9]));
        assert_eq!(Shape::Create.check(&create), Err(Garbage::Discriminant(9)));
    }

    #[test]
    fn a_call_header_parses_and_auth_sys_is_bounded() {
        let mut cred = be(&[7, 2]);
        cred.extend(b"me\0\0");
        cred.extend(be(&[1000, 100, 2, 10, 20]));
        let mut record = be(&[42, 0, 2, 100_003, 3, 1, 1, cred.len() as u32]);
        record.extend(&cred);
        record.extend(be(&[0, 0, 0xAB]));
        let call = Call::parse(&record).unwrap();
        assert_eq!(
            (call.xid, call.prog, call.vers, call.proc),
            (42, 100_003, 3, 1)
        );
        assert_eq!(
            call.cred,
            Credential::Sys(AuthSys {
                machine: b"me".to_vec(),
                uid: 1000,
                gid: 100,
                gids: vec![10, 20],
            })
        );
        assert_eq!(call.args, &be(&[0xAB])[..]);
        // 17 groups: not a credential this server takes.
        let mut many = be(&[7, 0, 1, 1, 17]);
        many.extend(be(&[0; 17]));
        assert_eq!(AuthSys::parse(&many), None);
        // A reply is not a call; a stub is garbage.
        assert_eq!(Call::parse(&be(&[1, 1])), Err(NotACall::NotCall(1)));
        assert_eq!(
            Call::parse(&be(&[1])),
            Err(NotACall::Garbage(Garbage::Short))
        );
    }

    #[test]
    fn networks_match_by_prefix() {
        let nets = [
            parse_net("127.0.0.1/32").unwrap(),
            parse_net("10.1.0.0/16").unwrap(),
        ];
        assert!(allowed("127.0.0.1".parse().unwrap(), &nets));
        assert!(allowed("::ffff:127.0.0.1".parse().unwrap(), &nets));
        assert!(allowed("10.1.200.3".parse().unwrap(), &nets));
        assert!(!allowed("10.2.0.1".parse().unwrap(), &nets));
        assert!(!allowed("127.0.0.2".parse().unwrap(), &nets));
        assert!(allowed(
            "8.8.8.8".parse().unwrap(),
            &[parse_net("0.0.0.0/0").unwrap()]
        ));
        assert!(parse_net("127.0.0.1/33").is_err());
    }
}
