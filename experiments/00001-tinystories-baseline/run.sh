#!/usr/bin/env bash
# Experiment 00001: the TinyStories baseline d4 (L=4, NH=4, C=128, maxT=256,
# V=50257), from data to samples in one command. See README.md beside it.
#
#   bash experiments/00001-tinystories-baseline/run.sh                 # all of TinyStories
#   DATA=embedded bash experiments/00001-tinystories-baseline/run.sh   # the shipped corpus
#
# ---- napkin math -------------------------------------------------------------
# Parameters N (create_model.py --config d4 --dry-run prints the same table):
#   wte  Vp*C       = 50304*128            = 6,438,912   (Vp = V padded to 128)
#   wpe  maxT*C     = 256*128              =    32,768
#   blocks L*(12*C^2 + 13*C) = 4*198,272   =   793,088
#   lnf  2*C                               =       256
#   N                                      = 7,265,024   (29,061,120-byte checkpoint)
# 89% of N is wte, and because wte is tied to the output layer, 89% of the
# FLOPs below are the classifier (B*T, C) x (C, Vp): this model is a big
# vocabulary with a small transformer in front of it.
#
# Tokens per step = B*T. FLOPs per step (forward + backward = 3 x forward):
#   6*N*B*T                 every weight: 2 FLOPs per token forward, 4 backward
# + 6*L*T*T*C*B             attention scores Q.K^T and att.V: forward 2*2*T*T*C/2
#                           per layer and sequence (causal: half the T*T pairs),
#                           times 3 for the backward pass
#   B=4,  T=256:  1,024 tokens, 44.64 + 0.81 GFLOP =  45.4 GFLOP/step
#   B=8,  T=256:  2,048 tokens, 89.27 + 1.61 GFLOP =  90.9 GFLOP/step
#   B=64, T=256: 16,384 tokens, 714.2 + 12.9 GFLOP = 727.1 GFLOP/step
# (LayerNorm, GELU, softmax and AdamW are O(N + B*T*C) memory-bound work, left out.)
#
# Expected time
#   2 CPU cores (AMD EPYC, OpenMP, OpenBLAS), measured here with train_gpt2:
#     B=4: 453 ms/step (2,276 tok/s, ~100 GFLOP/s); B=8: 947 ms/step (2,170 tok/s).
#     The default CPU run (B=4, 600 steps) is ~4.5 min of training plus validation
#     on an idle machine; the two committed runs took 12.7 and 13.4 min sharing
#     the 2 cores with other jobs.
#     One epoch of full TinyStories (925,653,391 train tokens, the count llm.c's
#     tinystories.py prints for the GPT-2 tokenizer) is 904k steps at B=4:
#     ~4.7 days. Not a CPU job.
#   1 H100 SXM (estimate, not measured: no GPU was lent to the session that ran
#     this experiment). train_gpt2fp32cu runs its matmuls on TF32 tensor cores
#     by default (--tf32 1). Two floors at B=64 (datasheet peaks: 495 TFLOP/s
#     dense TF32, 67 TFLOP/s fp32 without tensor cores, 3.35 TB/s HBM3):
#       compute: 727 GFLOP at a realistic 150-250 TFLOP/s TF32    = 3-5 ms
#       memory:  the logits (B*T, Vp) = 16,384 x 50,304 floats = 3.3 GB are
#                written by the classifier matmul, read and overwritten with
#                dlogits by the fused softmax/loss, and read by the two backward
#                matmuls: ~5 passes = 16.5 GB at ~3 TB/s                = 5.5 ms
#     so ~10-15 ms/step (~1.1-1.6M tok/s); the default GPU run (20,000 steps,
#     328M tokens, ~0.35 epoch) takes ~4-5 min plus evaluation, one full epoch
#     (56.5k steps at B=64) ~10-15 min. With --tf32 0 the compute floor is
#     727 GFLOP / ~40 TFLOP/s = ~18 ms, so ~25 ms/step.
#
# ---- knobs (environment) -----------------------------------------------------
#   DATA        full (default: download + tokenize all of TinyStories, ~1.5 GB
#               archive, once) or embedded (the 320-story corpus in
#               dev/data/embedded_stories/, no network)
#   TRAINER     auto (default: CUDA when nvidia-smi sees a GPU), cpu or cuda
#   STEPS B LR WARMUP VAL_EVERY VAL_BATCHES SAVE_EVERY   training (defaults below)
#   MODEL_SEED  create_model.py --seed (default 0)
#   SEED        trainer --seed: data order and samples (default 1337)
#   TRAIN_FLAGS extra trainer flags, e.g. "--tf32 0" for the CUDA trainer
#   THREADS     CPU trainer threads (default 0 = all cores; the trainer's results
#               do not depend on it, so use 1 on a machine others are loading)
#   RUN         output folder (default experiments/00001-tinystories-baseline/runs/<name>)
set -euo pipefail
exp="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$exp/../.." && pwd)"
cd "$repo"
. dev/setup.sh

data="${DATA:-full}"
case "$data" in
  full)     data_dir=data/tinystories ;;
  embedded) data_dir=data/tinystories_embedded ;;
  *) echo "error: DATA=$data; use DATA=full or DATA=embedded" >&2; exit 1 ;;
esac
trainer="${TRAINER:-auto}"
if [ "$trainer" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    trainer=cuda; else trainer=cpu; fi
fi
case "$trainer" in
  cpu)  binary=train_gpt2;       d_steps=600;   d_b=4;  d_warmup=20;  d_val_every=25;  d_save=50 ;;
  cuda) binary=train_gpt2fp32cu; d_steps=20000; d_b=64; d_warmup=200; d_val_every=500; d_save=5000 ;;
  *) echo "error: TRAINER=$trainer; use auto, cpu or cuda" >&2; exit 1 ;;
esac
# Embedded validation is 14,263 tokens: evaluate all of it (-1). On full data
# 40 batches (40*B*T tokens) is a steady estimate.
if [ "$data" = embedded ]; then d_val_batches=-1; else d_val_batches=40; fi
steps="${STEPS:-$d_steps}"; b="${B:-$d_b}"; lr="${LR:-1e-3}"; warmup="${WARMUP:-$d_warmup}"
val_every="${VAL_EVERY:-$d_val_every}"; val_batches="${VAL_BATCHES:-$d_val_batches}"
save_every="${SAVE_EVERY:-$d_save}"; model_seed="${MODEL_SEED:-0}"; seed="${SEED:-1337}"
run="${RUN:-experiments/00001-tinystories-baseline/runs/${trainer}_${data}_b${b}_s${model_seed}}"
echo "00001: data=$data ($data_dir) trainer=$binary B=$b T=256 steps=$steps lr=$lr" \
     "warmup=$warmup model_seed=$model_seed seed=$seed run=$run"

# 1. Data: token shards + tokenizer file. Tokenizing is deterministic, so
#    existing shards are reused (FORCE_PREPRO=1 redoes them).
if [ ! -f "$data_dir/TinyStories_val.bin" ] || [ "${FORCE_PREPRO:-0}" = 1 ]; then
  if [ "$data" = full ]; then
    # Downloads data/TinyStories_all_data.tar.gz from Hugging Face (once),
    # extracts it, and tokenizes every story: data00.json = validation.
    python prepro_tinystories.py --out-dir "$data_dir"
  else
    python prepro_tinystories.py --input dev/data/embedded_stories --out-dir "$data_dir"
  fi
fi
if [ "$data" = full ]; then
  # prepro (and dev/main.sh) fall back to the embedded corpus when the download
  # fails: refuse to call that "full" (TinyStories' validation split is ~19M tokens).
  n_val="$(python -c "from dev.shards import read_token_shard as r; print(len(r('$data_dir/TinyStories_val.bin')))")"
  if [ "$n_val" -lt 1000000 ]; then
    echo "error: $data_dir/TinyStories_val.bin has only $n_val tokens, so it is not TinyStories" \
         "(the download failed and prepro used the embedded corpus). Put TinyStories_all_data.tar.gz" \
         "in data/ and run with FORCE_PREPRO=1, or use DATA=embedded." >&2
    exit 1
  fi
fi

# 2. Model: d4 with GPT-2 initialisation from a fixed seed.
mkdir -p "$run"
python create_model.py --config d4 --seed "$model_seed" --out "$run/init.bin"

# 3. Train. AdamW lr 1e-3, 20 (CPU) / 200 (GPU) warmup steps, cosine to 10%,
#    weight decay 0.1, gradient clip 1 (the trainer default).
make -s "$binary"
rm -f "$run"/log.jsonl "$run"/model_*.bin "$run"/state_*.bin
"./$binary" --model "$run/init.bin" \
  -i "$data_dir/TinyStories_train*.bin" -j "$data_dir/TinyStories_val.bin" \
  --tokenizer "$data_dir/gpt2_tokenizer.bin" -o "$run" \
  -b "$b" -t 256 -x "$steps" -l "$lr" --warmup "$warmup" --lr-schedule cosine \
  --weight-decay 0.1 -v "$val_every" -m "$val_batches" -n "$save_every" \
  -s 100 -g 64 --temperature 0.8 --top-k 40 --seed "$seed" --threads "${THREADS:-0}" ${TRAIN_FLAGS:-}

# 4. Samples: "Once upon a time" from the final checkpoint and from the saved
#    checkpoint with the lowest validation loss (they differ when it overfits).
final="$(ls "$run"/model_*.bin | sort | tail -1)"
best="$(python "$exp/analyze.py" best-checkpoint "$run")"
for ckpt in $(printf '%s\n' "$final" "$best" | sort -u); do
  tag="$(basename "$ckpt" .bin)"
  python -m dev.sample --model "$ckpt" --prompt "Once upon a time" --temperature 0.8 \
    --top-k 40 --max-new-tokens 128 --num-samples 3 --seed 1 --out-json "$run/samples_${tag}_t0.8_k40.json"
  python -m dev.sample --model "$ckpt" --prompt "Once upon a time" --greedy \
    --max-new-tokens 128 --seed 1 --out-json "$run/samples_${tag}_greedy.json"
done
python "$exp/analyze.py" samples --train "$data_dir/TinyStories_train*.bin" \
  --out "$run/samples.md" "$run"/samples_*.json

# 5. Figure.
python -m dev.plot "$run/log.jsonl" --out-dir "$run" --labels "d4 $data B=$b" \
  --title "00001 d4, $data data, $binary, B=$b T=256" --loss-x linear
echo "00001: log $run/log.jsonl, figure $run/loss.png, samples $run/samples.md"
