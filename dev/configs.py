"""Named model configurations, resolved into ModelConfig by name plus overrides.

  name   L   NH  C     maxT  V      use
  tiny   2   2   64    64    500    tests: V=500 pads to Vp=512, so padded columns are exercised
  mod97  2   4   128   8     101    modular-arithmetic (grokking) experiment, Vp=128
  d4     4   4   128   256   50257  TinyStories baseline of the design (GPT-2 tokenizer)
  d12    12  12  768   1024  50257  GPT-2 124M (124,475,904 floats with Vp=50304)
  d24    24  16  1024  1024  50257  GPT-2 medium (350M)
  d36    36  20  1280  1024  50257  GPT-2 large (774M)
  d48    48  25  1600  1024  50257  GPT-2 xl (1558M)

resolve_config(name, **overrides) raises UserError for an unknown name or an
override that makes the configuration invalid (e.g. C not divisible by NH).
"""

from dev.checkpoint import ModelConfig
from dev.errors import UserError

NAMED_CONFIGS = {
    "tiny": ModelConfig(max_seq_len=64, vocab_size=500, n_layer=2, n_head=2, n_embd=64),
    "mod97": ModelConfig(max_seq_len=8, vocab_size=101, n_layer=2, n_head=4, n_embd=128),
    "d4": ModelConfig(max_seq_len=256, vocab_size=50257, n_layer=4, n_head=4, n_embd=128),
    "d12": ModelConfig(max_seq_len=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768),
    "d24": ModelConfig(max_seq_len=1024, vocab_size=50257, n_layer=24, n_head=16, n_embd=1024),
    "d36": ModelConfig(max_seq_len=1024, vocab_size=50257, n_layer=36, n_head=20, n_embd=1280),
    "d48": ModelConfig(max_seq_len=1024, vocab_size=50257, n_layer=48, n_head=25, n_embd=1600),
}

CONFIG_USES = {
    "tiny": "tests (V=500 pads to Vp=512)",
    "mod97": "modular arithmetic mod 97 (grokking)",
    "d4": "TinyStories baseline",
    "d12": "GPT-2 124M",
    "d24": "GPT-2 medium 350M",
    "d36": "GPT-2 large 774M",
    "d48": "GPT-2 xl 1558M",
}

OVERRIDE_FIELDS = ("max_seq_len", "vocab_size", "n_layer", "n_head", "n_embd", "qkv_bias", "untied_head")


def resolve_config(name, **overrides):
    """ModelConfig for a named configuration with the non-None overrides applied."""
    if name not in NAMED_CONFIGS:
        raise UserError(f"unknown model configuration {name!r}; choose one of "
                        f"{', '.join(NAMED_CONFIGS)} (and override sizes with --n-layer etc.).")
    bad = [k for k in overrides if k not in OVERRIDE_FIELDS]
    if bad:
        raise ValueError(f"resolve_config: unknown override fields {bad}")
    values = {f: getattr(NAMED_CONFIGS[name], f) for f in OVERRIDE_FIELDS}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig(**values).validate(UserError, where=f"configuration {name!r} with overrides")
