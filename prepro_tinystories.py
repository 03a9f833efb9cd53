"""Tokenize TinyStories (or the embedded story corpus) into token shards for the trainers.

Contract: reads stories, prepends the GPT-2 <|endoftext|> token (50256) to each
story (text stripped of surrounding whitespace), tokenizes with the GPT-2 BPE
on all cores, and writes to --out-dir (default data/tinystories):
  TinyStories_val.bin        validation split, one token shard (README format)
  TinyStories_train.bin      training split; when it holds more than
                             --shard-size tokens it is written as
                             TinyStories_train_000.bin, _001, ... instead
                             (read them with the glob TinyStories_train*.bin)
  gpt2_tokenizer.bin         llm.c v2 tokenizer file, for decoding samples
Output is deterministic: the same input gives the same bytes, whatever the
number of workers (results are gathered in input order, not completion order).

Input (--input): TinyStories_all_data.tar.gz (extracted once beside itself),
a folder of JSON shards data00.json, data01.json, ... (each a list of objects
with a "story" field), or a .txt file of stories separated by <|endoftext|>.
The first JSON shard (data00.json) is the validation split, or the
--val-input file when given. A lone .txt/.json file without --val-input gives
its first 1/20 of stories (at least one) to validation.
Without --input it uses data/TinyStories_all_data.tar.gz, downloading it from
Hugging Face with a progress bar when missing; when that fails (offline) it
says so and falls back to the embedded corpus in dev/data/embedded_stories/.
Every output is written to a hidden temporary name in --out-dir and renamed
into place only once all are written, so a failure (a full disk) leaves the
folder as it was. Bad input (missing file, bad JSON, no stories, an --out-dir
that is a file or under one, a full disk): `error: ...` and exit 1.
"""

import argparse
import glob
import json
import os
import shutil
import sys
import tarfile
import time
import urllib.request

import numpy as np

from dev.errors import UserError, cli_main
from dev.files import check_output_dir, make_dirs, write_error
from dev.shards import write_token_shard
from dev.tokenizer import GPT2_EOT, ENDOFTEXT, get_gpt2_encoding, gpt2_encoding_source, write_tokenizer_file

TINYSTORIES_URL = ("https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/"
                   "TinyStories_all_data.tar.gz")
REPO = os.path.dirname(os.path.abspath(__file__))
EMBEDDED_DIR = os.path.join(REPO, "dev", "data", "embedded_stories")
CHUNK_STORIES = 256          # stories per task sent to a worker
VAL_FRACTION_DIVISOR = 20    # lone-file input: first 1/20 of stories are validation


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Tokenize TinyStories (GPT-2 BPE) into train/val token shards and write "
                    "the tokenizer file. Falls back to the embedded corpus when offline.")
    p.add_argument("--input", help="TinyStories_all_data.tar.gz, a folder of JSON shards, or a "
                                   ".txt of stories separated by <|endoftext|> (default: download "
                                   "TinyStories into --download-dir)")
    p.add_argument("--val-input", help="validation stories (.txt separated by <|endoftext|>, or "
                                       "one JSON shard); then every --input shard is training")
    p.add_argument("--out-dir", default=os.path.join("data", "tinystories"),
                   help="where the .bin files go (default: data/tinystories)")
    p.add_argument("--download-dir", default="data",
                   help="where the TinyStories archive is downloaded and extracted (default: data)")
    p.add_argument("--url", default=TINYSTORIES_URL, help="download URL of the TinyStories archive")
    p.add_argument("--offline", action="store_true",
                   help="do not try to download: use the archive if present, else the embedded corpus")
    p.add_argument("--max-stories", type=int,
                   help="use at most this many stories from each split (default: all)")
    p.add_argument("--shard-size", type=int, default=100_000_000,
                   help="most tokens per training shard file (default: 100,000,000)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help=f"tokenizer processes (default: all cores, here {os.cpu_count()})")
    args = p.parse_args(argv)
    if args.max_stories is not None and args.max_stories < 1:
        raise UserError(f"--max-stories {args.max_stories}: must be at least 1.")
    if args.shard_size < 1:
        raise UserError(f"--shard-size {args.shard_size}: must be at least 1 token.")
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: must be at least 1.")
    return args


# ---- reading stories ----------------------------------------------------------------------
def read_json_shard(path):
    """List of story strings from one TinyStories JSON shard."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}. "
                        f"Re-download or fix the file.") from e
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}).") from e
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects with a \"story\" field, "
                        f"found a {type(data).__name__}.")
    stories = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("story"), str):
            raise UserError(f"{path}: item {i} has no \"story\" string (found {str(item)[:80]!r}); "
                            f"expected the TinyStories layout [{{\"story\": \"...\"}}, ...].")
        stories.append(item["story"])
    return stories


def read_text_stories(path):
    """List of stories from a .txt file where stories are separated by <|endoftext|>."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}).") from e
    return [s for s in text.split(ENDOFTEXT) if s.strip()]


def read_stories_file(path):
    if not os.path.exists(path):
        raise UserError(f"input file {path} does not exist.")
    if path.endswith(".json"):
        return read_json_shard(path)
    return read_text_stories(path)


def json_shards_in(folder):
    files = sorted(glob.glob(os.path.join(folder, "*.json")))
    if not files:
        raise UserError(f"folder {folder} holds no .json shards (expected data00.json, "
                        f"data01.json, ... in the TinyStories layout).")
    return files


def extract_archive(archive, dest):
    """Extract the .json members of a TinyStories archive into dest (once, atomically)."""
    if os.path.isdir(dest) and glob.glob(os.path.join(dest, "*.json")):
        print(f"using already extracted {dest}/")
        return
    print(f"extracting {archive} -> {dest}/")
    tmp = dest + ".extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
    except OSError as e:
        raise UserError(f"cannot create {tmp}/ to extract {archive} into ({e.strerror}); "
                        f"extract the archive yourself and pass the folder with --input.") from e
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = os.path.basename(member.name)
                if not member.isfile() or not name.endswith(".json"):
                    continue
                src = tar.extractfile(member)
                with open(os.path.join(tmp, name), "wb") as out:
                    shutil.copyfileobj(src, out)
    except (tarfile.TarError, EOFError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"{archive} is not a readable .tar.gz archive ({e}); delete it and "
                        f"download again.") from e
    if not glob.glob(os.path.join(tmp, "*.json")):
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"{archive} holds no .json shards; expected the TinyStories layout.")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def download(url, path):
    """Download url to path with a tqdm progress bar (via path.part, renamed when complete)."""
    from tqdm import tqdm
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    part = path + ".part"
    print(f"downloading {url} -> {path}")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="download") as bar:
                while True:
                    block = resp.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
                    bar.update(len(block))
        os.replace(part, path)
    finally:
        if os.path.exists(part):
            os.remove(part)


def resolve_sources(args):
    """(train_sources, val_sources, description); each source is a path to a story file.

    A source is a JSON shard or a .txt file; ("split", path, part) entries
    stand for the val/train halves of a lone file.
    """
    if args.input:
        path = args.input
        if not os.path.exists(path):
            raise UserError(f"--input {path} does not exist. Pass TinyStories_all_data.tar.gz, a "
                            f"folder of JSON shards, or a .txt of stories.")
        if os.path.isdir(path):
            files, what = json_shards_in(path), f"JSON shards in {path}"
        elif path.endswith((".tar.gz", ".tgz", ".tar")):
            dest = path[: -len(".tar.gz")] if path.endswith(".tar.gz") else os.path.splitext(path)[0]
            extract_archive(path, dest)
            files, what = json_shards_in(dest), f"archive {path}"
        else:
            files, what = [path], f"file {path}"
    else:
        archive = os.path.join(args.download_dir, os.path.basename(args.url))
        if not os.path.exists(archive) and not args.offline:
            try:
                download(args.url, archive)
            except Exception as e:  # noqa: BLE001 - any network failure means: fall back
                print(f"download failed ({type(e).__name__}: {e}).")
        if os.path.exists(archive):
            dest = archive[: -len(".tar.gz")] if archive.endswith(".tar.gz") else archive + ".d"
            extract_archive(archive, dest)
            files, what = json_shards_in(dest), f"TinyStories archive {archive}"
        else:
            print(f"TinyStories is not available here: FALLING BACK to the embedded corpus "
                  f"{EMBEDDED_DIR}/ (a few hundred stories written for this project, not "
                  f"TinyStories; fine for smoke tests, far too small for real training).")
            if not os.path.isdir(EMBEDDED_DIR):
                raise UserError(f"the embedded corpus {EMBEDDED_DIR}/ is missing; restore it "
                                f"with git, or pass --input.")
            files, what = json_shards_in(EMBEDDED_DIR), f"embedded corpus {EMBEDDED_DIR}"
    if args.val_input:
        if not os.path.exists(args.val_input):
            raise UserError(f"--val-input {args.val_input} does not exist.")
        return files, [args.val_input], what
    if len(files) >= 2:
        return files[1:], files[:1], what
    return [("split", files[0], "train")], [("split", files[0], "val")], what


def load_source(src):
    if isinstance(src, tuple):
        _, path, part = src
        stories = read_stories_file(path)
        n_val = max(1, len(stories) // VAL_FRACTION_DIVISOR)
        return stories[:n_val] if part == "val" else stories[n_val:]
    return read_stories_file(src)


def source_name(src):
    if isinstance(src, tuple):
        return f"{src[1]} ({'first' if src[2] == 'val' else 'rest after the first'} "\
               f"1/{VAL_FRACTION_DIVISOR} of stories)"
    return src


# ---- tokenizing ---------------------------------------------------------------------------
_ENC = None


def _init_worker(source):
    global _ENC
    _ENC = get_gpt2_encoding(source, verbose=False)


def encode_stories(stories):
    """uint16 tokens of [EOT] + encode(story.strip()) for each story, concatenated."""
    out = []
    for s in stories:
        out.append(GPT2_EOT)
        out.extend(_ENC.encode_ordinary(s.strip()))
    return np.array(out, dtype=np.uint16)


def iter_token_chunks(sources, max_stories, pool, bar):
    """Yield uint16 token arrays in input order; stops after max_stories stories."""
    remaining = max_stories
    for src in sources:
        stories = load_source(src)
        if remaining is not None:
            stories = stories[:remaining]
            remaining -= len(stories)
        chunks = [stories[i:i + CHUNK_STORIES] for i in range(0, len(stories), CHUNK_STORIES)]
        results = pool.imap(encode_stories, chunks) if pool else map(encode_stories, chunks)
        for chunk, tokens in zip(chunks, results):
            bar.update(len(chunk))
            yield len(chunk), tokens
        if remaining == 0:
            return


def tokenize_split(name, sources, args, pool, write_shard):
    """Tokenize one split; write_shard(tokens) is called with each full shard in order.

    Returns (stories, tokens) counts.
    """
    from tqdm import tqdm
    print(f"{name}: " + ", ".join(source_name(s) for s in sources[:3])
          + (f", ... ({len(sources)} sources)" if len(sources) > 3 else ""))
    n_stories = n_tokens = 0
    buffer, buffered = [], 0
    with tqdm(desc=f"tokenize {name}", unit=" stories", file=sys.stderr) as bar:
        for count, tokens in iter_token_chunks(sources, args.max_stories, pool, bar):
            n_stories += count
            n_tokens += tokens.size
            buffer.append(tokens)
            buffered += tokens.size
            while buffered >= args.shard_size:
                flat = np.concatenate(buffer)
                write_shard(flat[:args.shard_size])
                rest = flat[args.shard_size:]
                buffer, buffered = [rest], rest.size
    if buffered:
        write_shard(np.concatenate(buffer))
    return n_stories, n_tokens


def main(argv=None):
    args = parse_args(argv)
    check_output_dir(args.out_dir, "--out-dir", os.path.join("data", "tinystories"))
    print(f"prepro_tinystories: out-dir={args.out_dir} max-stories={args.max_stories or 'all'} "
          f"shard-size={args.shard_size:,} workers={args.workers}")
    train_sources, val_sources, what = resolve_sources(args)
    print(f"input: {what}")
    enc = get_gpt2_encoding(verbose=False)
    source = "tiktoken" if gpt2_encoding_source().startswith("tiktoken") else "asset"
    print(f"tokenizer: GPT-2 BPE from {gpt2_encoding_source()}")
    make_dirs(args.out_dir, "--out-dir")
    t0 = time.time()
    # Every output goes to a hidden temporary name first and is renamed into place only when
    # all of them are written: a failure (a full disk) leaves --out-dir as it was.
    temps = []

    def write_temp(name, write, *data):
        """write(temp path, *data) for the output `name`; a failure names `name`."""
        temps.append(os.path.join(args.out_dir, f".{name}.part{len(temps)}.bin"))
        try:
            write(temps[-1], *data)
        except UserError as e:
            if isinstance(e.__cause__, OSError):  # dev.files: the disk is full, say which output
                raise write_error(e.__cause__, os.path.join(args.out_dir, name)) from e
            raise
        return temps[-1]

    try:
        pool = None
        if args.workers > 1:
            import multiprocessing
            pool = multiprocessing.Pool(args.workers, initializer=_init_worker, initargs=(source,))
        else:
            _init_worker(source)
        try:
            val_parts = []
            val_stories, val_tokens = tokenize_split("val", val_sources, args, pool, val_parts.append)
            if val_tokens == 0:
                raise UserError(f"no validation stories found in {', '.join(map(source_name, val_sources))}: "
                                f"the input is empty.")
            train_tmp = []

            def write_train(tokens):
                name = f"TinyStories_train_{len(train_tmp):03d}.bin"
                train_tmp.append(write_temp(name, write_token_shard, tokens))

            train_stories, train_tokens = tokenize_split("train", train_sources, args, pool, write_train)
            if train_tokens == 0:
                raise UserError(f"no training stories found in {', '.join(map(source_name, train_sources))}: "
                                f"the input is empty (or has only a validation shard; add shards or "
                                f"pass --val-input).")
        finally:
            if pool is not None:
                pool.close()
                pool.join()

        val_path = os.path.join(args.out_dir, "TinyStories_val.bin")
        val_tmp = write_temp("TinyStories_val.bin", write_token_shard, np.concatenate(val_parts))
        tok_path = os.path.join(args.out_dir, "gpt2_tokenizer.bin")
        tok_tmp = write_temp("gpt2_tokenizer.bin", write_tokenizer_file, enc)
        if len(train_tmp) == 1:
            train_paths = [os.path.join(args.out_dir, "TinyStories_train.bin")]
        else:
            train_paths = [os.path.join(args.out_dir, f"TinyStories_train_{i:03d}.bin")
                           for i in range(len(train_tmp))]
        stale = set(glob.glob(os.path.join(args.out_dir, "TinyStories_train*.bin"))) - set(train_paths)
        for path in sorted(stale):
            print(f"removing stale {path} from an earlier run")
            os.remove(path)
        for tmp, path in zip(train_tmp + [val_tmp, tok_tmp], train_paths + [val_path, tok_path]):
            os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"--out-dir {args.out_dir}: {e.strerror or e} on {e.filename}; check the "
                        f"folder's permissions and free space, then run again.") from e
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.remove(tmp)

    print(f"val:   {val_stories:,} stories, {val_tokens:,} tokens -> {val_path}")
    shard_note = f" in {len(train_paths)} shards" if len(train_paths) > 1 else ""
    print(f"train: {train_stories:,} stories, {train_tokens:,} tokens{shard_note} -> "
          + (train_paths[0] if len(train_paths) == 1
             else os.path.join(args.out_dir, "TinyStories_train_*.bin")))
    print(f"tokenizer file -> {tok_path}")
    print(f"done in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    cli_main(main)
