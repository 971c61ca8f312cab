//! The ground floor: the numbers every layer passes around, each its own type, so that a
//! log position is never taken for an inode number or a transaction id. Each is a `u64` on
//! disk and on the wire (serde `transparent`: the same bytes as the bare number).

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize,
            Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The number.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// The one after this.
            pub const fn next(self) -> $name {
                $name(self.0 + 1)
            }

            /// `count` before this one, or 0.
            pub const fn saturating_sub(self, count: u64) -> $name {
                $name(self.0.saturating_sub(count))
            }

            /// The largest.
            pub const MAX: $name = $name(u64::MAX);
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl std::ops::Add<u64> for $name {
            type Output = $name;
            fn add(self, count: u64) -> $name {
                $name(self.0 + count)
            }
        }

        impl std::ops::AddAssign<u64> for $name {
            fn add_assign(&mut self, count: u64) {
                self.0 += count;
            }
        }

        impl std::ops::Sub<u64> for $name {
            type Output = $name;
            fn sub(self, count: u64) -> $name {
                $name(self.0 - count)
            }
        }

        impl std::ops::Sub<$name> for $name {
            type Output = u64;
            fn sub(self, earlier: $name) -> u64 {
                self.0 - earlier.0
            }
        }
    };
}

id_type!(
    /// A log sequence number: a record's place in the logical log, from 1. `Lsn(0)` is
    /// "none" where a field must hold one (no record to undo next, nothing logged yet).
    Lsn
);

id_type!(
    /// An inode number. Never reused; the root is [`ROOT_INO`].
    Ino
);

id_type!(
    /// A transaction's id: unique in a log's history, from 1.
    TxnId
);

id_type!(
    /// A log segment's sequence number: its place in the order segments are written.
    SegmentSeq
);

/// The root directory's inode number.
pub const ROOT_INO: Ino = Ino(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_encodes_as_its_bare_number() {
        let bare = postcard::to_stdvec(&300u64).unwrap();
        assert_eq!(postcard::to_stdvec(&Ino(300)).unwrap(), bare);
        assert_eq!(postcard::to_stdvec(&Lsn(300)).unwrap(), bare);
        assert_eq!(postcard::from_bytes::<TxnId>(&bare).unwrap(), TxnId(300));
        assert_eq!(Ino(7) - Ino(3), 4);
        assert_eq!((Ino(7) - 3).next(), Ino(5));
        assert_eq!(ROOT_INO.to_string(), "1");
    }
}
