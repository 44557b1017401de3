//! Where a node's files are (`Root`: `/` on a node, a scratch directory in
//! tests), the state each stage records for the next, and the errors of
//! reading and writing them. Below the stages and the syncs alike.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use crate::shared::fsutil;
use crate::shared::node_config::{NodeConfig, NODE_CONFIG_PATH, STATE_DIR};

/// Where a stage runs: `/` on a node, a scratch directory in tests. Every
/// path a stage touches (config, state, devices, mount points) is resolved
/// under it, so tests never touch the host's `/`.
#[derive(Debug, Clone)]
pub struct Root(pub PathBuf);

impl Root {
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.0.join(absolute.trim_start_matches('/'))
    }

    pub fn state(&self, file: &str) -> PathBuf {
        self.path(STATE_DIR).join(file)
    }

    pub fn node_config(&self) -> Result<NodeConfig, StageError> {
        read_json(&self.path(NODE_CONFIG_PATH))
    }

    /// Records a stage's result for the stages after it (atomically).
    pub fn record<T: Serialize>(&self, file: &str, value: &T) -> Result<PathBuf, StageError> {
        let path = self.state(file);
        let dir = path.parent().expect("state files live in a directory");
        std::fs::create_dir_all(dir).map_err(|e| StageError::io(dir, e))?;
        let mut bytes = serde_json::to_vec_pretty(value).expect("state serialises");
        bytes.push(b'\n');
        fsutil::write_atomic(&path, &bytes, 0o644).map_err(|e| StageError::io(&path, e))?;
        Ok(path)
    }

    pub fn recorded<T: DeserializeOwned>(&self, file: &str, by_stage: &str) -> Result<T, StageError> {
        let path = self.state(file);
        if !path.exists() {
            return Err(StageError::NotYet {
                path,
                stage: by_stage.to_string(),
            });
        }
        read_json(&path)
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StageError> {
    let bytes = std::fs::read(path).map_err(|e| StageError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| StageError::BadFile {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Errors common to every stage; each stage has its own on top.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    BadFile { path: PathBuf, detail: String },
    #[error("{path} does not exist yet: run `nodeboot stage {stage}` first")]
    NotYet { path: PathBuf, stage: String },
}

impl StageError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
