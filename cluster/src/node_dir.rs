//! A node's directory, as `smlog cluster init` makes it and `smlog cluster serve` runs it:
//!
//! ```text
//! DIR/NODE     the node's id, listen address, whether it starts a new cluster, and the
//!              directory's incarnation (random, drawn by init: a directory made anew for
//!              the same id has another, and the cluster refuses it)
//! DIR/KEY      the cluster key (mode 0600; the same file on every node and for commands)
//! DIR/raft/    the Raft log (an smlog log)
//! DIR/volume/  the volume (an smlog engine directory)
//! ```
//!
//! Both small files are text, one `name value` per line after a header line naming the
//! format and its version; anything else refuses the open with what is wrong.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::auth::ClusterKey;

const NODE_FILE: &str = "NODE";
const KEY_FILE: &str = "KEY";
const NODE_HEADER: &str = "smlog-node 2";
const KEY_HEADER: &str = "smlog-cluster-key 1";

/// Why a node directory could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `init` found a node already there.
    #[error("{0} already holds a node (NODE exists); serve it, or pick an empty directory")]
    Exists(PathBuf),
}

/// A node's directory and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDir {
    /// The directory.
    pub path: PathBuf,
    /// The node's id (1 or more).
    pub id: u64,
    /// The address it listens on, and that the others reach it at.
    pub listen: String,
    /// It starts a new cluster of itself on its first start (made by `init` without a key
    /// to join with).
    pub bootstrap: bool,
    /// The cluster key.
    pub key: ClusterKey,
    /// This directory's incarnation: random, never 0.
    pub incarnation: u64,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DirError + '_ {
    move |source| DirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl NodeDir {
    /// Makes a node directory at `path` (created when missing; it must hold no node): node
    /// `id` listening on `listen`, in the cluster of `key` (joining it), or of a new key
    /// (starting a cluster) when `key` is `None`.
    pub fn init(
        path: &Path,
        id: u64,
        listen: &str,
        key: Option<ClusterKey>,
    ) -> Result<NodeDir, DirError> {
        if id == crate::auth::COMMAND_NODE_ID {
            return Err(DirError::Invalid {
                path: path.to_path_buf(),
                why: "node ids start at 1 (0 is a command's)".into(),
            });
        }
        fs::create_dir_all(path).map_err(io_error(path))?;
        let node_file = path.join(NODE_FILE);
        if node_file.exists() {
            return Err(DirError::Exists(path.to_path_buf()));
        }
        let dir = NodeDir {
            path: path.to_path_buf(),
            id,
            listen: listen.to_string(),
            bootstrap: key.is_none(),
            key: key.unwrap_or_else(ClusterKey::generate),
            incarnation: {
                use rand::RngCore;
                rand::rngs::OsRng.next_u64().max(1)
            },
        };
        write_key(&path.join(KEY_FILE), &dir.key)?;
        let mut text = format!("{NODE_HEADER}\n");
        let _ = writeln!(text, "id {id}");
        let _ = writeln!(text, "listen {listen}");
        let _ = writeln!(
            text,
            "bootstrap {}",
            if dir.bootstrap { "yes" } else { "no" }
        );
        let _ = writeln!(text, "incarnation {:016x}", dir.incarnation);
        write_durably(&node_file, text.as_bytes(), 0o644)?;
        Ok(dir)
    }

    /// Reads the node directory at `path`.
    pub fn open(path: &Path) -> Result<NodeDir, DirError> {
        let node_file = path.join(NODE_FILE);
        let fields = read_fields(
            &node_file,
            NODE_HEADER,
            &["id", "listen", "bootstrap", "incarnation"],
        )?;
        let invalid = |why: String| DirError::Invalid {
            path: node_file.clone(),
            why,
        };
        let id: u64 = fields["id"]
            .parse()
            .map_err(|_| invalid(format!("id {:?} is not a number", fields["id"])))?;
        let bootstrap = match fields["bootstrap"].as_str() {
            "yes" => true,
            "no" => false,
            other => {
                return Err(invalid(format!(
                    "bootstrap {other:?} is neither yes nor no"
                )))
            }
        };
        let incarnation = u64::from_str_radix(&fields["incarnation"], 16)
            .ok()
            .filter(|&i| i != 0)
            .ok_or_else(|| {
                invalid(format!(
                    "incarnation {:?} is not a nonzero hexadecimal number",
                    fields["incarnation"]
                ))
            })?;
        Ok(NodeDir {
            path: path.to_path_buf(),
            id,
            listen: fields["listen"].clone(),
            bootstrap,
            key: read_key(&path.join(KEY_FILE))?,
            incarnation,
        })
    }

    /// Who this node is on the wire: its id and its directory's incarnation.
    pub fn peer(&self) -> crate::auth::Peer {
        crate::auth::Peer {
            id: self.id,
            incarnation: self.incarnation,
        }
    }

    /// The Raft log's directory.
    pub fn raft_dir(&self) -> PathBuf {
        self.path.join("raft")
    }

    /// The volume's directory.
    pub fn volume_dir(&self) -> PathBuf {
        self.path.join("volume")
    }

    /// The key file (to copy to the nodes that join, and to give the commands).
    pub fn key_file(&self) -> PathBuf {
        self.path.join(KEY_FILE)
    }
}

fn write_durably(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DirError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(bytes).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(parent))?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Writes `key` as a key file (mode 0600).
pub fn write_key(path: &Path, key: &ClusterKey) -> Result<(), DirError> {
    let text = format!(
        "{KEY_HEADER}\ncluster {}\nsecret {}\n",
        format_args!("{:016x}", key.cluster_id),
        hex(&key.secret)
    );
    write_durably(path, text.as_bytes(), 0o600)
}

/// Reads a key file.
pub fn read_key(path: &Path) -> Result<ClusterKey, DirError> {
    let fields = read_fields(path, KEY_HEADER, &["cluster", "secret"])?;
    let invalid = |why: &str| DirError::Invalid {
        path: path.to_path_buf(),
        why: why.into(),
    };
    let cluster = Some(&fields["cluster"])
        .filter(|text| text.len() == 16)
        .and_then(|text| u64::from_str_radix(text, 16).ok())
        .ok_or_else(|| invalid("cluster is not 16 hex digits"))?;
    let secret =
        unhex::<32>(&fields["secret"]).ok_or_else(|| invalid("secret is not 64 hex digits"))?;
    Ok(ClusterKey {
        cluster_id: cluster,
        secret,
    })
}

/// Reads `name value` lines after `header`; each of `names` exactly once, no other.
fn read_fields(
    path: &Path,
    header: &str,
    names: &[&str],
) -> Result<BTreeMap<String, String>, DirError> {
    let invalid = |why: String| DirError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    let metadata = fs::metadata(path).map_err(io_error(path))?;
    if metadata.len() > 4096 {
        return Err(invalid(format!(
            "{} bytes: not a node file",
            metadata.len()
        )));
    }
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    let mut lines = text.lines();
    if lines.next() != Some(header) {
        return Err(invalid(format!("the first line is not {header:?}")));
    }
    let mut fields = BTreeMap::new();
    for line in lines.filter(|line| !line.trim().is_empty()) {
        let (name, value) = line
            .split_once(' ')
            .ok_or_else(|| invalid(format!("{line:?} is not `name value`")))?;
        if !names.contains(&name) {
            return Err(invalid(format!("unknown field {name:?}")));
        }
        if fields
            .insert(name.to_string(), value.trim().to_string())
            .is_some()
        {
            return Err(invalid(format!("{name} given twice")));
        }
    }
    if let Some(missing) = names.iter().find(|name| !fields.contains_key(**name)) {
        return Err(invalid(format!("no {missing}")));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_directory_round_trips_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeDir::init(&dir.path().join("n1"), 1, "127.0.0.1:7001", None).unwrap();
        assert!(first.bootstrap);
        assert_eq!(NodeDir::open(&first.path).unwrap(), first);
        let joined = NodeDir::init(
            &dir.path().join("n2"),
            2,
            "127.0.0.1:7002",
            Some(read_key(&first.key_file()).unwrap()),
        )
        .unwrap();
        assert!(!joined.bootstrap);
        assert_eq!(joined.key, first.key);
        assert!(matches!(
            NodeDir::init(&first.path, 1, "x", None),
            Err(DirError::Exists(_))
        ));
        let mode = fs::metadata(first.key_file()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert_ne!(joined.incarnation, first.incarnation);
        assert_ne!(joined.incarnation, 0);
        fs::write(first.path.join(NODE_FILE), "smlog-node 2\nid x\n").unwrap();
        let error = NodeDir::open(&first.path).unwrap_err().to_string();
        assert!(
            error.contains("no listen") || error.contains("not a number"),
            "{error}"
        );
        // A directory made by an older smlog (no incarnation) is named as such.
        let old = "smlog-node 1\nid 1\nlisten 127.0.0.1:7001\nbootstrap yes\n";
        fs::write(first.path.join(NODE_FILE), old).unwrap();
        let error = NodeDir::open(&first.path).unwrap_err().to_string();
        assert!(error.contains("smlog-node 2"), "{error}");
        let zero = "smlog-node 2\nid 1\nlisten a\nbootstrap yes\nincarnation 0\n";
        fs::write(first.path.join(NODE_FILE), zero).unwrap();
        let error = NodeDir::open(&first.path).unwrap_err().to_string();
        assert!(error.contains("nonzero"), "{error}");
        fs::write(
            first.key_file(),
            "smlog-cluster-key 1\ncluster 12\nsecret 00\n",
        )
        .unwrap();
        assert!(read_key(&first.key_file()).is_err());
    }
}
