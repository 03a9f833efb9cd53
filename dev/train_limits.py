"""The bounds on what a run may ask for: llmc/train_limits.h, for the Python readers.

A value a trainer's flag may not take cannot come in through a file either, so
dev/train_state.py and dev/parity_files.py refuse headers beyond these, as
llmc/train_state.h and llmc/parity.h do.
"""

MAX_STEPS = 1 << 30            # TRAIN_MAX_STEPS: --steps, a state's step and total steps
MAX_TOKENS_PER_STEP = 1 << 24  # TRAIN_MAX_TOKENS_PER_STEP: B*T of a batch, a parity batch, a state
