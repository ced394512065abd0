"""A real summarization set for the local backend, offline: ACLSum → sftflow's input formats.

ACLSum (Takeshita et al., 2024, https://github.com/sobamchan/aclsum, MIT licence) ships in its
PyPI wheel (`pip install aclsum==0.1.2`, the `bench` extra) 250 ACL papers — 100 train, 50 val,
100 test — each with its abstract, introduction and conclusion split into sentences, and three
human-written one-sentence summaries (challenge, approach, outcome). Nothing is downloaded.

`--task aspects` (the default, the dataset's own task): article = abstract + introduction +
conclusion, reference = the three aspect summaries joined. `--task abstract`: article =
introduction + conclusion, reference = the authors' abstract. `--scale` writes both tasks over
all 250 papers as one 500-example training file — for measuring time and memory at 500 real
articles only (its papers overlap the test set, so no quality figure may come from it). `--both`
writes both tasks over the train and val papers (300 examples), the test papers held out: the
largest training set whose test figures mean something (its validation papers are in it, though).

    python benchmarks/aclsum_data.py OUT_DIR [--task aspects|abstract] [--scale | --both]
writes OUT_DIR/{train.jsonl,val.jsonl,test.csv} (chat JSONL with a system message; test CSV with
input_text, output_text), ready for `sftflow pipeline --train/--val/--test`.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

SYSTEM = "You are a helpful assistant that writes short, faithful summaries."
INSTRUCTION = "Summarize the following article:"
ASPECTS = ("challenge", "approach", "outcome")


def detokenize(s: str) -> str:
    """ACLSum's sentences are tokenized ('word , word .'); give them back ordinary spacing."""
    s = re.sub(r"\s+([.,;:!?%)\]])", r"\1", s)
    s = re.sub(r"([(\[])\s+", r"\1", s)
    return re.sub(r"\s+", " ", s).strip()


def pair(doc, task: str) -> tuple[str, str]:
    """(article, reference) of one ACLSum document; sections are paragraphs."""
    sections = ("abstract", "introduction", "conclusion") if task == "aspects" else ("introduction", "conclusion")
    article = "\n".join(" ".join(detokenize(s) for s in doc.sentences[sec]) for sec in sections
                        if doc.sentences.get(sec))
    if task == "aspects":
        reference = " ".join(detokenize(doc.summaries[a]) for a in ASPECTS)
    else:
        reference = " ".join(detokenize(s) for s in doc.sentences["abstract"])
    return article, reference


def prompt(article: str) -> str:
    return f"{INSTRUCTION}\n\n{article}"


def write_chat(path: Path, pairs: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for article, ref in pairs:
            f.write(json.dumps({"messages": [{"role": "system", "content": SYSTEM},
                                             {"role": "user", "content": prompt(article)},
                                             {"role": "assistant", "content": ref}]}) + "\n")


def write_test(path: Path, pairs: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["input_text", "output_text"])
        for article, ref in pairs:
            w.writerow([prompt(article), ref])


def build(out: Path, task: str = "aspects", scale: bool = False, both: bool = False) -> dict[str, Path]:
    from aclsum import ACLSum

    out.mkdir(parents=True, exist_ok=True)
    splits = {s: ACLSum(s).documents for s in ("train", "val", "test")}
    paths = {"train": out / "train.jsonl", "val": out / "val.jsonl", "test": out / "test.csv"}
    if scale:
        every = [d for s in ("train", "val", "test") for d in splits[s]]
        write_chat(paths["train"], [pair(d, t) for t in ("aspects", "abstract") for d in every])
    elif both:
        seen = splits["train"] + splits["val"]
        write_chat(paths["train"], [pair(d, t) for t in ("aspects", "abstract") for d in seen])
    else:
        write_chat(paths["train"], [pair(d, task) for d in splits["train"]])
    write_chat(paths["val"], [pair(d, task) for d in splits["val"]])
    write_test(paths["test"], [pair(d, task) for d in splits["test"]])
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--task", choices=("aspects", "abstract"), default="aspects")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--scale", action="store_true", help="500-example training file (time/memory only)")
    size.add_argument("--both", action="store_true", help="both tasks over the train and val papers (300 examples)")
    args = ap.parse_args()
    try:
        paths = build(args.out, args.task, args.scale, args.both)
    except ImportError:
        print("aclsum is not installed: pip install -e '.[bench]' (or: pip install aclsum==0.1.2)", file=sys.stderr)
        return 1
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
