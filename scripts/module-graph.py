#!/usr/bin/env python3
"""The service's module graph at any commit: which top-level modules of `src/` use which,
and every cycle among files.

    python3 scripts/module-graph.py            # the working tree
    python3 scripts/module-graph.py 7876c6f    # a commit (read with `git show`)

It reads the `crate::…` paths of every non-test file (`#[cfg(test)]` items and `tests.rs`
files left out), as `tests/api/architecture.rs` does for the check that fails
the build; this script only reports, so it can look at commits from before that check.
Output: one line per top-level module with the modules it uses, then each strongly
connected set of files (a cycle) with its size, and the largest files by line count.
"""

import re
import subprocess
import sys
from collections import defaultdict


def files_at(rev):
    if rev is None:
        out = subprocess.run(
            ["git", "ls-files", "src"], capture_output=True, text=True, check=True
        ).stdout
        paths = [p for p in out.split() if p.endswith(".rs")]
        return {p: open(p, encoding="utf-8").read() for p in paths}
    out = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, "src"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    paths = [p for p in out.split() if p.endswith(".rs")]
    return {
        p: subprocess.run(
            ["git", "show", f"{rev}:{p}"], capture_output=True, text=True, check=True
        ).stdout
        for p in paths
    }


def module_path(path):
    """src/flows/place_order/mod.rs -> ['flows', 'place_order']"""
    parts = path[len("src/") :].removesuffix(".rs").split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def without_test_items(text):
    """The code without its `#[cfg(test)]` items (a `mod tests;`, an inline test module, any
    other item), each cut to its `;` or the brace closing its body, as the architecture
    test reads it."""
    mark = "#[cfg(test)]"
    kept, rest = [], text
    while (at := rest.find(mark)) >= 0:
        kept.append(rest[:at])
        item = rest[at + len(mark) :]
        semi, brace = item.find(";"), item.find("{")
        if semi >= 0 and (brace < 0 or semi < brace):
            end = semi + 1
        elif brace >= 0:
            depth, end = 0, len(item)
            for i in range(brace, len(item)):
                if item[i] == "{":
                    depth += 1
                elif item[i] == "}":
                    depth -= 1
                    if depth == 0:
                        end = i + 1
                        break
        else:
            end = len(item)
        rest = item[end:]
    kept.append(rest)
    return "".join(kept)


IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def referenced_paths(code):
    """Every `crate::a::b` path, with `use crate::{a::b, c}` groups expanded (two levels)."""
    found = []
    for m in re.finditer(r"crate::", code):
        rest = code[m.end() :]
        if rest.startswith("{"):
            depth, name, i = 0, "", 1
            while i < len(rest):
                c = rest[i]
                if c == "{":
                    depth += 1
                elif c == "}":
                    if depth == 0:
                        break
                    depth -= 1
                elif c == "," and depth == 0:
                    name = ""
                elif depth == 0 and name == "" and (c.isalpha() or c == "_"):
                    ident = IDENT.match(rest, i).group(0)
                    after = rest[i + len(ident) :]
                    second = IDENT.match(after[2:]) if after.startswith("::") else None
                    found.append([ident] + ([second.group(0)] if second else []))
                    name = ident
                    i += len(ident) - 1
                i += 1
        else:
            segs = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(?:::([A-Za-z_][A-Za-z0-9_]*))?", rest)
            if segs:
                found.append([s for s in segs.groups() if s])
    return [p for p in found if p[0] != "self"]


def main():
    rev = sys.argv[1] if len(sys.argv) > 1 else None
    sources = files_at(rev)
    modules = {tuple(module_path(p)): p for p in sources}
    top_graph = defaultdict(set)
    file_graph = defaultdict(set)
    for path, text in sources.items():
        if path in ("src/main.rs", "src/lib.rs") or path.endswith("/tests.rs"):
            continue
        code = without_test_items(text)
        me = module_path(path)
        for ref in referenced_paths(code):
            if ref[0] != me[0]:
                top_graph[me[0]].add(ref[0])
            # The file the path lands in: the longest module prefix that is a file.
            for n in (2, 1):
                target = modules.get(tuple(ref[:n]))
                if target and target != path:
                    file_graph[path].add(target)
                    break
        top_graph.setdefault(me[0], set())

    print(f"# module graph of {rev or 'the working tree'}")
    for module in sorted(top_graph):
        print(f"{module:12} -> {', '.join(sorted(top_graph[module])) or '(nothing)'}")

    module_sccs = strongly_connected(top_graph, sorted(top_graph))
    print(f"\n# module cycles: {len(module_sccs)}")
    for scc in sorted(module_sccs, key=len, reverse=True):
        print(f"{len(scc)} modules: {' '.join(scc)}")

    sccs = strongly_connected(file_graph, sorted(sources))
    print(f"\n# file cycles: {len(sccs)}")
    for scc in sorted(sccs, key=len, reverse=True):
        print(f"{len(scc)} files: {' '.join(scc)}")

    print("\n# largest files (lines)")
    sizes = sorted(((t.count("\n"), p) for p, t in sources.items()), reverse=True)
    for lines, path in sizes[:8]:
        print(f"{lines:6} {path}")


def strongly_connected(graph, nodes):
    """Tarjan's algorithm: every set of two or more nodes that reach each other."""
    index, low, on_stack, stack, sccs, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(sorted(scc))

    sys.setrecursionlimit(10_000)
    for v in nodes:
        if v not in index:
            visit(v)
    return sccs


if __name__ == "__main__":
    main()
