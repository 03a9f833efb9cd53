"""GPT: the PyTorch reference GPT-2 whose parameters ARE the 16 checkpoint tensors.

Contract: GPT(config) has exactly the parameters of param_shapes(config) (PARAM_NAMES, and
lm_head with an untied head), with the stacked
checkpoint shapes (wte (Vp, C), qkvw (L, 3*C, C), ...), so a gradient from the
C or CUDA trainer compares with `model.<name>.grad` by name. The forward pass is
the exact math the trainers implement:

  x = wte[idx] + wpe[:T]                                  # (B, T, C), learned positions
  per layer l (pre-LN):
    x = x + attprojw[l] @ attn(ln1(x))   + attprojb[l]    # causal, scale 1/sqrt(HS)
    x = x + fcprojw[l] @ gelu(fcw[l] @ ln2(x) + fcb[l]) + fcprojb[l]   # gelu = tanh approx
  logits = lnf(x) @ wte.T                                 # (B, T, Vp), tied LM head
  (or lnf(x) @ lm_head.T with an untied head: config.untied_head, tensor 17)
  loss = cross-entropy over the first V logit columns (padded columns ignored),
         mean over all B*T positions, or over positions with loss_mask == 1.

LayerNorm eps is 1e-5; Q, K, V are the three C-wide column blocks of qkvw @ x,
in that order (as GPT-2's c_attn). Everything is fp32.

QKV bias off (config.qkv_bias False): qkvb stays a parameter (so every one of
the 16 names has a .grad), is held at zero, and a gradient hook replaces its
gradient with zeros, so optimizers (SGD, AdamW with weight decay) keep it
exactly zero. save_checkpoint writes header[8] = 1.

Dropout (off by default, p = model.dropout) acts only in training mode, at four
sites: "embed" (after wte + wpe), "attn" (on the softmaxed attention weights),
"attn_proj" (attention output projection, before the residual add), "mlp"
(MLP output, before the residual add). By default torch's F.dropout draws the
masks. To make them reproducible elsewhere (e.g. a counter-based mask shared
with the C trainer), set model.dropout_mask to a callable
`dropout_mask(site, layer, shape) -> keep` returning a 0/1 (or bool) tensor of
`shape` (layer is -1 for "embed"); kept values are scaled by 1/(1-p).

Conversion: to_hf(model) / from_hf(hf_model) go to and from transformers'
GPT2LMHeadModel (its Conv1D weights are stored transposed: (in, out)).
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dev.checkpoint import PARAM_NAMES, ModelConfig, param_shapes, read_checkpoint, write_checkpoint
from dev.init import gpt2_init

LN_EPS = 1e-5
DROPOUT_SITES = ("embed", "attn", "attn_proj", "mlp")


def cross_entropy_loss(logits, targets, vocab_size, loss_mask=None):
    """Mean cross-entropy over the first V columns of logits (B, T, Vp).

    targets (B, T) int in [0, V). With loss_mask (B, T) of 0/1, the mean is over
    positions where the mask is 1 (targets elsewhere are ignored); at least one
    position must count.
    """
    V = vocab_size
    flat = logits[..., :V].reshape(-1, V)
    tgt = targets.reshape(-1).long()
    if loss_mask is None:
        return F.cross_entropy(flat, tgt)
    m = loss_mask.reshape(-1).to(flat.dtype)
    count = m.sum()
    if count.item() == 0:
        raise ValueError("cross_entropy_loss: loss_mask selects no positions")
    tgt = torch.where(m > 0, tgt, torch.zeros_like(tgt))
    per_pos = F.cross_entropy(flat, tgt, reduction="none")  # (B*T,)
    return (per_pos * m).sum() / count


def _zero_grad_hook(grad):
    return torch.zeros_like(grad)


class GPT(nn.Module):
    """GPT-2 with the 16 checkpoint tensors as parameters (see the module docstring)."""

    def __init__(self, config, seed=0, init=True, dropout=0.0, dropout_mask=None):
        """config: ModelConfig. init=True: GPT-2 init from gpt2_init(config, seed);
        init=False: zero tensors (for loading). dropout: p; dropout_mask: see module doc."""
        super().__init__()
        config.validate(ValueError)
        self.config = config
        self.dropout = float(dropout)
        self.dropout_mask = dropout_mask
        # keep_attention = True: forward keeps each layer's attention weights (B, NH, T, T), after
        # the softmax and before dropout, in self.attention (a list over the layers; dev.attention)
        self.keep_attention = False
        self.attention = None
        values = gpt2_init(config, seed) if init else None
        for name, shape in param_shapes(config).items():
            data = torch.from_numpy(values[name]) if init else torch.zeros(shape)
            setattr(self, name, nn.Parameter(data))
        if not config.qkv_bias:
            self.qkvb.register_hook(_zero_grad_hook)
        T = config.max_seq_len
        self.register_buffer("causal", torch.ones(T, T, dtype=torch.bool).tril(), persistent=False)

    # ---- checkpoint I/O -------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path, **kwargs):
        """Load a checkpoint written by create_model.py or a trainer (CheckpointError if bad)."""
        config, params = read_checkpoint(path)
        model = cls(config, init=False, **kwargs)
        model.load_params(params)
        return model

    def load_params(self, params):
        """Copy a dict name -> array/tensor (checkpoint shapes) into the parameters."""
        with torch.no_grad():
            for name, shape in param_shapes(self.config).items():
                src = torch.as_tensor(np.asarray(params[name]) if not torch.is_tensor(params[name])
                                      else params[name])
                if tuple(src.shape) != tuple(shape):
                    raise ValueError(f"load_params: {name} has shape {tuple(src.shape)}, "
                                     f"expected {tuple(shape)}")
                getattr(self, name).copy_(src)
            if not self.config.qkv_bias:
                self.qkvb.zero_()

    def params_numpy(self):
        """dict name -> float32 numpy copy of each parameter, in checkpoint order."""
        return {n: getattr(self, n).detach().cpu().numpy().copy() for n in param_shapes(self.config)}

    def grads_numpy(self):
        """dict name -> float32 numpy gradient (zeros where .grad is None)."""
        out = {}
        for n in param_shapes(self.config):
            p = getattr(self, n)
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            out[n] = g.detach().cpu().numpy().copy()
        return out

    def save_checkpoint(self, path):
        """Atomically write the parameters as a checkpoint."""
        write_checkpoint(path, self.config, self.params_numpy())

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())

    # ---- forward ----------------------------------------------------------------------
    def _dropout(self, x, site, layer):
        p = self.dropout
        if not self.training or p == 0.0:
            return x
        if self.dropout_mask is None:
            return F.dropout(x, p=p, training=True)
        keep = self.dropout_mask(site, layer, tuple(x.shape))
        return x * keep.to(device=x.device, dtype=x.dtype) * (1.0 / (1.0 - p))

    def forward(self, idx, targets=None, loss_mask=None):
        """idx (B, T) int token ids < V -> (logits (B, T, Vp), loss or None)."""
        cfg = self.config
        B, T = idx.shape
        C, NH, HS, L = cfg.n_embd, cfg.n_head, cfg.head_size, cfg.n_layer
        if T > cfg.max_seq_len:
            raise ValueError(f"sequence length T={T} exceeds the model's maxT={cfg.max_seq_len}")
        x = self.wte[idx] + self.wpe[:T]                      # (B, T, C)
        x = self._dropout(x, "embed", -1)
        causal = self.causal[:T, :T]
        scale = 1.0 / math.sqrt(HS)
        self.attention = [] if self.keep_attention else None
        for l in range(L):
            h = F.layer_norm(x, (C,), self.ln1w[l], self.ln1b[l], LN_EPS)
            qkv = F.linear(h, self.qkvw[l], self.qkvb[l])      # (B, T, 3C)
            q, k, v = qkv.split(C, dim=2)                      # each (B, T, C)
            q = q.view(B, T, NH, HS).transpose(1, 2)           # (B, NH, T, HS)
            k = k.view(B, T, NH, HS).transpose(1, 2)
            v = v.view(B, T, NH, HS).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) * scale            # (B, NH, T, T)
            att = att.masked_fill(~causal, float("-inf"))
            att = F.softmax(att, dim=-1)
            if self.keep_attention:
                self.attention.append(att.detach())
            att = self._dropout(att, "attn", l)
            y = (att @ v).transpose(1, 2).reshape(B, T, C)     # (B, T, C)
            y = F.linear(y, self.attprojw[l], self.attprojb[l])
            x = x + self._dropout(y, "attn_proj", l)
            h = F.layer_norm(x, (C,), self.ln2w[l], self.ln2b[l], LN_EPS)
            h = F.linear(h, self.fcw[l], self.fcb[l])          # (B, T, 4C)
            h = F.gelu(h, approximate="tanh")
            h = F.linear(h, self.fcprojw[l], self.fcprojb[l])  # (B, T, C)
            x = x + self._dropout(h, "mlp", l)
        x = F.layer_norm(x, (C,), self.lnfw, self.lnfb, LN_EPS)
        head = self.lm_head if cfg.untied_head else self.wte  # tied to wte, or its own weight
        logits = F.linear(x, head)                             # (B, T, Vp)
        loss = None
        if targets is not None:
            loss = cross_entropy_loss(logits, targets, cfg.vocab_size, loss_mask)
        return logits, loss


# ---- transformers conversion ---------------------------------------------------------
# (ours, HF suffix under transformer.h.{l}., transposed?) for the per-layer tensors.
_HF_LAYER_MAP = (
    ("ln1w", "ln_1.weight", False), ("ln1b", "ln_1.bias", False),
    ("qkvw", "attn.c_attn.weight", True), ("qkvb", "attn.c_attn.bias", False),
    ("attprojw", "attn.c_proj.weight", True), ("attprojb", "attn.c_proj.bias", False),
    ("ln2w", "ln_2.weight", False), ("ln2b", "ln_2.bias", False),
    ("fcw", "mlp.c_fc.weight", True), ("fcb", "mlp.c_fc.bias", False),
    ("fcprojw", "mlp.c_proj.weight", True), ("fcprojb", "mlp.c_proj.bias", False),
)


def hf_config(config):
    """transformers.GPT2Config matching `config`, dropout off, eager attention."""
    from transformers import GPT2Config
    eot = 50256 if config.vocab_size > 50256 else None  # GPT-2's <|endoftext|> when it exists
    hf = GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.max_seq_len, n_embd=config.n_embd,
        bos_token_id=eot, eos_token_id=eot, n_layer=config.n_layer, n_head=config.n_head, n_inner=4 * config.n_embd,
        activation_function="gelu_new", layer_norm_epsilon=LN_EPS,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=not config.untied_head)
    hf._attn_implementation = "eager"
    return hf


def to_hf(model):
    """A transformers GPT2LMHeadModel (eval mode) holding `model`'s weights (vocab V: padded rows dropped)."""
    from transformers import GPT2LMHeadModel
    cfg = model.config
    hf = GPT2LMHeadModel(hf_config(cfg)).eval()
    sd = hf.state_dict()
    with torch.no_grad():
        sd["transformer.wte.weight"].copy_(model.wte[:cfg.vocab_size])
        sd["transformer.wpe.weight"].copy_(model.wpe)
        for l in range(cfg.n_layer):
            for ours, theirs, transpose in _HF_LAYER_MAP:
                src = getattr(model, ours)[l]
                sd[f"transformer.h.{l}.{theirs}"].copy_(src.t() if transpose else src)
        sd["transformer.ln_f.weight"].copy_(model.lnfw)
        sd["transformer.ln_f.bias"].copy_(model.lnfb)
        if cfg.untied_head:  # its own lm_head.weight (tie_word_embeddings=False)
            sd["lm_head.weight"].copy_(model.lm_head[:cfg.vocab_size])
    if not cfg.untied_head:
        hf.tie_weights()
    return hf


def from_hf(hf_model, **kwargs):
    """A GPT holding a transformers GPT-2's weights (qkv_bias on; wte padded with zero rows to Vp)."""
    hc = hf_model.config
    act = getattr(hc, "activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"from_hf: activation {act!r} is not the tanh GELU this model implements")
    if getattr(hc, "n_inner", None) not in (None, 4 * hc.n_embd):
        raise ValueError(f"from_hf: n_inner={hc.n_inner}, only 4*n_embd is supported")
    untied = not getattr(hc, "tie_word_embeddings", True)
    config = ModelConfig(max_seq_len=hc.n_positions, vocab_size=hc.vocab_size,
                         n_layer=hc.n_layer, n_head=hc.n_head, n_embd=hc.n_embd, untied_head=untied)
    sd = hf_model.state_dict()
    # float64 stays float64 (a double-precision reference); anything else becomes float32
    dtype = torch.float64 if sd["transformer.wte.weight"].dtype == torch.float64 else torch.float32
    params = {}
    V, Vp, C = config.vocab_size, config.padded_vocab_size, config.n_embd
    wte = torch.zeros(Vp, C, dtype=dtype)
    wte[:V] = sd["transformer.wte.weight"].to(dtype)
    params["wte"] = wte
    params["wpe"] = sd["transformer.wpe.weight"].to(dtype)
    for ours, theirs, transpose in _HF_LAYER_MAP:
        layers = [sd[f"transformer.h.{l}.{theirs}"].to(dtype) for l in range(config.n_layer)]
        params[ours] = torch.stack([t.t() if transpose else t for t in layers])
    params["lnfw"] = sd["transformer.ln_f.weight"].to(dtype)
    params["lnfb"] = sd["transformer.ln_f.bias"].to(dtype)
    if untied:
        head = torch.zeros(Vp, C, dtype=dtype)
        head[:V] = sd["lm_head.weight"].to(dtype)
        params["lm_head"] = head
    model = GPT(config, init=False, **kwargs).to(dtype)
    model.load_params(params)
    return model
