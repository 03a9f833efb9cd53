"""The data of this experiment: `python -m dev.mod_arith` under its old name.

Same flags, same output bytes (addition mod p example shards and tokenizer file; see
dev/mod_arith.py). cpu.json's "prepare" command still calls this file, as its recorded runs
(runs-cpu/*/*/run.json) did: a changed command would mark those runs stale.
Needs `dev` importable: the editable install of dev/setup.sh, or the runner's PYTHONPATH.
Usage: python experiments/00010-delayed-generalization/prepare_data.py [--out-dir data/mod97]
           [--train-fraction 0.5] [--seed 0] [--modulus 97]
"""

from dev.errors import cli_main
from dev.mod_arith import main

if __name__ == "__main__":
    cli_main(main)
