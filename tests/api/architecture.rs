//! The module graph runs one way. Reads every `crate::…` path in `src/` (test code left
//! out) and checks that the top-level modules form no cycle and that each layer uses only
//! the layers below it:
//!
//! `domain` (with `retry` and `lifecycle`) ← `config` ← `store`, `upstream` ← `context`,
//! `jobs` ← `flows` ← `graphql` ← `http` ← `worker`, `app` ← `main`.
//!
//! The upstream simulators are a crate of their own (`sandbox/`, `cbtl-sandbox`), which the
//! service depends on and which never depends on the service.
//!
//! `cargo test --all-features --test api architecture -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules it names.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    collect(&root, &mut files);
    for file in files {
        let relative = file.strip_prefix(&root).expect("under src");
        let first = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default();
        let module = first.trim_end_matches(".rs").to_owned();
        if matches!(module.as_str(), "main" | "lib")
            || file.file_name().is_some_and(|n| n == "tests.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source");
        // Test code may reach anywhere (a client's tests start its simulator).
        let code = without_test_items(&text);
        let uses = graph.entry(module.clone()).or_default();
        for target in referenced_modules(&code) {
            if target != module {
                uses.insert(target);
            }
        }
    }
    graph
}

/// The code without its `#[cfg(test)]` items: a `mod tests;` declaration, an inline
/// `mod tests { … }` or any other item, each cut to its own end (its `;`, or the brace
/// that closes its body), so the code after a test item is still read.
fn without_test_items(text: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut kept = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        kept.push_str(&rest[..at]);
        let item = &rest[at + MARK.len()..];
        let semicolon = item.find(';');
        let brace = item.find('{');
        let end = match (semicolon, brace) {
            (Some(semi), Some(open)) if semi < open => semi + 1,
            (Some(semi), None) => semi + 1,
            (_, Some(open)) => {
                let mut depth = 0usize;
                let mut end = item.len();
                for (i, c) in item[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    kept.push_str(rest);
    kept
}

fn collect(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src") {
        let path = entry.expect("entry").path();
        // `src/bin/*` are binaries of their own (the soak), outside the library's graph:
        // their `crate::` is their own crate.
        if path.ends_with("src/bin") {
            continue;
        }
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The first segment after each `crate::`, including those inside `use crate::{a, b::c}`.
fn referenced_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: those at brace depth 0 after `{` or `,`.
            let mut depth = 0;
            let mut expect_name = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect_name = true,
                    c if expect_name && depth == 0 && c.is_ascii_alphabetic() => {
                        found.insert(ident(&group[i..]));
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found.retain(|m| m != "self");
    found
}

/// The modules each layer may not use: everything above it.
const LAYERS: &[&[&str]] = &[
    &["domain", "retry", "lifecycle"],
    &["config", "crash"],
    &["store", "upstream", "auth", "quota", "rate_limit"],
    &["context", "jobs", "telemetry", "events"],
    &["flows"],
    &["graphql"],
    &["http"],
    &["worker", "app", "fuzzing"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

#[test]
fn the_module_graph_has_no_cycle_and_runs_one_way() {
    let graph = module_graph();
    for (module, uses) in &graph {
        println!(
            "{module} -> {}",
            uses.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let mut upward = Vec::new();
    for (module, uses) in &graph {
        let Some(mine) = layer_of(module) else {
            panic!("`{module}` has no layer in tests/api/architecture.rs: place it");
        };
        for used in uses {
            let Some(theirs) = layer_of(used) else {
                continue;
            };
            if theirs > mine {
                upward.push(format!("{module} uses {used}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "modules that use a layer above them: {upward:?}"
    );
    // The database and the clients meet only in the flows: what both need (the order's
    // state, Okya's approval and fulfilment) lives in the domain.
    for (a, b) in [("store", "upstream"), ("upstream", "store")] {
        assert!(
            !graph.get(a).is_some_and(|uses| uses.contains(b)),
            "`{a}` uses `{b}`: move what they share into `domain`"
        );
    }
    // Within a layer, modules may use each other only without a cycle.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) {
        match state.get(node) {
            Some(2) => return,
            Some(1) => panic!("a cycle: {} -> {node}", path.join(" -> ")),
            _ => {}
        }
        state.insert(node, 1);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, state, path);
        }
        path.pop();
        state.insert(node, 2);
    }
    for module in graph.keys() {
        visit(module, &graph, &mut state, &mut Vec::new());
    }
}

#[test]
fn test_items_are_cut_to_their_end_and_the_code_after_them_is_read() {
    let code = without_test_items(
        "use crate::a;\n#[cfg(test)]\nmod tests;\nuse crate::b;\n#[cfg(test)]\nmod inline {\n    fn f() { crate::c::x(); }\n}\nfn g() { crate::d::y(); }\n",
    );
    assert_eq!(
        referenced_modules(&code).into_iter().collect::<Vec<_>>(),
        ["a", "b", "d"]
    );
}

#[test]
fn the_reader_sees_grouped_and_nested_paths() {
    let found = referenced_modules(
        "use crate::{\n    context::AppState,\n    store::{self, jobs::Claimed},\n    x,\n};\nlet a = crate::domain::Money::zero;",
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["context", "domain", "store", "x"]
    );
}

/// The sandbox crate speaks the upstreams' contracts with wire types of its own: if it could
/// reach the service's clients, a change to a client's request shape could quietly change
/// the simulator too. Its manifest names no dependency on the service (nor any path
/// dependency, through which one could come), and none of its files names the service's
/// crate.
#[test]
fn the_sandbox_crate_does_not_depend_on_the_service() {
    let sandbox = Path::new(env!("CARGO_MANIFEST_DIR")).join("sandbox");
    let manifest = std::fs::read_to_string(sandbox.join("Cargo.toml")).expect("sandbox/Cargo.toml");
    let mut table = "";
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            table = line;
            continue;
        }
        if table.contains("dependencies") && !line.starts_with('#') {
            let name = line.split('=').next().unwrap_or_default().trim();
            assert!(
                !matches!(name, "cbtl-bff" | "cbtl_bff") && !line.contains("cbtl-bff"),
                "sandbox/Cargo.toml depends on the service in {table}: {line}"
            );
            assert!(
                !line.contains("path"),
                "sandbox/Cargo.toml has a path dependency in {table}: {line}"
            );
        }
    }
    fn every_file(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("a sandbox folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                every_file(&path, files);
            } else {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    every_file(&sandbox, &mut files);
    assert!(files.len() > 10, "the sandbox's files are found: {files:?}");
    for file in files {
        let text =
            String::from_utf8_lossy(&std::fs::read(&file).expect("a sandbox file")).into_owned();
        assert!(
            !text.contains("cbtl_bff"),
            "{} names the service's crate",
            file.display()
        );
    }
}
