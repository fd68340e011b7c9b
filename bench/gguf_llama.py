"""`lal export --format gguf` checked by llama.cpp itself: greedy tokens against lal's.

    .venv/bin/python bench/gguf_llama.py --llama-python LLAMA_VENV/bin/python RUN [RUN...]

llama.cpp comes from `llama-cpp-python`, built once in a virtual environment of its own (about
5 minutes on 2 cores; ../shared/notes/llama-cpp.md): too slow for every CI run, so CI reads the
files with the `gguf` package (tests/test_gguf.py) and this script runs them. For each RUN (a
run id, folder or .safetensors file) it:

- exports the checkpoint as f32 and as q8_0 into a temporary folder (sizes, times);
- draws `--tokens` greedy tokens from each prompt with lal (torch, float32, no int8 head: what
  `lal sample --temperature 0 --no-int8-head` draws, in float32) and with llama.cpp
  (`Llama(model_path, n_ctx)`, temperature 0, top_k 1, repeat_penalty 1.0), in the other
  interpreter;
- prints both token lists, how many leading tokens match, and, fed lal's own continuation
  (teacher-forced), the largest logit difference and how often the two top-1 tokens agree;
- checks that llama.cpp's tokenizer encodes each prompt as tiktoken does.

Where they differ it is llama.cpp's GELU (the tanh approximation, through a float16 table on
CPU; lal's is exact), its float16 KV cache, and for q8_0 the 8-bit weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"  # this workplace's offline copies, where there are
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken-cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken-cache")

PROMPTS = ["ROMEO:", "JULIET:\nO", "First Citizen:\nWe"]

# Runs in the llama-cpp-python interpreter: a job as JSON on stdin, results as JSON on stdout.
LLAMA = r"""
import json, sys
import numpy as np
import llama_cpp

job = json.load(sys.stdin)
results = {}
for name, path in job["files"].items():
    llm = llama_cpp.Llama(model_path=path, n_ctx=job["n_ctx"], logits_all=True, verbose=False)
    rows = []
    for case in job["cases"]:
        prompt, ours = case["prompt"], case["lal"]
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=False)
        greedy = []
        llm.reset()
        for token in llm.generate(tokens, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            greedy.append(int(token))
            if len(greedy) == job["n"]:
                break
        # lal's own continuation, fed whole: the logits at each position against lal's
        llm.reset()
        llm.eval(case["ids"] + ours[:-1])
        theirs = np.array(llm.scores[: llm.n_tokens], dtype=np.float32)[len(case["ids"]) - 1 :]
        lal = np.load(case["logits"])
        rows.append({
            "tokenize": list(tokens),
            "greedy": greedy,
            "max_logit_diff": float(np.abs(theirs - lal).max()),
            "top1_agree": int((theirs.argmax(-1) == lal.argmax(-1)).sum()),
        })
    results[name] = rows
    llm.close()
json.dump(results, sys.stdout)
"""


def lal_cases(checkpoint: Path, prompts: list[str], n: int, folder: Path) -> tuple:
    """lal's greedy tokens for each prompt, in float32 and in its default sampling precision
    (bfloat16 on a CPU with native bf16), and its float32 logits along prompt + continuation
    (saved as .npy for the other interpreter)."""
    from lal_core.data.tokenizer import encode
    from lal_core.generation.sampling import generate_ids, load_for_sampling

    backend = load_for_sampling(checkpoint, "torch", "cpu", infer_dtype="float32", int8_head=False)
    default = load_for_sampling(checkpoint, "torch", "cpu", int8_head=False)
    cases = []
    for i, prompt in enumerate(prompts):
        ids = encode(prompt)
        ours = [t for t, _ in generate_ids(backend, ids, n, temperature=0)]
        usual = [t for t, _ in generate_ids(default, ids, n, temperature=0)]
        logits = backend.logits(np.array([ids + ours[:-1]]))[0, len(ids) - 1 :]
        path = folder / f"lal-{i}.npy"
        np.save(path, logits[:, :50257])  # the tokenizer's rows: what the GGUF holds
        cases.append({"prompt": prompt, "ids": ids, "lal": ours, "logits": str(path)})
        cases[-1]["lal_default"] = usual
    return cases, backend.cfg, default.infer_dtype


def export_both(checkpoint: Path, folder: Path) -> dict[str, tuple[Path, int, float]]:
    from lal_core.export.gguf_file import export_gguf

    files = {}
    for outtype in ("f32", "q8_0"):
        start = time.perf_counter()
        done = export_gguf(checkpoint, folder / f"model-{outtype}.gguf", outtype)
        files[outtype] = (done.path, done.size, time.perf_counter() - start)
    return files


def leading_match(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def check_run(ref: str, args: argparse.Namespace) -> dict[str, list[int]]:
    """Print one run's comparison; return, per outtype, the leading tokens matched per prompt."""
    from lal_core.data.tokenizer import decode
    from lal_core.runs.folder import resolve_checkpoint

    checkpoint = resolve_checkpoint(ref, args.checkpoint)
    with tempfile.TemporaryDirectory(prefix="gguf-llama-") as tmp:
        folder = Path(tmp)
        files = export_both(checkpoint, folder)
        cases, cfg, usual = lal_cases(checkpoint, args.prompts, args.tokens, folder)
        job = {
            "files": {t: str(p) for t, (p, _, _) in files.items()},
            "n_ctx": min(256, cfg.block_size),  # past block_size there is no position row
            "n": args.tokens,
            "cases": cases,
        }
        done = subprocess.run(
            [args.llama_python, "-c", LLAMA],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"llama.cpp failed:\n{done.stderr[-3000:]}")
        results = json.loads(done.stdout)

    print(f"\n{checkpoint} ({cfg.name}: {cfg.n_layer} layers, width {cfg.n_embd})")
    for outtype, (_, size, seconds) in files.items():
        print(f"  {outtype:5} {size / 1e6:6.1f} MB, written in {seconds:.1f} s")
    lal_usual = f"lal {usual}"  # lal's own sampling precision, against its float32
    matches: dict[str, list[int]] = {t: [] for t in [*files, lal_usual]}
    for i, case in enumerate(cases):
        said, ids = results["f32"][i]["tokenize"], case["ids"]
        same = "same" if said == ids else "DIFFERENT"
        print(f"  prompt {case['prompt']!r}: llama.cpp tokenizes {said}, tiktoken {ids}: {same}")
        print(f"    lal   {case['lal']}")
        n = leading_match(case["lal"], case["lal_default"])
        matches[lal_usual].append(n)
        print(f"          ({lal_usual}, as `lal sample --no-int8-head`: {n}/{args.tokens} match)")
        for outtype in files:
            row = results[outtype][i]
            n = leading_match(case["lal"], row["greedy"])
            matches[outtype].append(n)
            print(f"    {outtype:5} {row['greedy']}")
            print(
                f"          {n}/{args.tokens} leading tokens match; fed lal's tokens: max |logit "
                f"diff| {row['max_logit_diff']:.4f}, top-1 agrees {row['top1_agree']}/{args.tokens}"
            )
        print(f"    text (lal): {decode(case['lal'])!r}")
    return matches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run ids, folders or checkpoints")
    parser.add_argument("--llama-python", required=True, help="an interpreter with llama_cpp")
    parser.add_argument("--checkpoint", default="best", choices=["best", "final", "sft"])
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--prompts", nargs="+", default=PROMPTS)
    args = parser.parse_args()

    summary = {ref: check_run(ref, args) for ref in args.runs}
    print("\nleading greedy tokens that match lal's (float32), per prompt:")
    for ref, matches in summary.items():
        for outtype, ns in matches.items():
            total = f"{sum(ns)}/{args.tokens * len(ns)}"
            print(f"  {Path(ref).name:32} {outtype:13} {ns}  ({total})")


if __name__ == "__main__":
    main()
