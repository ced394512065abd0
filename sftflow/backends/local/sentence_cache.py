"""The one-off encoding pass of the extractive trainer, kept on disk and addressed by content.

Training back-propagates only through MiniLM's top layers, so the frozen lower layers run once
per distinct sentence. Their activations (float16, one row per token) go to a file that is
read back batch by batch with `os.pread`: memory stays flat however many articles there are.
The directory is named by a hash of the encoder settings and the sentences, so a rerun on the
same data (another run, a restarted job) reuses it instead of encoding again. A directory
appears only once complete (written under a temporary name, then renamed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

VERSION = 1  # bump when what is stored changes


def cache_key(sentences: Iterable[str], settings: dict) -> str:
    h = hashlib.sha256(json.dumps({"v": VERSION, **settings}, sort_keys=True).encode())
    for s in sentences:
        h.update(s.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:32]


def pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B × T × H float32 padded, attention mask B × T) from per-sentence T_i × H activations."""
    T = max(r.shape[0] for r in rows)
    out = torch.zeros(len(rows), T, rows[0].shape[1])
    for j, r in enumerate(rows):
        out[j, :r.shape[0]] = r
    lens = torch.tensor([r.shape[0] for r in rows])
    return out, (torch.arange(T).unsqueeze(0) < lens.unsqueeze(1)).long()


class SentenceCache:
    """Lower-layer activations (tokens × H, float16) and base embeddings (H) per sentence id."""

    def __init__(self, directory: Path):
        self.dir = directory
        meta = json.loads((directory / "meta.json").read_text())
        self.hidden_size = int(meta["hidden_size"])
        self.offsets = np.load(directory / "offsets.npy")  # token offsets, n + 1
        self.base = torch.from_numpy(np.load(directory / "base.npy"))  # n × H float32
        self._fd = os.open(directory / "hidden.f16", os.O_RDONLY)
        self._row = self.hidden_size * 2  # bytes per token

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self, ids: list[int]) -> torch.Tensor:
        return torch.from_numpy((self.offsets[np.asarray(ids) + 1] - self.offsets[np.asarray(ids)]).astype(np.int64))

    def hidden(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden B × T × H float32, attention mask B × T) for the sentences `ids`, padded."""
        rows = []
        for i, n in zip(ids, self.lengths(ids).tolist()):
            buf = os.pread(self._fd, n * self._row, int(self.offsets[i]) * self._row)
            f16 = np.frombuffer(buf, dtype=np.float16).reshape(n, self.hidden_size)
            rows.append(torch.from_numpy(f16.astype(np.float32)))
        return pad(rows)

    def close(self) -> None:
        os.close(self._fd)


def build(root: Path, key: str, sentences: list[str],
          encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
          hidden_size: int, batch: int = 64,
          on_progress: Callable[[int, int], None] | None = None) -> tuple[SentenceCache, bool]:
    """The cache of `sentences` (ids = their order) under root/key: (cache, reused?).

    `encode(chunk)` returns (lower hidden B × T × H, mask B × T, base embeddings B × H).
    Sentences are encoded length-sorted so that padding stays small, and written as they come.
    """
    final = root / key
    if (final / "meta.json").is_file():
        return SentenceCache(final), True
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        lens = np.zeros(len(sentences), dtype=np.int64)
        spans: list[tuple[int, int]] = [(0, 0)] * len(sentences)  # (file token offset, length)
        base = np.zeros((len(sentences), hidden_size), dtype=np.float32)
        written = 0
        with open(tmp / "hidden.f16", "wb") as f:
            for b in range(0, len(order), batch):
                chunk = order[b:b + batch]
                hidden, mask, emb = encode([sentences[i] for i in chunk])
                base[chunk] = emb.numpy()
                for i, h, m in zip(chunk, hidden, mask):
                    n = int(m.sum())
                    f.write(h[:n].to(torch.float16).numpy().tobytes())
                    spans[i] = (written, n)
                    lens[i] = n
                    written += n
                if on_progress:
                    on_progress(min(b + batch, len(order)), len(order))
        # offsets in id order: rewrite the file in id order so that offsets are cumulative
        offsets = np.concatenate([[0], np.cumsum(lens)])
        with open(tmp / "hidden.f16", "rb") as src, open(tmp / "hidden.id.f16", "wb") as dst:
            row = hidden_size * 2
            for start, n in spans:
                src.seek(start * row)
                dst.write(src.read(n * row))
        os.replace(tmp / "hidden.id.f16", tmp / "hidden.f16")
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "base.npy", base)
        (tmp / "meta.json").write_text(json.dumps({"hidden_size": hidden_size, "sentences": len(sentences),
                                                   "tokens": int(offsets[-1])}))
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same key first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SentenceCache(final), False
