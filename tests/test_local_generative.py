"""The causal-LM path of the local backend on a tiny random Llama built inside the test
(mechanics only: prompt masking, LoRA SFT through a job, greedy and seeded generation)."""

from __future__ import annotations

import pytest

from sftflow.backends.base import GenerationParams, JobState
from sftflow.backends.local import LocalTuner, jobs, make_local_generator
from sftflow.backends.local.generative import encode_example, prompt_text
from sftflow.backends.local.text import Example, read_examples
from sftflow.config import Settings
from tests.test_local_backend import SAMPLES, spec, to_contents


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer Llama with a word-level tokenizer trained on the sample text, saved to disk."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [t for e in read_examples(SAMPLES["train"])[:60] for t in (e.prompt, e.answer)]
    tk = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<s>", "</s>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>",
                                  bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tk.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_loss_only_on_model_turn(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ex = Example(prompt="Summarize this : the bike chain .", answer="Clean the chain .")
    ids, labels = encode_example(tok, ex)
    n_prompt = len(tok(prompt_text(tok, ex.prompt), add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == "Clean the chain ."
    assert prompt_text(tok, "Q").endswith("User: Q\nModel: ")  # no chat template → plain format


@pytest.mark.slow
def test_tune_and_generate_tiny_causal_lm(tmp_path, tiny_model):
    data = (to_contents(SAMPLES["train"], tmp_path / "train.jsonl", 24),
            to_contents(SAMPLES["val"], tmp_path / "val.jsonl", 4))
    s = Settings(local_root=tmp_path / "root", source_model=tiny_model)
    tuner = LocalTuner(s)
    name = tuner.submit(spec(data, base_model=tiny_model, epochs=2, learning_rate_multiplier=50.0))
    st = jobs.wait(tuner.root / name, 120)
    assert st.state == JobState.SUCCEEDED, st.error
    assert st.step == st.total_steps == 12
    steps = [step for step, _ in st.metrics["val_loss"]]
    val = [v for _, v in st.metrics["val_loss"]]
    # measured at the start, every max(1, steps_per_epoch // val_per_epoch) = 1 step, and at the end
    assert steps == list(range(13)) and val[-1] < val[0]  # it learned something
    prompt = read_examples(data[1])[0].prompt
    greedy = GenerationParams(temperature=0.0, max_output_tokens=12)
    tuned = make_local_generator(s, st.endpoint)
    a, b = tuned.generate(prompt, greedy), tuned.generate(prompt, greedy)
    assert a.text == b.text and a.output_tokens <= 12 and a.finish_reason in ("STOP", "MAX_TOKENS")
    base = make_local_generator(s, tiny_model)
    sampled = GenerationParams(temperature=1.0, max_output_tokens=8)
    assert base.generate(prompt, sampled).text == base.generate(prompt, sampled).text  # seeded per prompt
