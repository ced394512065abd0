"""The extractive model's inference on real-sized articles: length-sorted batches, the lower
layers' output shared by the base and tuned evaluations of one process, a tokenizer shared by
threads."""

from __future__ import annotations

import threading

import pytest
import torch

from sftflow.backends.local import extractive as E

SENTENCES = ["Short one.", "The council approved the new budget for schools on Monday evening.",
             "It rained.", "Teachers will get ten million dollars more over the next three years, officials said.",
             "A dog barked at the mayor during the vote, which delighted the press.", "Fine."]


def test_lower_cache_evicts_least_recently_used_past_its_byte_limit():
    hidden, base = torch.zeros(1, 4, dtype=torch.float16), torch.zeros(4)  # one token, H = 4
    row = 4 * 2 + 4 * 4  # bytes: float16 activations + float32 base embedding
    cache = E.LowerCache(max_bytes=3 * row)
    for k in "abc":
        cache.put(k, hidden, base)
    assert len(cache) == 3 and cache.get("a") is not None  # "a" is now the most recently used
    cache.put("d", hidden, base)
    assert cache.get("b") is None and all(cache.get(k) is not None for k in "acd") and cache.bytes == 3 * row
    cache.put("huge", torch.zeros(100, 4, dtype=torch.float16), base)  # larger than the whole cache: not kept
    assert cache.get("huge") is None and len(cache) == 3


def test_tokenizer_calls_from_many_threads_do_not_mix_settings():
    """A fast tokenizer keeps padding/truncation on the object: without the lock, counting a long
    text (no truncation) while another thread pads a batch fails ('Unable to create tensor')."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(E.minilm_path())
    errors: list[str] = []
    long_text = "word " * 600

    def count():
        for _ in range(400):
            try:
                assert E.count_tokens(tok, long_text) == 600
            except Exception as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(repr(exc))

    def batch():
        for _ in range(400):
            try:
                ids, mask = E.tokenize(tok, SENTENCES)
                assert ids.shape == mask.shape and ids.shape[0] == len(SENTENCES)
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))

    threads = [threading.Thread(target=f) for f in (count, batch, count, batch)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.slow  # loads MiniLM twice (~5 s quiet)
def test_tuned_evaluation_reuses_the_base_evaluations_encoding(tmp_path, monkeypatch):
    from sftflow.backends.local.extractive_training import N_FEATURES

    tok, model = E.load_encoder()
    cfg = E.ScorerConfig(lora_layers=1, features=2, k=2)
    tuned_model = E.add_lora(model, cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, w in tuned_model.named_parameters():
            if "lora_" in name:
                w.normal_(0, 0.05)
    head = E.make_head(model.config.hidden_size, N_FEATURES)
    with torch.no_grad():
        head.weight.normal_(0, 0.1)
    E.save_tuned(tuned_model, head, cfg, tmp_path / "m")

    base, tuned = E.ExtractiveModel.base(), E.ExtractiveModel.load(tmp_path / "m")
    monkeypatch.setattr(E, "INFER_BATCH", 4)  # several length-sorted batches
    monkeypatch.setattr(E, "LOWER_CACHE", E.LowerCache())
    cold = tuned.scores(SENTENCES)  # nothing cached: encodes its lower layers itself

    # The base model's scores: as one unsorted, padded forward pass of the whole article.
    ids, mask = E.tokenize(tok, SENTENCES)
    with torch.inference_mode():
        whole = E.upper_layers(base.model, E.lower_layers(base.model, ids, mask, 1), mask, 1)
    monkeypatch.setattr(E, "LOWER_CACHE", E.LowerCache())
    base_scores = base.scores(SENTENCES)
    assert torch.allclose(base_scores, E.extras(whole)[:, 0], atol=1e-5)
    assert len(E.LOWER_CACHE) == len(SENTENCES)

    def refuse(*a, **kw):
        raise AssertionError("the lower layers ran again: the base evaluation's output was not reused")

    monkeypatch.setattr(E, "lower_layers", refuse)
    warm = tuned.scores(SENTENCES)
    assert torch.equal(warm, cold)  # same scores whether or not the base evaluation came first
    assert not torch.allclose(warm, base_scores)  # and they are the tuned model's own
