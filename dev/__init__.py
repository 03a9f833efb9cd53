"""Python side of gpt2-fp32: file formats, tokenizer and the PyTorch reference model.

One module per job:
  errors.py        UserError and cli_main (clear message, exit 1, no traceback)
  binheader.py     the shared 256-int32 header: read, check magic/version/size
  checkpoint.py    model checkpoint (llm.c fp32 v3) + ModelConfig + PARAM_NAMES
  configs.py       named model configurations (tiny, d4, mod97, d12, ...)
  init.py          GPT-2 weight initialisation (numpy, seeded)
  shards.py        token shards (llm.c v1) and example shards (ours)
  parity_files.py  parity batch / gradients / losses files (ours)
  tokenizer.py     offline GPT-2 encoding and the llm.c v2 tokenizer file
  model.py         GPT: the reference model whose parameters are the 16 tensors

Importing the package does no work; every module is safe to import.
"""
