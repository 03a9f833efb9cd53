"""Rewrites a CUDA source file so g++ can compile it against dev/cuda/emu/cuda_emu.h.

Usage: python dev/cuda/emu/translate.py IN.cu OUT.cpp

Two rewrites, each keeping the line count so compiler messages and __LINE__ still
point into IN.cu (a #line directive names it):
  kernel<<<grid, block[, shmem[, stream]]>>>(args)  ->  ::emu::Launch(grid, block...).with(kernel, "kernel")(args)
  extern __shared__ [__align__(n)] T name[];        ->  T* name = (T*)::emu::dynamic_shared();
Everything else passes through unchanged. Exits 1 with a message if IN has a
launch it cannot parse.
"""
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


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: translate.py IN.cu OUT.cpp")
    src_path, out_path = sys.argv[1], sys.argv[2]
    with open(src_path) as f:
        src = f.read()
    try:
        body = translate(src)
    except ValueError as e:
        sys.exit(f"error: {src_path}: {e}")
    with open(out_path, "w") as f:
        f.write(f'#line 1 "{src_path}"\n' + body)


if __name__ == "__main__":
    main()
