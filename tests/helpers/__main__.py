"""Summarize FP32_ERROR_LOG files (see tests/helpers/compare.py, FP32_ERROR_FACTOR): the worst
ratios (our error - floor) / PyTorch fp32's error, and of the fixed tolerances error / atol.
Run from the repository root: python -m tests.helpers FILE [FILE ...]
"""

import json
import sys

from .compare import FP32_ERROR_FACTOR


def main(paths):
    rows = [json.loads(line) for path in paths for line in open(path)]
    fp32 = sorted(((r["err"] - r["floor"]) / max(r["torch_err"], 1e-30), r["name"]) for r in rows
                  if "torch_err" in r)
    fixed = sorted((r["err"] / r["atol"], r["name"]) for r in rows if "atol" in r and r["atol"] > 0)
    print(f"{len(fp32)} float64-rule comparisons; worst (our error - floor) / PyTorch fp32's "
          f"(limit {FP32_ERROR_FACTOR:g}):")
    for ratio, name in fp32[-5:][::-1]:
        print(f"  {ratio:6.2f}  {name}")
    print(f"{len(fixed)} fixed-tolerance comparisons; worst error / tolerance (limit 1):")
    for ratio, name in fixed[-5:][::-1]:
        print(f"  {ratio:6.3f}  {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
