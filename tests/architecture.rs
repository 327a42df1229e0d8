//! The collector library's modules import one way: the graph of which module uses which (from the
//! `crate::…`, `super::…` and child-module paths in `src/`, test code left out) has no cycle.
//!
//! A parent module that only declares or re-exports its children (`mod x;`, `pub use x::Y;`)
//! does not depend on them; any other path it names does, including the items of a group
//! (`use super::{a, B};`). No loop is allowed, in the collector (`src/`) or in the emulator
//! (`crates/emulator/src`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

/// Every `.rs` file under `dir` (recursively), sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` → `a`; `src/lib.rs` → ``.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The source without comments and without `#[cfg(test)]` items (a test may use anything).
fn production_code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with("#[cfg(test)]") {
            // Skip the item that follows: up to its closing brace, or its `;`.
            let (mut depth, mut opened) = (0i32, false);
            i += 1;
            while i < lines.len() {
                let l = lines[i];
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                opened |= l.contains('{');
                i += 1;
                if (opened && depth <= 0) || (!opened && l.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        let line = lines[i];
        let code = match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
        i += 1;
    }
    out
}

/// The longest module that `path` (a `::`-separated path) starts with.
fn resolve<'a>(path: &str, modules: &'a BTreeSet<String>) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| modules.get(&parts[..n].join("::")))
}

/// Module → the modules it uses.
fn dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.retain(|f| f != &src.join("main.rs"));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let crate_path = Regex::new(r"\bcrate::([A-Za-z_]\w*(?:::[A-Za-z_]\w*)*)(::\{)?").unwrap();
    let super_path = Regex::new(r"\bsuper::(?:([A-Za-z_]\w*)|(\{))").unwrap();
    let declared = Regex::new(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;").unwrap();
    let reexport = Regex::new(r"(?s)pub(?:\([^)]*\))?\s+use\s[^;]*;").unwrap();
    let ident_path = Regex::new(r"[A-Za-z_][\w:]*").unwrap();

    let mut graph = BTreeMap::new();
    for file in &files {
        let me = module_of(src, file);
        let code = production_code(&std::fs::read_to_string(file).unwrap());
        let mut paths: Vec<String> = Vec::new();
        // `a::{b, c::d}`: every item of the group that starts at `start` (nested groups flattened).
        let group = |start: usize| -> Vec<String> {
            let (mut depth, mut end) = (1, start);
            for (i, c) in code[start..].char_indices() {
                depth += match c {
                    '{' => 1,
                    '}' => -1,
                    _ => 0,
                };
                if depth == 0 {
                    end = start + i;
                    break;
                }
            }
            ident_path
                .find_iter(&code[start..end])
                .map(|m| m.as_str().to_owned())
                .collect()
        };
        for m in crate_path.captures_iter(&code) {
            let base = m[1].to_owned();
            if let Some(g) = m.get(2) {
                paths.extend(group(g.end()).iter().map(|item| format!("{base}::{item}")));
            }
            paths.push(base);
        }
        // `super::x` from `a/b.rs` is `a::x`; from `a/b/mod.rs` (module `a::b`) it is `a::x` too.
        let parent = {
            let mut p: Vec<&str> = me.split("::").collect();
            p.pop();
            p.join("::")
        };
        let under_parent = |item: &str| {
            if parent.is_empty() {
                item.to_owned()
            } else {
                format!("{parent}::{item}")
            }
        };
        for m in super_path.captures_iter(&code) {
            match m.get(2) {
                Some(g) => paths.extend(group(g.end()).iter().map(|item| under_parent(item))),
                None => paths.push(under_parent(&m[1])),
            }
        }
        // Children named by their own path (`x::Item` after `mod x;`), not just declared or
        // re-exported.
        let body = reexport.replace_all(&code, "");
        for child in declared.captures_iter(&code) {
            let full = if me.is_empty() {
                child[1].to_owned()
            } else {
                format!("{me}::{}", &child[1])
            };
            let named = Regex::new(&format!(r"(?:^|[^\w:]){}::", &child[1])).unwrap();
            if modules.contains(&full) && named.is_match(&body) {
                paths.push(full);
            }
        }
        let uses: BTreeSet<String> = paths
            .iter()
            .filter_map(|p| resolve(p, &modules))
            .filter(|m| **m != me && !m.is_empty())
            .cloned()
            .collect();
        graph.insert(me, uses);
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.insert(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    self.found.push(scc);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

/// The edges inside one cycle, for the failure message.
fn describe(graph: &BTreeMap<String, BTreeSet<String>>, scc: &BTreeSet<String>) -> String {
    let mut out = String::new();
    for a in scc {
        for b in graph[a].iter().filter(|b| scc.contains(*b)) {
            out.push_str(&format!("  {a} -> {b}\n"));
        }
    }
    out
}

#[test]
fn modules_import_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = dependencies(&src);
    assert!(graph.len() > 50, "read {} modules", graph.len());
    let mut bad = String::new();
    for scc in cycles(&graph) {
        bad.push_str(&format!(
            "a cycle among {scc:?}:\n{}\n",
            describe(&graph, &scc)
        ));
    }
    assert!(
        bad.is_empty(),
        "modules import each other in a loop:\n{bad}"
    );
}

/// The check itself finds a loop: two modules that name each other.
#[test]
fn the_check_finds_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub struct B(super::a::A);\n").unwrap();
    let graph = dependencies(src);
    let found = cycles(&graph);
    assert_eq!(found.len(), 1, "{graph:?}");
    assert!(found[0].contains("a") && found[0].contains("b"));
    // A test module's imports do not count.
    std::fs::write(
        src.join("b.rs"),
        "pub struct B;\n#[cfg(test)]\nmod tests {\n    use super::super::a::A;\n}\n",
    )
    .unwrap();
    assert!(cycles(&dependencies(src)).is_empty());
}

/// The emulator's modules import one way, no loop allowed: shared state (`state`) and plain data
/// (`error`, `faults`, `graph_state`, …) below the handlers, `server` on top.
#[test]
fn emulator_modules_import_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/emulator/src");
    let graph = dependencies(&src);
    assert!(graph.len() > 10, "read {} modules", graph.len());
    // The emulator names its siblings with `super::`: make sure those paths are read.
    assert!(graph["server"].contains("api"), "{graph:?}");
    let mut bad = String::new();
    for scc in cycles(&graph) {
        bad.push_str(&format!(
            "a cycle among {scc:?}:\n{}\n",
            describe(&graph, &scc)
        ));
    }
    assert!(
        bad.is_empty(),
        "the emulator's modules import each other in a loop:\n{bad}"
    );
}

/// Grouped imports count: `use super::{b, C};` makes `a` depend on `b` and on the parent.
#[test]
fn the_check_reads_grouped_imports() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("p")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod p;\n").unwrap();
    std::fs::write(
        src.join("p/mod.rs"),
        "pub mod a;\npub mod b;\npub struct C(a::A);\n",
    )
    .unwrap();
    std::fs::write(src.join("p/a.rs"), "use super::{b, C};\npub struct A;\n").unwrap();
    std::fs::write(src.join("p/b.rs"), "pub struct B;\n").unwrap();
    let graph = dependencies(src);
    assert!(
        graph["p::a"].contains("p::b") && graph["p::a"].contains("p"),
        "{graph:?}"
    );
    let found = cycles(&graph);
    assert_eq!(found.len(), 1, "p and p::a name each other: {graph:?}");
}
