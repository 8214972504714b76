"""Hybrid catalog retrieval: BM25 (bm25s) plus embedding cosine over one document text per product.
Grounds free-text phrases (an LLM's "screen protector for iPhone 15") to catalog ids and finds look-alike
products. Only catalog ids ever come out; no text from a query becomes an id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, overload

import numpy as np
import numpy.typing as npt

from distill.errors import CatalogError
from graph_schema.models import Product

if TYPE_CHECKING:
    from distill.evidence.embed import TextEncoder

F32 = npt.NDArray[np.float32]

DEFAULT_SEMANTIC_WEIGHT: Final = 0.5
"""Weight of cosine in the fused score (BM25 gets the rest). Fusion is a weighted sum of BM25 divided by the
query's best BM25 over the catalog (so in [0, 1]) and cosine clipped at 0, rather than reciprocal rank
fusion: the fused value keeps its meaning across queries (1.0 = best lexical match AND identical meaning),
which downstream stages use as evidence and threshold, and a product with no shared word can still be found
by meaning. Equal weights: exact model numbers are BM25's strength, synonyms ("earbuds"/"earphones") cosine's."""

_QUERY_CHUNK: Final = 256  # queries per matmul: 256 x 50k float32 scores = 51 MB


def _light_stem(word: str) -> str:
    """Plural folding only ("cases" -> "case", "batteries" -> "battery"). Product text is mostly nouns, and
    a full stemmer (PyStemmer) is not a dependency; aggressive stemming would also merge model names."""
    if len(word) <= 4 or not word.isalpha():
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("es") and word[:-2].endswith(("x", "ch", "sh")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def document_text(product: Product) -> str:
    """The text a product is found by: title, brand, category path, then LLM keyphrases and enriched values
    when enrichment ran. Title first, because the encoder truncates long texts from the end."""
    parts: list[str] = [product.title]
    if product.brand:
        parts.append(product.brand)
    if product.category:
        parts.append(" > ".join(product.category))
    parts.extend(product.keyphrases)
    parts.extend(v for v in product.enriched.values() if v)
    return ". ".join(p.strip() for p in parts if p and p.strip())


@dataclass(frozen=True)
class Hit:
    """One retrieved catalog product. `score` is the fused score in [0, 1]; `bm25` the raw BM25 score;
    `cosine` the embedding cosine. A signal that was not computed (no encoder; BM25 in `similar`) is None."""

    product_id: str
    score: float
    bm25: float | None
    cosine: float | None


class CatalogRetriever:
    """Search a fixed catalog by phrase (`search`) or by product (`similar`, `similarity`).

    Build once per run with `CatalogRetriever.build`. Without an encoder it is BM25-only
    (`semantic` is False): `similar` then ranks by BM25 of the product's own text and `similarity`
    is the Jaccard overlap of the two products' BM25 terms."""

    def __init__(
        self,
        ids: tuple[str, ...],
        texts: tuple[str, ...],
        bm25: object,
        tokenizer: object,
        embeddings: F32 | None,
        encoder: TextEncoder | None,
        *,
        semantic_weight: float,
    ) -> None:
        self._ids = ids
        self._texts = texts
        self._row = {pid: i for i, pid in enumerate(ids)}
        self._bm25 = bm25
        self._tokenizer = tokenizer
        self._embeddings = embeddings
        self._encoder = encoder
        self._weight = semantic_weight if embeddings is not None else 0.0
        self._doc_terms: list[frozenset[int]] | None = None

    # ---------------------------------------------------------------------------------------------- build
    @classmethod
    def build(
        cls,
        products: Sequence[Product],
        encoder: TextEncoder | None,
        *,
        progress: bool = False,
        semantic_weight: float = DEFAULT_SEMANTIC_WEIGHT,
        batch_size: int = 64,
    ) -> CatalogRetriever:
        import bm25s  # type: ignore[import-untyped]
        from bm25s.tokenization import Tokenizer  # type: ignore[import-untyped]

        if not products:
            raise CatalogError("cannot build a retriever over an empty catalog")
        if not 0.0 <= semantic_weight <= 1.0:
            raise ValueError(f"semantic_weight must be in [0, 1], got {semantic_weight}")
        ids = tuple(p.id for p in products)
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dupes = sorted({pid for pid in ids if pid in seen or seen.add(pid)})  # type: ignore[func-returns-value]
            raise CatalogError(f"duplicate product ids in the catalog: {dupes[:5]}")
        texts = tuple(document_text(p) for p in products)
        tokenizer = Tokenizer(stopwords="en", stemmer=_light_stem)
        tokenized = tokenizer.tokenize(list(texts), update_vocab=True, return_as="tuple", show_progress=False)
        bm25 = bm25s.BM25()
        bm25.index(tokenized, show_progress=False)
        embeddings = encoder.encode(list(texts), batch_size=batch_size, progress=progress) if encoder else None
        return cls(ids, texts, bm25, tokenizer, embeddings, encoder, semantic_weight=semantic_weight)

    # ---------------------------------------------------------------------------------------------- facts
    @property
    def ids(self) -> tuple[str, ...]:
        """Catalog ids; row i of `embeddings` belongs to ids[i]."""
        return self._ids

    @property
    def embeddings(self) -> F32 | None:
        """(n, 384) L2-normalized document embeddings, or None for a BM25-only retriever."""
        return self._embeddings

    @property
    def semantic(self) -> bool:
        """True when an encoder was given (hybrid retrieval); False means BM25 only."""
        return self._embeddings is not None

    @property
    def model_name(self) -> str | None:
        return self._encoder.model_name if self._encoder is not None else None

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._row

    def text_of(self, product_id: str) -> str:
        return self._texts[self._row_of(product_id)]

    # ---------------------------------------------------------------------------------------------- search
    def search(
        self, queries: Sequence[str], k: int = 10, *, exclude: Sequence[set[str]] | None = None
    ) -> list[list[Hit]]:
        """The k best catalog products per query, best first (ties broken by id). `exclude[i]` holds ids
        that query i must not return (e.g. the source product itself)."""
        if isinstance(queries, str):
            raise TypeError("search() takes a sequence of queries, not one str")
        if exclude is not None and len(exclude) != len(queries):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(queries)} queries")
        if k < 1 or not queries:
            return [[] for _ in queries]
        query_vectors = self._encoder.encode(list(queries)) if self._encoder is not None and self.semantic else None
        query_terms = self._tokenizer.tokenize(  # type: ignore[attr-defined]
            list(queries), update_vocab=False, return_as="ids", show_progress=False
        )
        results: list[list[Hit]] = []
        for start in range(0, len(queries), _QUERY_CHUNK):
            stop = min(start + _QUERY_CHUNK, len(queries))
            lexical = np.stack([self._bm25_scores(query_terms[i]) for i in range(start, stop)])
            cosine = query_vectors[start:stop] @ self._embeddings.T if query_vectors is not None else None  # type: ignore[union-attr]
            chunk_exclude = exclude[start:stop] if exclude is not None else None
            results.extend(self._rank(lexical, cosine, k, chunk_exclude))
        return results

    def similar(self, product_ids: Sequence[str], k: int) -> list[list[Hit]]:
        """Nearest catalog products to each given product, itself excluded. By embedding cosine (the
        'text similarity alone' signal); BM25-only retrievers rank by BM25 of the product's own text."""
        if isinstance(product_ids, str):
            raise TypeError("similar() takes a sequence of product ids, not one str")
        rows = [self._row_of(pid) for pid in product_ids]
        exclude = [{pid} for pid in product_ids]
        if k < 1 or not rows:
            return [[] for _ in rows]
        if self._embeddings is None:
            return self.search([self._texts[r] for r in rows], k, exclude=exclude)
        results: list[list[Hit]] = []
        for start in range(0, len(rows), _QUERY_CHUNK):
            chunk = rows[start : start + _QUERY_CHUNK]
            cosine = self._embeddings[chunk] @ self._embeddings.T
            results.extend(self._rank(None, cosine, k, exclude[start : start + _QUERY_CHUNK], weight=1.0))
        return results

    @overload
    def similarity(self, a: str, b: str) -> float: ...  # type: ignore[overload-overlap]
    @overload
    def similarity(self, a: Sequence[str], b: Sequence[str]) -> F32: ...
    def similarity(self, a: str | Sequence[str], b: str | Sequence[str]) -> float | F32:
        """Cosine of two products' embeddings; element-wise for two equal-length id sequences. Without an
        encoder: Jaccard overlap of their BM25 terms (also in [0, 1])."""
        if isinstance(a, str) and isinstance(b, str):
            return float(self.similarity([a], [b])[0])
        if isinstance(a, str) or isinstance(b, str):
            raise TypeError("similarity() takes two ids or two sequences of ids")
        if len(a) != len(b):
            raise ValueError(f"similarity() got {len(a)} and {len(b)} ids")
        rows_a = [self._row_of(pid) for pid in a]
        rows_b = [self._row_of(pid) for pid in b]
        if self._embeddings is not None:
            if not rows_a:
                return np.zeros(0, dtype=np.float32)
            cosines: F32 = np.einsum("ij,ij->i", self._embeddings[rows_a], self._embeddings[rows_b]).astype(np.float32)
            return cosines
        terms = self._terms()
        out = np.zeros(len(rows_a), dtype=np.float32)
        for i, (ra, rb) in enumerate(zip(rows_a, rows_b, strict=True)):
            union = terms[ra] | terms[rb]
            out[i] = len(terms[ra] & terms[rb]) / len(union) if union else 0.0
        return out

    # ---------------------------------------------------------------------------------------------- inner
    def _row_of(self, product_id: str) -> int:
        try:
            return self._row[product_id]
        except KeyError:
            raise KeyError(f"product {product_id!r} is not in the retriever's catalog") from None

    def _bm25_scores(self, term_ids: Sequence[int]) -> F32:
        if not term_ids:
            return np.zeros(len(self._ids), dtype=np.float32)
        return np.asarray(self._bm25.get_scores_from_ids(list(term_ids)), dtype=np.float32)  # type: ignore[attr-defined]

    def _terms(self) -> list[frozenset[int]]:
        if self._doc_terms is None:
            ids = self._tokenizer.tokenize(  # type: ignore[attr-defined]
                list(self._texts), update_vocab=False, return_as="ids", show_progress=False
            )
            self._doc_terms = [frozenset(doc) for doc in ids]
        return self._doc_terms

    def _rank(
        self,
        lexical: F32 | None,
        cosine: F32 | None,
        k: int,
        exclude: Sequence[set[str]] | None,
        *,
        weight: float | None = None,
    ) -> list[list[Hit]]:
        w = self._weight if weight is None else weight
        n_rows = (lexical if lexical is not None else cosine).shape[0]  # type: ignore[union-attr]
        fused = np.zeros((n_rows, len(self._ids)), dtype=np.float32)
        if lexical is not None and w < 1.0:
            best = lexical.max(axis=1, keepdims=True)
            fused += np.float32(1.0 - w) * np.divide(lexical, best, out=np.zeros_like(lexical), where=best > 0)
        if cosine is not None and w > 0.0:
            fused += np.float32(w) * np.clip(cosine, 0.0, 1.0)
        # Excluded rows sink below every real score; they are also filtered below, in case k reaches them.
        blocked: list[set[str]] = [set() for _ in range(n_rows)]
        if exclude is not None:
            for i, ids in enumerate(exclude):
                rows = [self._row[pid] for pid in ids if pid in self._row]
                fused[i, rows] = -np.inf
                blocked[i] = set(ids)
        take = min(k + max((len(b) for b in blocked), default=0), len(self._ids))
        results: list[list[Hit]] = []
        for i in range(n_rows):
            top = np.argpartition(-fused[i], take - 1)[:take] if take < len(self._ids) else np.arange(len(self._ids))
            order = sorted(top.tolist(), key=lambda r: (-float(fused[i, r]), self._ids[r]))
            hits: list[Hit] = []
            for r in order:
                # Zero means no shared term and no positive similarity: not a match, however short the list.
                if self._ids[r] in blocked[i] or not fused[i, r] > 0.0:
                    continue
                hits.append(Hit(
                    product_id=self._ids[r],
                    score=float(fused[i, r]),
                    bm25=float(lexical[i, r]) if lexical is not None else None,
                    cosine=float(cosine[i, r]) if cosine is not None else None,
                ))
                if len(hits) == k:
                    break
            results.append(hits)
        return results
