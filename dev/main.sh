#!/usr/bin/env bash
# The main job, from a fresh clone: set up .venv/, tokenize TinyStories (or,
# offline, the embedded corpus), create the d4 model, build the trainer (CUDA
# when nvidia-smi sees a GPU, the CPU trainer otherwise), train, and continue
# "Once upon a time" with the trained model.
#
# Knobs (environment): STEPS (optimizer steps), BATCH (B), MAX_STORIES (stories
# per split to tokenize; "all" for the whole dataset), OUT (run folder).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
. dev/setup.sh

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  trainer=train_gpt2fp32cu; default_steps=2000; default_batch=32
  echo "main: GPU found ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)): CUDA trainer"
else
  trainer=train_gpt2; default_steps=200; default_batch=4
  echo "main: no GPU found: CPU trainer"
fi
steps="${STEPS:-$default_steps}"
batch="${BATCH:-$default_batch}"
max_stories="${MAX_STORIES:-50000}"
out="${OUT:-out/d4_main}"

# 1. Data: token shards + tokenizer file in data/tinystories/.
if [ "$max_stories" = all ]; then story_flag=(); else story_flag=(--max-stories "$max_stories"); fi
python prepro_tinystories.py --out-dir data/tinystories "${story_flag[@]}"

# 2. Model: the TinyStories baseline d4 (4 layers, 4 heads, 128 channels, T=256).
python create_model.py --config d4 --seed 0 --out out/d4.bin

# 3. Build and train.
make -s "$trainer"
rm -rf "$out"
"./$trainer" --model out/d4.bin \
  -i 'data/tinystories/TinyStories_train*.bin' -j data/tinystories/TinyStories_val.bin \
  --tokenizer data/tinystories/gpt2_tokenizer.bin -o "$out" \
  -b "$batch" -t 256 -x "$steps" -l 1e-3 --warmup 20 --lr-schedule cosine \
  --weight-decay 0.1 -v 50 -m 20 -s 100 -g 64

# 4. Sample from the last checkpoint.
final="$(ls "$out"/model_*.bin | sort | tail -1)"
python -m dev.sample --model "$final" --prompt "Once upon a time" \
  --temperature 0.8 --top-k 40 --max-new-tokens 96 --seed 1
echo "main: log in $out/log.jsonl, checkpoints in $out/"
