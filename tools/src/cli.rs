//! What several commands share: how to open a directory's device, a directory with `--json`,
//! and sizes with K, M or G.

use std::path::PathBuf;

use clap::Args;
use smlog::io::{DeviceKind, DeviceOptions};

/// How to open a log directory.
#[derive(Debug, Clone, Copy, Args)]
pub struct OpenArgs {
    /// Use pwrite + fdatasync instead of io_uring.
    #[arg(long)]
    pub posix: bool,
    /// Buffered IO instead of O_DIRECT (for file systems that refuse O_DIRECT, like tmpfs).
    #[arg(long)]
    pub buffered: bool,
}

impl OpenArgs {
    /// The device options these flags select; `create_dir` makes a missing directory.
    pub fn device_options(self, create_dir: bool) -> DeviceOptions {
        DeviceOptions {
            kind: if self.posix {
                DeviceKind::Posix
            } else {
                DeviceKind::Uring
            },
            direct_io: !self.buffered,
            create_dir,
        }
    }
}

/// A directory to read or work on, how to open it, and whether to print JSON.
#[derive(Debug, Clone, Args)]
pub struct DirArgs {
    /// The log or engine directory.
    pub dir: PathBuf,
    #[command(flatten)]
    pub open: OpenArgs,
    /// Print JSON (one object, or one per line where the command lists things).
    #[arg(long)]
    pub json: bool,
}

/// A size in bytes: digits, then optionally K, M or G (powers of 1024).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (digits, then K, M or G)"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text} is too large"))
}
