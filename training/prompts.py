"""Pre-encoded prompt embeddings on disk: written by ``python -m training.encode_prompts``, read by the trainer.

Layout of an embedding folder::

    index.json                  family, model, sequence length, dim, dtype, shard size, the prompt list
    shard_00000.safetensors     "embeds" [n, L, D] for prompts 0..n-1 (one file per ``shard_size`` prompts)
    negative.safetensors        "negative" [1, L, D] (the family's negative prompt), "empty" [1, L, D] ("")

Shards are written to a temporary name and renamed, so an interrupted encoding resumes at the first missing shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

INDEX = "index.json"
NEGATIVE = "negative.safetensors"


def shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def prompts_digest(prompts: list[str]) -> str:
    """Stable fingerprint of a prompt list (a resumed encoding must see the same list)."""
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a text file (one per line, blank lines and '#' comments skipped) or a JSON list."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Prompt file {str(path)!r} does not exist.")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise ValueError(f"{str(path)!r} must hold a JSON list of strings.")
        prompts = [p.strip() for p in data]
    else:
        prompts = [line.strip() for line in path.read_text().splitlines()]
        prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"Prompt file {str(path)!r} holds no prompts.")
    return prompts


def atomic_write_bytes_file(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync it, then rename it to ``path`` (readers never see a partial file)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@dataclass
class PromptEmbeddings:
    """Read access to an embedding folder; rows are read lazily from the safetensors shards."""

    root: Path
    index: dict

    @classmethod
    def open(cls, root: str | Path) -> PromptEmbeddings:
        root = Path(root)
        index_path = root / INDEX
        if not index_path.is_file():
            raise ValueError(
                f"{str(root)!r} is not a prompt-embedding folder (no {INDEX}); create one with "
                "`python -m training.encode_prompts --model <model> --prompts <file> --output <folder>`."
            )
        index = json.loads(index_path.read_text())
        missing = [shard_name(i) for i in range(index["num_shards"]) if not (root / shard_name(i)).is_file()]
        if missing or not (root / NEGATIVE).is_file():
            raise ValueError(
                f"Prompt-embedding folder {str(root)!r} is incomplete (missing {missing[:3] or [NEGATIVE]}); "
                "run training.encode_prompts again to finish it."
            )
        return cls(root, index)

    @property
    def prompts(self) -> list[str]:
        return list(self.index["prompts"])

    @property
    def family(self) -> str:
        return self.index["family"]

    def __len__(self) -> int:
        return len(self.index["prompts"])

    def get(self, indices: list[int] | torch.Tensor) -> torch.Tensor:
        """Embeddings [len(indices), L, D] in the stored dtype."""
        size = self.index["shard_size"]
        rows = []
        for i in [int(i) for i in indices]:
            if not 0 <= i < len(self):
                raise IndexError(f"prompt index {i} outside 0..{len(self) - 1}")
            with safe_open(str(self.root / shard_name(i // size)), framework="pt") as f:
                rows.append(f.get_slice("embeds")[i % size : i % size + 1])
        return torch.cat(rows)

    def special(self, key: str) -> torch.Tensor:
        """The negative ("negative") or empty-prompt ("empty") embedding, [1, L, D]."""
        with safe_open(str(self.root / NEGATIVE), framework="pt") as f:
            if key not in f.keys():
                raise ValueError(f"No {key!r} embedding in {str(self.root / NEGATIVE)!r}; valid: {list(f.keys())}.")
            return f.get_tensor(key)
