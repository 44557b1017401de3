//! One function per CLI command: what `main` calls once arguments are parsed.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::env::{self, Loaded};
use crate::error::Error;
use crate::render;
use crate::role::Role;

/// Loads and validates an environment file, logging its warnings.
pub fn load_env(path: &Path) -> Result<Loaded, Error> {
    let loaded = env::load(path)?;
    for w in loaded.warnings.warnings() {
        warn!("{w}");
    }
    Ok(loaded)
}

/// `nodeboot validate`: prints what is wrong; Ok when nothing is an error.
pub fn validate(path: &Path) -> Result<String, Error> {
    let loaded = load_env(path)?;
    let warnings = loaded.warnings.warnings().count();
    Ok(format!("{}: valid ({} warning{})", path.display(), warnings, if warnings == 1 { "" } else { "s" }))
}

/// `nodeboot render`: writes the configs and returns one line per file.
pub fn render(path: &Path, out: &Path, roles: &[Role]) -> Result<Vec<String>, Error> {
    let loaded = load_env(path)?;
    let roles: Vec<Role> = if roles.is_empty() { Role::ALL.to_vec() } else { roles.to_vec() };
    let written = render::write(&loaded.env, &roles, out)
        .map_err(|source| Error::Write { path: out.display().to_string(), source })?;
    let lines = written
        .iter()
        .map(|w| match &w.full {
            None => format!("{}: {} bytes", w.user_data.display(), w.user_data_len),
            Some(full) => format!(
                "{}: {} bytes, pointer to {} (upload {} there)",
                w.user_data.display(),
                w.user_data_len,
                render::full_config_url(&loaded.env, w.role),
                full.display()
            ),
        })
        .collect();
    info!(roles = roles.len(), out = %out.display(), "rendered");
    Ok(lines)
}

/// `nodeboot env new`: the playground is `play-$USER`, as in the seed.
pub fn env_new(name: Option<String>, dir: &Path) -> Result<PathBuf, Error> {
    let name = name.unwrap_or_else(|| format!("play-{}", std::env::var("USER").unwrap_or_else(|_| "user".into())));
    Ok(env::write_new(dir, &name)?)
}
