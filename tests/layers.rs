//! The source tree's layering: no two modules of the library use each other, directly or around
//! a longer circle, at the level of top folders (`weights`, `models`, …) nor one level down
//! (`weights::gguf`, `models::smolvlm`, …).
//!
//! A module "uses" another when its non-test code names it through `crate::…` or `super::…`.
//! A folder's `mod.rs` naming its own children (`gguf::read`) is how a folder presents itself,
//! not a use, and is not counted. `cargo test --test layers -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path below the crate root, as segments (`["weights", "gguf"]`).
type Module = Vec<String>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            // The CLI is a binary of its own, on top of the library.
            if path.file_name().is_some_and(|n| n != "bin") {
                source_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/weights/gguf.rs` → `weights::gguf`; `src/weights/mod.rs` → `weights`; `src/lib.rs` → root.
fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut segments: Module = relative
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if segments.last().is_some_and(|s| s == "mod" || s == "lib") {
        segments.pop();
    }
    segments
}

/// The code a module ships: comment lines dropped and everything from a `#[cfg(test)]` on cut
/// (tests sit at the end of a file and may reach anywhere).
fn shipped_code(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Every path that follows `prefix` in `code`, brace groups expanded:
/// `crate::{a::b, c::{d, e}}` gives `a::b`, `c::d` and `c::e`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        // `my_crate::` or `xsuper::` are other names.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut out = Vec::new();
        expand(rest, Vec::new(), &mut out);
        paths.extend(out);
    }
    paths
}

/// Reads one path (or brace group) at the start of `text`, appending each full path to `out`;
/// returns how many bytes it read.
fn expand(text: &str, base: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let blank = |at: usize| text[at..].len() - text[at..].trim_start().len();
    let mut path = base;
    let mut at = 0;
    loop {
        if text[at..].starts_with('{') {
            at += 1;
            loop {
                at += blank(at);
                if text[at..].is_empty() || text[at..].starts_with('}') {
                    return (at + 1).min(text.len());
                }
                at += expand(&text[at..], path.clone(), out);
                at += blank(at);
                if text[at..].starts_with(',') {
                    at += 1;
                } else if !text[at..].starts_with('}') {
                    return at;
                }
            }
        }
        let tail = &text[at..];
        let name_len = tail
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        path.push(tail[..name_len].to_string());
        at += name_len;
        if text[at..].starts_with("::") {
            at += 2;
        } else {
            out.push(path);
            return at;
        }
    }
}

/// The module a path names, truncated to `depth`: the longest prefix that is a module.
fn target(path: &[String], modules: &BTreeSet<Module>, depth: usize) -> Option<Module> {
    (1..=path.len().min(depth))
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
}

/// Who uses whom, modules cut to `depth` segments (the root, `lib.rs`, is left out: it only
/// gathers the public face).
fn graph(depth: usize) -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        let code = shipped_code(&text);
        // `super::` from `weights/gguf.rs` and from `weights/mod.rs` alike is one step up.
        let parent: Module = module[..module.len() - 1].to_vec();
        let mut named = paths_after(&code, "crate::");
        for path in paths_after(&code, "super::") {
            let mut full = parent.clone();
            full.extend(path);
            named.push(full);
        }
        let from: Module = module.iter().take(depth).cloned().collect();
        for path in named {
            if let Some(to) = target(&path, &modules, depth) {
                if to != from && !to.is_empty() {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
        edges.entry(from).or_default();
    }
    edges
}

/// A circle in the graph, if there is one, as the modules around it.
fn circle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        marks: &mut BTreeMap<Module, Mark>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|m| m == node).unwrap_or(0);
                let mut found = stack[start..].to_vec();
                found.push(node.clone());
                return Some(found);
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, marks, stack) {
                return Some(found);
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut marks, &mut Vec::new()))
}

fn show(edges: &BTreeMap<Module, BTreeSet<Module>>) -> String {
    edges
        .iter()
        .map(|(from, to)| {
            let to: Vec<String> = to.iter().map(|m| m.join("::")).collect();
            format!("{} -> {}", from.join("::"), to.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_no_circle(depth: usize) {
    let edges = graph(depth);
    println!("{}\n", show(&edges));
    if let Some(found) = circle(&edges) {
        let names: Vec<String> = found.iter().map(|m| m.join("::")).collect();
        panic!(
            "modules use each other: {}\n\nthe whole graph:\n{}",
            names.join(" -> "),
            show(&edges)
        );
    }
}

#[test]
fn top_folders_form_layers() {
    assert_no_circle(1);
}

#[test]
fn modules_one_level_down_form_layers() {
    assert_no_circle(2);
}

#[test]
fn the_checker_sees_paths_and_circles() {
    let code =
        "use crate::{weights::{gguf::Gguf, Stored}, error::Error};\nlet x = super::quant::q8(1);";
    let crate_paths = paths_after(code, "crate::");
    let joined: Vec<String> = crate_paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        ["weights::gguf::Gguf", "weights::Stored", "error::Error"]
    );
    let super_paths = paths_after(code, "super::");
    assert_eq!(super_paths, [vec!["quant", "q8"]]);
    assert!(paths_after("let my_crate::x = 1;", "crate::").is_empty());

    let m = |s: &str| vec![s.to_string()];
    let mut edges = BTreeMap::new();
    edges.insert(m("a"), BTreeSet::from([m("b")]));
    edges.insert(m("b"), BTreeSet::from([m("c")]));
    edges.insert(m("c"), BTreeSet::new());
    assert_eq!(circle(&edges), None);
    edges.insert(m("c"), BTreeSet::from([m("a")]));
    assert_eq!(circle(&edges), Some(vec![m("a"), m("b"), m("c"), m("a")]));
}
