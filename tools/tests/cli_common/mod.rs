//! What the CLI tests share: running `smlog ARGS... DIR`.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `smlog ARGS... DIR` and returns what it printed and its exit status.
pub fn smlog(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smlog"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}
