//! NFS file handles of `smlog nfs`: stable across restarts, and a handle of another
//! volume or of a removed file is known as such.
//!
//! 28 bytes (all integers big-endian, as XDR's):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version (1) |
//! | 1 | 3 | zero |
//! | 4 | 8 | the volume's id ([`smlog::Engine::volume_id`]) |
//! | 12 | 8 | inode number |
//! | 20 | 4 | generation (0: inode numbers are never reused) |
//! | 24 | 4 | CRC-32C of bytes 0..24 |
//!
//! The CRC catches a handle damaged or made up by a client (NFS3ERR_BADHANDLE), not a
//! forger: with AUTH_SYS the client is trusted to say who it is anyway.

use nfs3_types::nfs3::{nfs_fh3, nfsstat3};
use nfs3_types::xdr_codec::Opaque;
use smlog::Ino;

/// The handle format's version.
const VERSION: u8 = 1;
/// A handle's size in bytes.
pub const HANDLE_SIZE_BYTES: usize = 28;

/// The handle of inode `ino` of volume `volume`.
pub fn encode(volume: u64, ino: Ino) -> nfs_fh3 {
    let mut bytes = [0u8; HANDLE_SIZE_BYTES];
    bytes[0] = VERSION;
    bytes[4..12].copy_from_slice(&volume.to_be_bytes());
    bytes[12..20].copy_from_slice(&ino.0.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[..24]);
    bytes[24..28].copy_from_slice(&crc.to_be_bytes());
    nfs_fh3 {
        data: Opaque::owned(bytes.to_vec()),
    }
}

/// The inode a handle of volume `volume` names: NFS3ERR_BADHANDLE for bytes that are no
/// handle of this server, NFS3ERR_STALE for a handle of another volume. (Whether the inode
/// still exists is the engine's to say: NFS3ERR_STALE too.)
pub fn decode(volume: u64, handle: &nfs_fh3) -> Result<Ino, nfsstat3> {
    let bytes: &[u8] = &handle.data;
    if bytes.len() != HANDLE_SIZE_BYTES || bytes[0] != VERSION || bytes[1..4] != [0, 0, 0] {
        return Err(nfsstat3::NFS3ERR_BADHANDLE);
    }
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let long = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if crc32c::crc32c(&bytes[..24]) != word(24) || word(20) != 0 {
        return Err(nfsstat3::NFS3ERR_BADHANDLE);
    }
    if long(4) != volume {
        return Err(nfsstat3::NFS3ERR_STALE);
    }
    Ok(Ino(long(12)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_damage_is_told_from_another_volume() {
        let handle = encode(0x1234, Ino(77));
        assert_eq!(handle.data.len(), HANDLE_SIZE_BYTES);
        assert_eq!(decode(0x1234, &handle), Ok(Ino(77)));
        assert_eq!(decode(0x9999, &handle), Err(nfsstat3::NFS3ERR_STALE));
        let mut bytes = handle.data.to_vec();
        bytes[15] ^= 1;
        let flipped = nfs_fh3 {
            data: Opaque::owned(bytes.clone()),
        };
        assert_eq!(decode(0x1234, &flipped), Err(nfsstat3::NFS3ERR_BADHANDLE));
        let short = nfs_fh3 {
            data: Opaque::owned(bytes[..20].to_vec()),
        };
        assert_eq!(decode(0x1234, &short), Err(nfsstat3::NFS3ERR_BADHANDLE));
    }

    #[test]
    fn the_layout_is_pinned() {
        let handle = encode(0x0102_0304_0506_0708, Ino(0x1112_1314_1516_1718));
        // docs/FORMAT.md, "NFS file handles": the CRC-32C of the first 24 bytes last.
        assert_eq!(
            &handle.data[..],
            &[
                1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
                0, 0, 0, 0, 0x76, 0xa4, 0xe4, 0x15
            ]
        );
    }
}
