#!/usr/bin/env python3
"""The layering rules of docs/ARCHITECTURE.md, checked on the tree:

1. A file includes headers of its own layer or of layers below it, never
   above (the page sink is how multifd reaches the engine, not an include).
2. The CLI includes only the public header, the synthetic guest's and the
   control socket's headers, and its own; the control layer (QMP) only the
   public header and its own.
3. No include cycle between files.

Usage: check-layers.py SRC_DIR [INCLUDE_DIR]. Exit 1 with each violation.
"""
import os
import re
import sys

# Lower number = lower layer. A layer may include its own and lower ones.
RANK = {"util": 0, "proto": 1, "transport": 2, "dirty": 2, "ram": 3,
        "multifd": 4, "migration": 5, "guest": 6, "control": 6, "cli": 7}
CLI_ALLOWED = ("cli/", "guest/", "control/", "livemig.h", "livemig_testing.h")
CONTROL_ALLOWED = ("control/", "livemig.h", "jansson.h")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def main():
    src = sys.argv[1]
    inc = sys.argv[2] if len(sys.argv) > 2 else None
    graph, bad = {}, []
    for layer in sorted(os.listdir(src)):
        for name in sorted(os.listdir(os.path.join(src, layer))):
            if not name.endswith((".c", ".h")):
                continue
            path = f"{layer}/{name}"
            text = open(os.path.join(src, path), encoding="utf-8").read()
            deps = INCLUDE.findall(text)
            graph[path] = [d for d in deps if "/" in d]
            for dep in deps:
                if layer == "cli" and not dep.startswith(CLI_ALLOWED):
                    bad.append(f"{path}: the CLI includes {dep} (only livemig.h, guest/, "
                               "control/, cli/)")
                if layer == "control" and not dep.startswith(CONTROL_ALLOWED):
                    bad.append(f"{path}: the control layer includes {dep} (only livemig.h, "
                               "control/)")
                if "/" not in dep:
                    if dep not in ("livemig.h", "livemig_testing.h") and not (inc and os.path.exists(os.path.join(inc, dep))):
                        bad.append(f"{path}: includes {dep} without a layer")
                    continue
                dep_layer = dep.split("/")[0]
                if dep_layer not in RANK:
                    bad.append(f"{path}: includes {dep} from an unknown layer")
                elif layer not in RANK:
                    bad.append(f"{path}: {layer}/ is not a known layer")
                elif RANK[dep_layer] > RANK[layer]:
                    bad.append(f"{path}: includes {dep}, a layer above {layer}/ (an arrow up)")
    # Cycles: depth-first search over file includes.
    state = {}

    def visit(node, stack):
        state[node] = 1
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep] if dep in stack else [node, dep]
                bad.append("include cycle: " + " -> ".join(cycle))
            elif dep in graph and not state.get(dep):
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [node])
    for line in bad:
        print(line)
    print(f"{len(graph)} files, {len(bad)} violation(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
