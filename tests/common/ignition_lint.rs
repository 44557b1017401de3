//! The semantic checks Ignition makes on a config beyond its JSON schema,
//! written independently of nodeboot's renderer so the two can disagree:
//! unknown keys, absolute and unique paths, unit names, decodable data URLs,
//! hash syntax and supported URL schemes.

use std::collections::BTreeSet;

use base64::Engine;
use serde_json::Value;

/// Every problem found; empty means the config is clean.
pub fn lint(config: &Value, schema: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    unknown_keys(config, schema, schema, "$", &mut problems);
    paths(config, &mut problems);
    units(config, &mut problems);
    resources(config, "$", &mut problems);
    problems
}

/// Ignition warns on keys its schema does not know ("unused key"): a typo
/// there is silently ignored on the node.
fn unknown_keys(value: &Value, node: &Value, root: &Value, at: &str, out: &mut Vec<String>) {
    let node = resolve(node, root);
    match value {
        Value::Object(map) => {
            let allowed = properties(node, root);
            for (key, child) in map {
                match allowed.iter().find(|(k, _)| k == key) {
                    Some((_, schema)) => unknown_keys(child, schema, root, &format!("{at}.{key}"), out),
                    None => out.push(format!("{at}: unused key {key:?}")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = node.get("items") {
                for (i, item) in items.iter().enumerate() {
                    unknown_keys(item, item_schema, root, &format!("{at}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn resolve<'a>(node: &'a Value, root: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local refs only");
            resolve(
                root.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {r}")),
                root,
            )
        }
        None => node,
    }
}

fn properties<'a>(node: &'a Value, root: &'a Value) -> Vec<(String, &'a Value)> {
    let mut props: Vec<(String, &Value)> = node
        .get("properties")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v)).collect())
        .unwrap_or_default();
    for part in node.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        props.extend(properties(resolve(part, root), root));
    }
    props
}

fn paths(config: &Value, out: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    for kind in ["files", "directories", "links"] {
        for node in config
            .pointer(&format!("/storage/{kind}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let path = node["path"].as_str().unwrap_or_default();
            if !path.starts_with('/') {
                out.push(format!("storage.{kind}: path {path:?} is not absolute"));
            }
            if path.split('/').any(|c| c == "." || c == "..")
                || path.contains("//")
                || (path.len() > 1 && path.ends_with('/'))
            {
                out.push(format!("storage.{kind}: path {path:?} is not clean"));
            }
            if !seen.insert(path.to_string()) {
                out.push(format!("storage.{kind}: duplicate path {path:?}"));
            }
            if let Some(mode) = node.get("mode").and_then(Value::as_i64) {
                if !(0..=0o7777).contains(&mode) {
                    out.push(format!("storage.{kind}: {path}: mode {mode} out of range"));
                }
            }
        }
    }
}

const UNIT_SUFFIXES: [&str; 11] = [
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

fn units(config: &Value, out: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    for unit in config
        .pointer("/systemd/units")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = unit["name"].as_str().unwrap_or_default();
        if !UNIT_SUFFIXES.iter().any(|s| name.ends_with(s) && name.len() > s.len()) {
            out.push(format!("systemd.units: {name:?} has no valid unit suffix"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
        {
            out.push(format!("systemd.units: {name:?} has characters systemd refuses"));
        }
        if !seen.insert(name.to_string()) {
            out.push(format!("systemd.units: duplicate unit {name:?}"));
        }
        let written = config
            .pointer("/storage/files")
            .and_then(Value::as_array)
            .is_some_and(|files| {
                files
                    .iter()
                    .any(|f| f["path"].as_str() == Some(&format!("/etc/systemd/system/{name}")))
            });
        if unit.get("enabled") == Some(&Value::Bool(true)) && unit.get("contents").is_none() && !written {
            out.push(format!(
                "systemd.units: {name} is enabled but has no contents and no file in /etc/systemd/system"
            ));
        }
    }
}

/// Every `source` must use a scheme Ignition fetches, data URLs must decode,
/// and every `verification.hash` must be `sha512-<128 hex>` or `sha256-<64 hex>`.
fn resources(value: &Value, at: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(source) = map.get("source").and_then(Value::as_str) {
                check_source(source, at, out);
            }
            if let Some(hash) = map.get("hash").and_then(Value::as_str) {
                let ok = match hash.split_once('-') {
                    Some(("sha512", hex)) => hex.len() == 128 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                    Some(("sha256", hex)) => hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                    _ => false,
                };
                if !ok {
                    out.push(format!(
                        "{at}: hash {hash:?} is not sha512-<128 hex> or sha256-<64 hex>"
                    ));
                }
            }
            for (k, v) in map {
                resources(v, &format!("{at}.{k}"), out);
            }
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| resources(v, &format!("{at}[{i}]"), out)),
        _ => {}
    }
}

fn check_source(source: &str, at: &str, out: &mut Vec<String>) {
    let scheme = source.split(':').next().unwrap_or_default();
    if !["http", "https", "tftp", "s3", "gs", "arn", "data"].contains(&scheme) {
        out.push(format!("{at}: source scheme {scheme:?} is not one Ignition fetches"));
        return;
    }
    if scheme == "data" && decode_data_url(source).is_none() {
        out.push(format!("{at}: data URL does not decode"));
    }
}

/// RFC 2397: `data:[<mediatype>][;base64],<data>`.
pub fn decode_data_url(url: &str) -> Option<Vec<u8>> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    if meta.ends_with(";base64") {
        base64::engine::general_purpose::STANDARD.decode(data).ok()
    } else {
        percent_decode(data)
    }
}

/// The bytes Ignition would write for a file entry with a data URL:
/// decoded, and decompressed when `compression` is gzip.
pub fn file_contents(file: &Value) -> Option<Vec<u8>> {
    let data = decode_data_url(file["contents"]["source"].as_str()?)?;
    match file["contents"]["compression"].as_str() {
        None | Some("") => Some(data),
        Some("gzip") => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&data[..]), &mut out).ok()?;
            Some(out)
        }
        Some(_) => None,
    }
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}
