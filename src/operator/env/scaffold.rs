//! `nodeboot env new`: a new environment file from the built-in defaults.

use std::io::Write;
use std::path::{Path, PathBuf};

use askama::Template;

#[derive(Template)]
#[template(path = "default.tfvars.askama", escape = "none")]
struct DefaultEnvironment<'a> {
    name: &'a str,
}

/// The defaults for an environment called `name`, commented field by field.
/// `environments/example.tfvars` is exactly this text for `example`.
pub fn default_text(name: &str) -> String {
    let mut text = DefaultEnvironment { name }
        .render()
        .expect("the default environment template renders");
    text.push('\n'); // askama drops the template's final newline
    text
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("invalid environment name {0:?}: use 3-32 lower-case letters, digits and '-', starting with a letter")]
    BadName(String),
    #[error("{0} already exists; nodeboot never overwrites an environment file (edit it, or pick another name)")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Writes `dir/NAME.tfvars`, refusing to touch an existing file.
pub fn write_new(dir: &Path, name: &str) -> Result<PathBuf, ScaffoldError> {
    if !super::validate::syntax::is_environment_name(name) {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    let path = dir.join(format!("{name}.tfvars"));
    let write_err = |source| ScaffoldError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    // create_new is atomic: two concurrent runs cannot both create the file.
    let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(ScaffoldError::Exists(path)),
        Err(e) => return Err(write_err(e)),
    };
    file.write_all(default_text(name).as_bytes()).map_err(write_err)?;
    Ok(path)
}
