//! The layers ARCHITECTURE.md draws, checked on the source: `node` and
//! `operator` depend on `shared` and never on each other, `shared` on
//! neither; and no import circle at any level (among the modules of one
//! folder, a module that names a sibling is never named back by it, through
//! any chain). A module naming its parent or its own children is not a
//! circle (`use super::Root`, `pub use layout::ObjectPath`).
//!
//! Reads `crate::` and `super::` paths (and `{...}` groups) outside comments;
//! a path is resolved to the longest module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module, as its path from the crate root (`["node", "stage", "eni"]`).
type Module = Vec<String>;

struct Reference {
    from: Module,
    to: Module,
    at: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/node/stage/mod.rs` -> `node::stage`; `src/lib.rs` -> the root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src/");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

fn ident_len(s: &str) -> usize {
    s.char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(s.len(), |(i, _)| i)
}

/// Every full path in `s` (which starts right after `crate::`/`super::`),
/// groups expanded: `a::{b, c::d}` -> `a::b`, `a::c::d`.
fn paths_after(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut segments = prefix;
    let mut i = 0;
    loop {
        let rest = &s[i..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut j = 1;
            loop {
                let item = &group[j - 1..];
                let trimmed = item.trim_start();
                j += item.len() - trimmed.len();
                if trimmed.starts_with('}') {
                    return i + j + 1;
                }
                if trimmed.is_empty() {
                    return s.len();
                }
                j += paths_after(&s[i + j..], segments.clone(), out);
                let after = &s[i + j..];
                let Some(skip) = after.find([',', '}']) else {
                    return s.len();
                };
                j += skip;
                if s[i + j..].starts_with(',') {
                    j += 1;
                }
            }
        }
        let n = ident_len(rest);
        if n == 0 {
            out.push(segments);
            return i;
        }
        segments.push(rest[..n].to_string());
        i += n;
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            out.push(segments);
            return i;
        }
    }
}

fn references(src: &Path, file: &Path, modules: &BTreeSet<Module>) -> Vec<Reference> {
    let text = std::fs::read_to_string(file).expect("a readable source file");
    let me = module_of(src, file);
    // Comments out, lines kept (a `use` group may span lines).
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    // A file's test module comes last: inside it, `super` is the file's module.
    let tests_from = code.find("\n#[cfg(test)]").unwrap_or(code.len());
    let line_of = |offset: usize| code[..offset].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (start, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
        if start > 0 && code[..start].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut found = Vec::new();
        paths_after(&code[start..], Vec::new(), &mut found);
        for path in found {
            let mut base: Module = Vec::new();
            let mut segments = path.into_iter().peekable();
            if segments.peek().map(String::as_str) == Some("crate") {
                segments.next();
            } else {
                base = me.clone();
                if start > tests_from {
                    base.push("tests".into());
                }
                while segments.peek().map(String::as_str) == Some("super") {
                    segments.next();
                    base.pop();
                }
            }
            let mut target = base;
            let mut resolved = target.clone();
            for s in segments {
                target.push(s);
                if modules.contains(&target) {
                    resolved = target.clone();
                }
            }
            out.push(Reference {
                from: me.clone(),
                to: resolved,
                at: format!("{}:{}", file.display(), line_of(start)),
            });
        }
    }
    out
}

fn all_references() -> (BTreeSet<Module>, Vec<Reference>) {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // The binary (main.rs, cli/) sits above the library: it may name anything.
    files.retain(|f| {
        let rel = f.strip_prefix(&src).unwrap();
        rel != Path::new("main.rs") && !rel.starts_with("cli")
    });
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let refs = files.iter().flat_map(|f| references(&src, f, &modules)).collect();
    (modules, refs)
}

#[test]
fn node_and_operator_depend_only_on_shared() {
    let (_, refs) = all_references();
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("shared", &["shared"][..]),
        ("node", &["node", "shared"][..]),
        ("operator", &["operator", "shared"][..]),
    ]);
    let mut wrong = Vec::new();
    for r in &refs {
        let (Some(from), Some(to)) = (r.from.first(), r.to.first()) else {
            continue;
        };
        if let Some(ok) = allowed.get(from.as_str()) {
            if !ok.contains(&to.as_str()) {
                wrong.push(format!("{}: {} names {}", r.at, r.from.join("::"), r.to.join("::")));
            }
        }
    }
    assert!(wrong.is_empty(), "layer rule broken:\n{}", wrong.join("\n"));
    // The check sees references at all: node code names shared modules.
    assert!(refs
        .iter()
        .any(|r| r.from.first().is_some_and(|m| m == "node") && r.to.first().is_some_and(|m| m == "shared")));
}

#[test]
fn no_import_circle_among_sibling_modules() {
    let (modules, refs) = all_references();
    // Per folder (module with children): the graph of its children.
    let mut circles = Vec::new();
    let parents: BTreeSet<Module> = modules
        .iter()
        .filter(|m| !m.is_empty())
        .map(|m| m[..m.len() - 1].to_vec())
        .collect();
    for parent in &parents {
        let depth = parent.len();
        let child = |m: &Module| (m.len() > depth && m[..depth] == parent[..]).then(|| m[depth].clone());
        let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for r in &refs {
            if let (Some(a), Some(b)) = (child(&r.from), child(&r.to)) {
                if a != b {
                    edges.entry(a).or_default().entry(b).or_insert_with(|| r.at.clone());
                }
            }
        }
        if let Some(cycle) = find_cycle(&edges) {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {} ({})", w[0], w[1], edges[&w[0]][&w[1]]))
                .collect();
            circles.push(format!(
                "in {}: {}",
                if depth == 0 { "crate".into() } else { parent.join("::") },
                steps.join(", ")
            ));
        }
    }
    assert!(circles.is_empty(), "import circles:\n{}", circles.join("\n"));
}

/// A cycle as a list of nodes, first repeated last.
fn find_cycle(edges: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeMap<String, String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for next in edges.get(n).into_iter().flat_map(|m| m.keys()) {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn the_checker_finds_a_circle() {
    let edges = BTreeMap::from([
        ("a".to_string(), BTreeMap::from([("b".to_string(), "x".to_string())])),
        ("b".to_string(), BTreeMap::from([("a".to_string(), "y".to_string())])),
    ]);
    assert_eq!(find_cycle(&edges), Some(vec!["a".into(), "b".into(), "a".into()]));
    let mut paths = Vec::new();
    paths_after(
        "shared::{\n    cloud::CloudError,\n    secrets::{self, Secret},\n};",
        Vec::new(),
        &mut paths,
    );
    assert_eq!(
        paths,
        vec![
            vec!["shared", "cloud", "CloudError"],
            vec!["shared", "secrets", "self"],
            vec!["shared", "secrets", "Secret"]
        ]
    );
}
