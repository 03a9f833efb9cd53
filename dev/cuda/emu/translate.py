"""Rewrites a CUDA source file so g++ can compile it against dev/cuda/emu/cuda_emu.h.

Usage: python dev/cuda/emu/translate.py IN.cu OUT.cpp

Two rewrites, each keeping the line count so compiler messages and __LINE__ still
point into IN.cu (a #line directive names it):
  kernel<<<grid, block[, shmem[, stream]]>>>(args)  ->  ::emu::Launch(grid, block...).with(kernel, "kernel")(args)
  extern __shared__ [__align__(n)] T name[];        ->  T* name = (T*)::emu::dynamic_shared();
Included CUDA headers are translated too: each `#include "X.cuh"` (found beside the file
that includes it, else below the current folder, as make's -I. does) is replaced by X.cuh's
translated text between #line directives, recursively. The .cuh files carry include guards,
so one included twice (or also reached through a plain header that g++ includes) compiles
once. A quoted include of anything else passes through, rewritten to the path it resolves to
beside its file, so g++ finds it from the output's folder. Everything else passes through
unchanged. Exits 1 with a message if IN has a launch it cannot parse.
"""
from __future__ import annotations

import os
import re
import sys

LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:\s*<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)
EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?([A-Za-z_][\w:]*)\s+([A-Za-z_]\w*)\s*\[\s*\]\s*;")


def translate(src: str) -> str:
    def launch(m: re.Match) -> str:
        kernel, cfg = m.group(1), m.group(2)
        name = re.sub(r"\s+", "", kernel)
        out = f'::emu::Launch({cfg}).with({kernel}, "{name}")('
        return out + "\n" * (m.group(0).count("\n") - out.count("\n"))

    def shared(m: re.Match) -> str:
        t, name = m.group(1), m.group(2)
        return f"{t}* {name} = ({t}*)::emu::dynamic_shared();" + "\n" * m.group(0).count("\n")

    out = LAUNCH.sub(launch, src)
    out = EXTERN_SHARED.sub(shared, out)
    if "<<<" in out:
        line = out[: out.index("<<<")].count("\n") + 1
        raise ValueError(f"line {line}: a kernel launch the translator cannot parse")
    return out


INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[^\n]*$', re.M)


def resolve(name: str, from_dir: str) -> str | None:
    for d in (from_dir, "."):
        p = os.path.normpath(os.path.join(d, name))
        if os.path.isfile(p):
            return p
    return None


def expand(path: str, stack: tuple = (), seen: set | None = None) -> str:
    """The text of path with its quoted .cuh includes inlined (translated later, in one pass);
    a .cuh already inlined (seen) becomes an empty line (its include guard would empty it)."""
    seen = set() if seen is None else seen
    if path in stack:
        raise ValueError(f"{path}: recursive include through {' -> '.join(stack)}")
    with open(path) as f:
        src = f.read()
    from_dir = os.path.dirname(path) or "."

    def include(m: re.Match) -> str:
        name = m.group(1)
        found = resolve(name, from_dir)
        if found is None:
            return m.group(0)  # left to g++'s include path
        if not found.endswith(".cuh"):
            return f'#include "{found}"' if found != os.path.normpath(name) else m.group(0)
        if found in seen:
            return ""
        seen.add(found)
        line = src[: m.start()].count("\n") + 1
        body = expand(found, stack + (path,), seen)
        return f'#line 1 "{found}"\n{body}\n#line {line + 1} "{path}"'

    return INCLUDE.sub(include, src)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: translate.py IN.cu OUT.cpp")
    src_path, out_path = sys.argv[1], sys.argv[2]
    try:
        body = translate(expand(src_path))
    except ValueError as e:
        sys.exit(f"error: {src_path}: {e}")
    with open(out_path, "w") as f:
        f.write(f'#line 1 "{src_path}"\n' + body)


if __name__ == "__main__":
    main()
