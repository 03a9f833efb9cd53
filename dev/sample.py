"""Prompted sampling from any model checkpoint (create_model.py's or a trainer's).

Contract: `python -m dev.sample --model out/d4.bin --prompt "Once upon a time"`
loads the checkpoint with dev.model.GPT.from_checkpoint, encodes the prompt,
and appends --max-new-tokens tokens, one forward pass per token over the last
maxT tokens (the context is cropped to the model's maxT, or to --context N;
the trainers' in-training samples crop to their -t). It stops early at the
end-of-text token unless --no-stop-at-eot. The continuation goes to stdout;
--out-json PATH also writes {"prompt_ids", "samples": [{"ids", "text"}], ...}.

Encoding the prompt:
  - no --tokenizer: the model must have GPT-2's vocabulary (V = 50257); the
    prompt is BPE-encoded with dev.tokenizer.get_gpt2_encoding() (offline).
  - --tokenizer FILE (llm.c v2 tokenizer file, e.g. the one dev.mod_arith
    writes): with 50257 tokens and EOT 50256 it is GPT-2 (BPE-encoded as
    above, decoded with the file); any other vocabulary is "word mode": the
    prompt is whitespace-separated token texts ("12 + 34 =") and the output is
    the token texts joined by spaces.
  - --prompt-ids 1,2,3 gives the ids directly (no tokenizer needed to encode).
An empty prompt starts from the end-of-text token.

Choosing each token mirrors llmc/sampler.h, and the coins come from the
trainers' sampling generator (llmc/rand.h: xorshift64* seeded with
mix_seed(--seed, "sample"), one coin per token, greedy included), so
`--seed S --prompt-ids <EOT> --no-stop-at-eot` continues exactly like the first
sample of a trainer run with --seed S from the same weights:
  temperature 0 (--greedy): the first index of the largest of the first V logits;
  otherwise p = softmax(logits[:V] / temperature), then top-k (k most probable),
  then top-p (smallest most-probable set with mass >= top_p; ties by token id),
  renormalize, and invert the cumulative distribution at the coin in [0, 1).
Bad paths and values print `error: ...` and exit 1, checked before the model
is loaded where they can be: --out-json that is a folder or lies under a file,
a --device torch does not know or that this machine lacks (cuda without a
GPU); the JSON is written atomically (dev/files.py).
"""

import argparse
import json
import os
import sys

import numpy as np

from dev.errors import UserError, cli_main
from dev.files import atomic_write, check_output_file

GPT2_VOCAB = 50257
GPT2_EOT = 50256
MASK64 = (1 << 64) - 1


# ---- the C trainer's random numbers (llmc/rand.h) -------------------------------------
def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def mix_seed(a, b):
    """Independent stream seed from two numbers (llmc/rand.h mix_seed)."""
    return splitmix64(splitmix64(a & MASK64) ^ ((b * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & MASK64))


SAMPLE_STREAM = 0x73616D706C65  # "sample": the trainers seed their sampler with mix_seed(seed, this)


def sampling_rng(seed):
    """The trainers' sampling generator for --seed `seed`."""
    return Rng(mix_seed(int(seed), SAMPLE_STREAM))


class Rng:
    """xorshift64* with a splitmix64-mixed seed: the same stream as llmc/rand.h's Rng."""

    def __init__(self, seed):
        self.state = splitmix64(int(seed) & MASK64) or 0x9E3779B97F4A7C15

    def u64(self):
        x = self.state
        x ^= x >> 12
        x ^= (x << 25) & MASK64
        x ^= x >> 27
        self.state = x
        return (x * 0x2545F4914F6CDD1D) & MASK64

    def float(self):
        """A float in [0, 1) with 24 random bits (rng_float)."""
        return np.float32(self.u64() >> 40) * np.float32(1.0 / 16777216.0)


# ---- choosing one token (llmc/sampler.h) -----------------------------------------------
def pick_token(logits, temperature=1.0, top_k=0, top_p=1.0, coin=0.0):
    """Token id in [0, len(logits)) from a 1-D array of the first V logits (see module doc)."""
    logits = np.asarray(logits, dtype=np.float32)
    V = logits.shape[0]
    best = int(np.argmax(logits))  # first index of the maximum
    if temperature <= 0.0:
        return best
    probs = np.exp((logits - logits[best]) / np.float32(temperature)).astype(np.float32)
    probs = (probs / probs.astype(np.float64).sum()).astype(np.float32)
    if not ((0 < top_k < V) or top_p < 1.0):
        cdf = np.cumsum(probs.astype(np.float64))
        i = int(np.searchsorted(cdf, coin, side="right"))
        return i if i < V else best  # coin beyond the total mass (rounding)
    order = np.lexsort((np.arange(V), -probs))  # descending probability, then ascending id
    n = top_k if 0 < top_k < V else V
    if top_p < 1.0:
        mass = np.cumsum(probs[order[:n]].astype(np.float64))
        reached = np.nonzero(mass >= top_p)[0]
        if len(reached):
            n = int(reached[0]) + 1
    kept = probs[order[:n]].astype(np.float64)
    cdf = np.cumsum(kept)
    i = int(np.searchsorted(cdf, float(coin) * kept.sum(), side="right"))
    return int(order[min(i, n - 1)])


def generate(model, prompt_ids, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
             rng=None, stop_id=None, device="cpu", context=None):
    """New token ids (list) continuing prompt_ids, the context cropped to `context` tokens.

    Each step runs the model on the last `context` tokens (default and at most
    the model's maxT) and picks from the logits of the last position. Stops
    after max_new_tokens, or right after emitting stop_id (which is included)
    when stop_id is not None.
    """
    import torch
    cfg = model.config
    window = min(context or cfg.max_seq_len, cfg.max_seq_len)
    rng = rng or sampling_rng(1337)
    ids = list(prompt_ids)
    new = []
    model.eval()
    with torch.no_grad():
        for _ in range(max_new_tokens):
            ctx = torch.tensor([ids[-window:]], dtype=torch.long, device=device)
            logits, _ = model(ctx)                       # (1, T, Vp)
            last = logits[0, -1, :cfg.vocab_size].float().cpu().numpy()
            coin = rng.float()  # drawn even when greedy, as the trainers do
            tok = pick_token(last, temperature, top_k, top_p, coin)
            ids.append(tok)
            new.append(tok)
            if stop_id is not None and tok == stop_id:
                break
    return new


# ---- text <-> ids ---------------------------------------------------------------------
class Codec:
    """encode(text) -> ids, decode(ids) -> text, eot id, and a description."""

    def __init__(self, encode, decode, eot, description, separator=""):
        self.encode, self.decode, self.eot, self.description = encode, decode, eot, description
        self.separator = separator


def _decode_bytes(table):
    def decode(ids):
        return b"".join(table[i] for i in ids).decode("utf-8", errors="replace")
    return decode


def make_codec(vocab_size, tokenizer_path=None):
    """The Codec for a model of vocab_size V, from the GPT-2 BPE or an llm.c tokenizer file."""
    from dev import tokenizer as tk
    table = eot = None
    if tokenizer_path:
        table, eot = tk.read_tokenizer_file(tokenizer_path)
        if len(table) < vocab_size:
            raise UserError(f"tokenizer {tokenizer_path} has {len(table)} tokens but the model "
                            f"has V={vocab_size}: use the tokenizer the model's data was made with.")
    gpt2 = (table is None and vocab_size == GPT2_VOCAB) or (
        table is not None and len(table) == GPT2_VOCAB and eot == GPT2_EOT)
    if gpt2:
        enc = tk.get_gpt2_encoding(verbose=False)

        def encode(text):
            return enc.encode(text, allowed_special={tk.ENDOFTEXT})

        if table is not None:
            return Codec(encode, _decode_bytes(table), eot, f"GPT-2 BPE, decoded with {tokenizer_path}")
        return Codec(encode, lambda ids: enc.decode(ids, errors="replace"), GPT2_EOT,
                     "GPT-2 BPE (dev.tokenizer)")
    if table is None:
        raise UserError(f"the model has V={vocab_size}, not GPT-2's {GPT2_VOCAB}, so the GPT-2 "
                        f"tokenizer does not fit: pass --tokenizer FILE (for example the "
                        f"tokenizer.bin its data script wrote) or --prompt-ids.")
    lookup = {}
    for i, t in enumerate(table[:vocab_size]):
        lookup.setdefault(t.decode("utf-8", errors="replace"), i)

    def encode_words(text):
        ids = []
        for word in text.split():
            if word not in lookup:
                raise UserError(f"prompt word {word!r} is not a token of {tokenizer_path} (word "
                                f"mode: write the prompt as space-separated token texts, e.g. "
                                f"{' '.join(list(lookup)[:3])}).")
            ids.append(lookup[word])
        return ids

    def decode_words(ids):
        return " ".join(table[i].decode("utf-8", errors="replace") for i in ids)

    return Codec(encode_words, decode_words, eot, f"word mode over {tokenizer_path}", separator=" ")


# ---- command line ---------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Continue a text prompt with a model checkpoint (temperature, top-k, top-p).")
    p.add_argument("-e", "--model", default="out/d4.bin",
                   help="model checkpoint written by create_model.py or a trainer (default: out/d4.bin)")
    p.add_argument("--prompt", default="Once upon a time",
                   help="text to continue (default: 'Once upon a time'; '' = start from end-of-text)")
    p.add_argument("--prompt-ids", default=None,
                   help="comma-separated token ids to continue instead of --prompt")
    p.add_argument("--tokenizer", default=None,
                   help="llm.c tokenizer file for models without GPT-2's vocabulary (default: the "
                        "GPT-2 BPE, offline)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate (default: 64)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="softmax temperature; 0 = greedy (default: 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off, default)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="nucleus sampling: keep the smallest set with this mass (1 = off, default)")
    p.add_argument("--greedy", action="store_true", help="always the most likely token (temperature 0)")
    p.add_argument("--context", type=int, default=0,
                   help="crop the context to the last N tokens (default 0 = the model's maxT; the "
                        "trainers' samples crop to their -t)")
    p.add_argument("--seed", type=int, default=1337, help="seed of the sampling coins, as the trainers' --seed (default: 1337)")
    p.add_argument("--num-samples", type=int, default=1, help="independent continuations (default: 1)")
    p.add_argument("--no-stop-at-eot", action="store_true",
                   help="keep generating after the end-of-text token")
    p.add_argument("--show-ids", action="store_true", help="also print the token ids")
    p.add_argument("--out-json", default=None, help="also write prompt and samples as JSON here")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return p.parse_args(argv)


def check_args(args):
    if args.greedy:
        args.temperature = 0.0
    problems = []
    if not np.isfinite(args.temperature) or args.temperature < 0:
        problems.append(f"--temperature {args.temperature} must be >= 0 (0 = greedy)")
    if args.top_k < 0:
        problems.append(f"--top-k {args.top_k} must be >= 0 (0 = off)")
    if not (0.0 < args.top_p <= 1.0):
        problems.append(f"--top-p {args.top_p} must be in (0, 1] (1 = off)")
    if args.max_new_tokens < 1:
        problems.append(f"--max-new-tokens {args.max_new_tokens} must be >= 1")
    if args.num_samples < 1:
        problems.append(f"--num-samples {args.num_samples} must be >= 1")
    if args.context < 0:
        problems.append(f"--context {args.context} must be >= 0 (0 = the model's maxT)")
    if not 0 <= args.seed <= MASK64:
        problems.append(f"--seed {args.seed} must be in [0, 2^64 - 1], as the trainers' --seed")
    if problems:
        raise UserError("; ".join(problems) + ".")


def parse_prompt_ids(text, V):
    try:
        ids = [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise UserError(f"--prompt-ids {text!r}: expected comma-separated integers like 12,97,34,98.")
    bad = [i for i in ids if not (0 <= i < V)]
    if bad:
        raise UserError(f"--prompt-ids {text!r}: ids {bad[:5]} are outside [0, {V}) for this model.")
    return ids


def resolve_device(name):
    """The torch device string for --device `name`: cpu, cuda[:N] (when there is such a GPU)
    or mps (when available); UserError otherwise, before the model is loaded."""
    import torch
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"--device {name!r} is not a device name torch knows; use cpu, cuda or "
                        f"cuda:N.") from e
    if dev.type == "cpu":
        return str(dev)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else \
                "torch sees no CUDA GPU (driver, CUDA_VISIBLE_DEVICES)"
            raise UserError(f"--device {name}: no CUDA GPU is available here ({why}); use "
                            f"--device cpu.")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise UserError(f"--device {name}: this machine has {n} CUDA GPU(s), cuda:0 to "
                            f"cuda:{n - 1}; pick one of those (or --device cpu).")
        return str(dev)
    if dev.type == "mps" and torch.backends.mps.is_available():
        return str(dev)
    raise UserError(f"--device {name}: dev.sample runs on cpu, cuda[:N] or mps (where "
                    f"available); use --device cpu.")


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    if args.out_json is not None:
        check_output_file(args.out_json, "--out-json", "out/samples.json")
    if args.tokenizer and not os.path.exists(args.tokenizer):
        raise UserError(f"--tokenizer {args.tokenizer}: no such file.")
    if not os.path.exists(args.model):
        raise UserError(f"--model {args.model}: no such file. Create one with create_model.py or "
                        f"pass a checkpoint a trainer wrote (its -o folder).")
    import torch
    from dev.model import GPT
    args.device = resolve_device(args.device)
    model = GPT.from_checkpoint(args.model).to(args.device)
    cfg = model.config
    codec = None
    if args.prompt_ids is None or args.tokenizer or cfg.vocab_size == GPT2_VOCAB:
        codec = make_codec(cfg.vocab_size, args.tokenizer)
    if args.prompt_ids is not None:
        prompt_ids = parse_prompt_ids(args.prompt_ids, cfg.vocab_size)
    else:
        prompt_ids = codec.encode(args.prompt)
        bad = [i for i in prompt_ids if i >= cfg.vocab_size]
        if bad:
            raise UserError(f"the prompt encodes to ids {bad[:5]} >= the model's V={cfg.vocab_size}.")
    eot = codec.eot if codec else None
    if not prompt_ids:
        if eot is None:
            raise UserError("empty prompt and no tokenizer to say which id is end-of-text: "
                            "give --prompt-ids.")
        prompt_ids = [eot]
    stop_id = None if args.no_stop_at_eot else eot
    print(f"model: {args.model} ({cfg.describe()})", file=sys.stderr)
    print(f"tokenizer: {codec.description if codec else 'none (token ids)'}; prompt {len(prompt_ids)} "
          f"tokens{' (cropped to the last %d)' % cfg.max_seq_len if len(prompt_ids) > cfg.max_seq_len else ''}",
          file=sys.stderr)
    print(f"sampling: temperature={args.temperature} top_k={args.top_k} top_p={args.top_p} "
          f"seed={args.seed} max_new_tokens={args.max_new_tokens} "
          f"stop_at_eot={'no' if stop_id is None else stop_id}", file=sys.stderr)
    # no_grad as a context, not set_grad_enabled(False): main() is also called
    # in-process (tests, other tools), and must not switch autograd off for them.
    with torch.no_grad():
        rng = sampling_rng(args.seed)
        samples = []
        for k in range(args.num_samples):
            new = generate(model, prompt_ids, args.max_new_tokens, args.temperature, args.top_k,
                           args.top_p, rng, stop_id, args.device, args.context or None)
            text = codec.decode(prompt_ids) + codec.separator + codec.decode(new) if codec else None
            samples.append({"ids": new, "text": text})
            if args.num_samples > 1:
                print(f"--- sample {k + 1}/{args.num_samples}")
            print(text if codec else ",".join(map(str, prompt_ids + new)))
            if args.show_ids:
                print(f"ids: {prompt_ids} + {new}")
    if args.out_json:
        payload = {"model": args.model, "prompt_ids": prompt_ids, "temperature": args.temperature,
                   "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed,
                   "samples": samples}
        atomic_write(args.out_json, lambda f: f.write(json.dumps(payload).encode("utf-8")))
        print(f"wrote {args.out_json}", file=sys.stderr)
    return 0


def cli():
    """The console command `gpt2-sample` (pyproject.toml): the same as `python -m dev.sample`."""
    cli_main(main)


if __name__ == "__main__":
    cli()
