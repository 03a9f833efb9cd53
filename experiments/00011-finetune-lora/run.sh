#!/usr/bin/env bash
# Experiment 00011: fine-tuning the d4 story model on a small, distinct text (this project's own
# documentation), in full and with LoRA at two ranks. See README.md beside it.
#
#   bash experiments/00011-finetune-lora/run.sh
#
# Steps, each skipped when its result is already there (so the script resumes):
#   1. the base model: 00001's CPU recipe with seed 0 (create_model.py --seed 0, trainer --seed
#      1337, DATA=embedded: 600 steps of d4 on the 48,145-token story corpus) into $WORK/base; the
#      fine-tunes start from its saved checkpoint with the lowest validation loss (00001's
#      analyze.py best-checkpoint);
#   2. the fine-tuning shards (prepare.py): 25,596 train and 5,268 validation tokens of docs;
#   3. "before": the base model evaluated (one step at -l 0, which leaves every weight as it is:
#      p (1 - 0*wd) - 0 * m_hat / ...) on the docs validation split and on the story validation
#      split (--eval-sets stories=...);
#   4. per seed (1, 2: the fine-tuning data order) and method: 200 steps on the docs, B=4, T=256
#      (7.5 epochs of the 25 batches), AdamW lr 1e-3 (the base run's), 10 warmup steps, cosine to
#      1e-4, weight decay 0.1, clip 1, evaluating both validation splits every 10 steps:
#        full      every parameter trains
#        lora-r4   LoRA rank 4, alpha 8 (scale 2) on qkvw, attprojw, fcw, fcprojw
#        lora-r32  LoRA rank 32, alpha 64 (scale 2) on the same matrices
#        lora-r4-lr1e-2, lora-r32-lr1e-2   the same at lr 1e-2 (added after the first six runs: at
#                  the base run's lr the adapters barely moved the docs loss; LoRA is commonly run
#                  at a larger lr than a full fine-tune, and this arm says how much of the gap is lr)
#        lora-r128 rank 128 = C, alpha 256 (scale 2), lr 1e-3: adapters of full rank, so every delta of
#                  the four block matrices is reachable; what stays frozen is wte (the tied output
#                  layer too), wpe, the biases and the LayerNorms (added with the lr arm: it separates
#                  "the rank is too small" from "the frozen tensors limit it")
#      each run's log is copied to runs/<method>_seed<k>/log.jsonl when it completes;
#   5. the table and figures (analyze.py).
#
# Napkin math (d4: P = 7,265,024; B*T = 1,024 tokens): a full step is ~45 GFLOP, 89% of it the
# classifier against the 50,304-row wte (00001's run.sh), ~0.45 s on 2 cores. A LoRA step runs
# the same forward and the same backward through the activations but skips every weight
# gradient, wte's (a third of the classifier's work) included: about 2/3 of a full step. With 20
# evaluations of 5 + 14 batches (~0.15 s each) a run is ~2-3 min; the 12 runs ~30 min, the base
# run (00001) ~6 min plus its samples.
#
# Knobs: WORK (default out/00011: models, shards, checkpoints; not committed), THREADS (trainer
# --threads, default 0 = all cores).
set -euo pipefail
exp="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$exp/../.." && pwd)"
cd "$repo"
. dev/setup.sh
work="${WORK:-out/00011}"
threads="${THREADS:-0}"
rel_exp="experiments/00011-finetune-lora"
stories_val=data/tinystories_embedded/TinyStories_val.bin
steps=200

complete() {  # log $1 holds a record of step $2
  [ -f "$1" ] && python -c "import json,sys; sys.exit(0 if any(json.loads(l).get('step') == $2 for l in open('$1') if l.strip()) else 1)"
}

# 1. base model
if [ ! -f "$work/base/model_000600.bin" ]; then
  RUN="$work/base" DATA=embedded MODEL_SEED=0 SEED=1337 THREADS="$threads" \
    bash experiments/00001-tinystories-baseline/run.sh
fi
mkdir -p "$rel_exp/runs/base"
cp "$work/base/log.jsonl" "$rel_exp/runs/base/log.jsonl"
base="$(python experiments/00001-tinystories-baseline/analyze.py best-checkpoint "$work/base")"
echo "00011: base model $base"

# 2. data
python "$exp/prepare.py" --out-dir "$work/docs"
make -s train_gpt2
common=(-i "$work/docs/docs_train.bin" -j "$work/docs/docs_val.bin" -m -1 --eval-sets "stories=$stories_val"
        -b 4 -t 256 --warmup 10 --lr-schedule cosine --weight-decay 0.1 -s 0 --threads "$threads")

# 3. before
if ! complete "$rel_exp/runs/before/log.jsonl" 1; then
  rm -rf "$work/before"
  ./train_gpt2 --model "$base" "${common[@]}" -x 1 -l 0 -v 1 --seed 1 -o "$work/before"
  mkdir -p "$rel_exp/runs/before" && cp "$work/before/log.jsonl" "$rel_exp/runs/before/log.jsonl"
fi

# 4. fine-tunes
for seed in 1 2; do
  for method in full lora-r4 lora-r32 lora-r4-lr1e-2 lora-r32-lr1e-2 lora-r128; do
    name="${method}_seed${seed}"
    if complete "$rel_exp/runs/$name/log.jsonl" "$steps"; then echo "00011: $name is complete"; continue; fi
    lr=1e-3
    case "$method" in
      full)      flags=() ;;
      lora-r4*)  flags=(--lora-rank 4 --lora-alpha 8 --lora-targets qkvw,attprojw,fcw,fcprojw) ;;
      lora-r32*) flags=(--lora-rank 32 --lora-alpha 64 --lora-targets qkvw,attprojw,fcw,fcprojw) ;;
      lora-r128) flags=(--lora-rank 128 --lora-alpha 256 --lora-targets qkvw,attprojw,fcw,fcprojw) ;;
    esac
    case "$method" in *-lr1e-2) lr=1e-2 ;; esac
    rm -rf "${work:?}/$name"
    ./train_gpt2 --model "$base" "${common[@]}" -x "$steps" -l "$lr" -v 10 --seed "$seed" -o "$work/$name" \
      ${flags[@]+"${flags[@]}"}
    mkdir -p "$rel_exp/runs/$name" && cp "$work/$name/log.jsonl" "$rel_exp/runs/$name/log.jsonl"
  done
done

# 5. table and figures
python "$exp/analyze.py" --exp-dir "$rel_exp"
echo "00011: table $rel_exp/results.md, figures $rel_exp/*.png"
