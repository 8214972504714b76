"""A frozen copy of distill/evidence/embed.py's forward pass and encode loop as they were before the speed work
(commit 64a7af8, distill/embed.py then), so benchmarks/bench_embed.py can measure old and new in the same run and
report how far the outputs moved. Not imported by the package; do not "fix" it: its value is being the old code.
It runs in one process with the old default of one BLAS thread (DEFAULT_BLAS_THREADS was already 1)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from distill.evidence.embed import TextEncoder, _blas_limit, model_dir

F32 = npt.NDArray[np.float32]

_ERF_P, _ERF_A1, _ERF_A2, _ERF_A3, _ERF_A4, _ERF_A5 = (
    np.float32(v) for v in (0.3275911, 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
)
_GELU_CHUNK = 1 << 15


def gelu(x: F32) -> F32:
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty_like(flat)
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
        p *= a
        np.subtract(1, p, out=p)
        np.copysign(p, v, out=p)
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


class FrozenLayer:
    def __init__(self, w: dict[str, Any], prefix: str, heads: int, eps: float) -> None:
        def t(name: str) -> F32:
            return np.ascontiguousarray(w[f"{prefix}.{name}.weight"].T, dtype=np.float32)

        def b(name: str) -> F32:
            return np.asarray(w[f"{prefix}.{name}.bias"], dtype=np.float32)

        self.qkv_w = np.ascontiguousarray(
            np.concatenate([t("attention.self.query"), t("attention.self.key"), t("attention.self.value")], axis=1)
        )
        self.qkv_b = np.concatenate([b("attention.self.query"), b("attention.self.key"), b("attention.self.value")])
        self.out_w, self.out_b = t("attention.output.dense"), b("attention.output.dense")
        self.ln1_w = np.asarray(w[f"{prefix}.attention.output.LayerNorm.weight"], dtype=np.float32)
        self.ln1_b = np.asarray(w[f"{prefix}.attention.output.LayerNorm.bias"], dtype=np.float32)
        self.inter_w, self.inter_b = t("intermediate.dense"), b("intermediate.dense")
        self.ffn_w, self.ffn_b = t("output.dense"), b("output.dense")
        self.ln2_w = np.asarray(w[f"{prefix}.output.LayerNorm.weight"], dtype=np.float32)
        self.ln2_b = np.asarray(w[f"{prefix}.output.LayerNorm.bias"], dtype=np.float32)
        self.heads = heads
        self.eps = eps

    def __call__(self, x: F32, mask_bias: F32) -> F32:
        batch, length, hidden = x.shape
        head_dim = hidden // self.heads
        qkv = (x.reshape(-1, hidden) @ self.qkv_w + self.qkv_b).reshape(batch, length, 3 * hidden)
        qkv = qkv.reshape(batch, length, 3, self.heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(head_dim)) + mask_bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
        x = layer_norm(context @ self.out_w + self.out_b + x, self.ln1_w, self.ln1_b, self.eps)
        inner = gelu(x @ self.inter_w + self.inter_b)
        return layer_norm(inner @ self.ffn_w + self.ffn_b + x, self.ln2_w, self.ln2_b, self.eps)


class FrozenEncoder(TextEncoder):
    """The same tokenizer and weights; the old layers, forward pass and batching (64 texts, no token cap)."""

    def __init__(self, **kwargs: Any) -> None:
        from safetensors.numpy import load_file

        super().__init__(model_dir(), workers=1, **kwargs)
        weights = load_file(str(model_dir() / "model.safetensors"))
        config = json.loads((model_dir() / "config.json").read_text(encoding="utf-8"))
        heads, n = int(config["num_attention_heads"]), len(self._layers)
        self._layers = [FrozenLayer(weights, f"encoder.layer.{i}", heads, self._eps) for i in range(n)]  # type: ignore[misc]

    def _forward(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.float32]) -> F32:
        length = ids.shape[1]
        x = self._word[ids] + self._position[:length]
        x = layer_norm(x.astype(np.float32, copy=False), self._ln_w, self._ln_b, self._eps)
        mask_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :].astype(np.float32)
        for layer in self._layers:
            x = layer(x, mask_bias)  # type: ignore[call-arg,arg-type]
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, **_: Any) -> F32:
        token_ids = self.tokenize(texts)
        out = np.zeros((len(token_ids), self.dim), dtype=np.float32)
        if not token_ids:
            return out
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        with _blas_limit(self.blas_threads):
            for batch in batches:
                length = max(len(token_ids[i]) for i in batch)
                ids = np.zeros((len(batch), length), dtype=np.int64)
                mask = np.zeros((len(batch), length), dtype=np.float32)
                for row, i in enumerate(batch):
                    ids[row, : len(token_ids[i])] = token_ids[i]
                    mask[row, : len(token_ids[i])] = 1.0
                out[batch] = self._forward(ids, mask)
        return out
