//! `nodeboot kubeconfig`: the admin kubeconfig `nodeboot pki` made, printed
//! or merged into `~/.kube/config` (or `$KUBECONFIG`) without touching
//! another cluster's entries.

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use super::load_env;
use crate::operator::env::Environment;
use crate::operator::error::Error;
use crate::shared::fsutil;

pub use crate::operator::pki::ADMIN_KUBECONFIG;

fn admin(secrets: &Path) -> Result<(PathBuf, Value), Error> {
    let path = secrets.join(ADMIN_KUBECONFIG);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Missing(format!("{}: {e}; run `nodeboot pki --env F` first", path.display())))?;
    let value = serde_yaml_ng::from_str(&text)
        .map_err(|e| Error::Missing(format!("{}: not a kubeconfig: {e}", path.display())))?;
    Ok((path, value))
}

pub fn print(env_path: &Path, dir: Option<&Path>) -> Result<String, Error> {
    let env = load_env(env_path)?.env;
    let secrets = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::shared::secrets::layout::default_dir(&env.name));
    let (path, _) = admin(&secrets)?;
    std::fs::read_to_string(&path).map_err(|e| Error::Missing(format!("{}: {e}", path.display())))
}

/// Where kubectl looks: the first file of `$KUBECONFIG`, else ~/.kube/config.
pub fn default_target() -> PathBuf {
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(v) => std::env::split_paths(&v).next().expect("non-empty"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".kube/config"),
    }
}

pub fn write_default(env: &Environment, secrets: &Path) -> Result<String, Error> {
    merge_into(env, secrets, &default_target())
}

pub fn write(env_path: &Path, dir: Option<&Path>, target: Option<&Path>) -> Result<String, Error> {
    let env = load_env(env_path)?.env;
    let secrets = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::shared::secrets::layout::default_dir(&env.name));
    merge_into(
        &env,
        &secrets,
        &target.map(Path::to_path_buf).unwrap_or_else(default_target),
    )
}

fn merge_into(env: &Environment, secrets: &Path, target: &Path) -> Result<String, Error> {
    let (_, ours) = admin(secrets)?;
    let mut config = match std::fs::read_to_string(target) {
        Ok(text) => serde_yaml_ng::from_str::<Value>(&text)
            .map_err(|e| Error::Missing(format!("{}: not a kubeconfig: {e}", target.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Mapping(Mapping::new()),
        Err(e) => {
            return Err(Error::Write {
                path: target.display().to_string(),
                source: e,
            })
        }
    };
    merge(&mut config, &ours).map_err(|detail| Error::Refused(format!("{}: {detail}", target.display())))?;
    let text = serde_yaml_ng::to_string(&config).expect("kubeconfig serialises");
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.display().to_string(),
            source,
        })?;
    }
    fsutil::write_atomic(target, text.as_bytes(), 0o600).map_err(|source| Error::Write {
        path: target.display().to_string(),
        source,
    })?;
    Ok(format!(
        "merged the {} admin context into {}",
        env.name,
        target.display()
    ))
}

fn named<'a>(list: &'a Value, name: &Value) -> Option<&'a Value> {
    list.as_sequence()?.iter().find(|e| e.get("name") == Some(name))
}

/// Adds `ours`' cluster, user and context to `config`. An entry of the same
/// name is replaced only when it is the same cluster (same server);
/// otherwise the merge is refused and nothing is written.
pub fn merge(config: &mut Value, ours: &Value) -> Result<(), String> {
    let map = config.as_mapping_mut().ok_or("the kubeconfig is not a mapping")?;
    for (key, value) in [("apiVersion", "v1"), ("kind", "Config")] {
        map.entry(key.into()).or_insert_with(|| value.into());
    }
    let cluster = &ours["clusters"][0];
    if let Some(existing) = map.get("clusters").and_then(|l| named(l, &cluster["name"])) {
        if existing["cluster"]["server"] != cluster["cluster"]["server"] {
            return Err(format!(
                "it already has a cluster named {:?} with server {:?}; nodeboot does not overwrite another cluster's entry",
                cluster["name"].as_str().unwrap_or_default(),
                existing["cluster"]["server"].as_str().unwrap_or_default()
            ));
        }
    }
    for list in ["clusters", "users", "contexts"] {
        let entry = ours[list][0].clone();
        let seq = map.entry(list.into()).or_insert_with(|| Value::Sequence(vec![]));
        let seq = seq.as_sequence_mut().ok_or(format!("{list} is not a list"))?;
        seq.retain(|e| e.get("name") != entry.get("name"));
        seq.push(entry);
    }
    let current = map
        .get("current-context")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if current.is_empty() {
        map.insert("current-context".into(), ours["current-context"].clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(server: &str) -> Value {
        serde_yaml_ng::from_str(&format!(
            "clusters: [{{name: play, cluster: {{server: '{server}'}}}}]\nusers: [{{name: play-admin, user: {{}}}}]\n\
             contexts: [{{name: admin@play, context: {{cluster: play, user: play-admin}}}}]\ncurrent-context: admin@play\n"
        ))
        .unwrap()
    }

    #[test]
    fn merging_keeps_other_clusters_and_refuses_a_name_clash() {
        let mut config: Value = serde_yaml_ng::from_str(
            "clusters: [{name: other, cluster: {server: 'https://other'}}]\nusers: [{name: admin, user: {}}]\n\
             contexts: [{name: admin@other, context: {cluster: other, user: admin}}]\ncurrent-context: admin@other\n",
        )
        .unwrap();
        merge(&mut config, &ours("https://kube-play")).unwrap();
        assert_eq!(config["clusters"].as_sequence().unwrap().len(), 2);
        assert_eq!(
            config["current-context"], "admin@other",
            "the user's current context is kept"
        );
        let before = config.clone();
        merge(&mut config, &ours("https://kube-play")).unwrap();
        assert_eq!(config, before, "merging twice changes nothing");
        let clash = merge(&mut config, &ours("https://somewhere-else")).unwrap_err();
        assert!(clash.contains("already has a cluster named \"play\""), "{clash}");
    }
}
