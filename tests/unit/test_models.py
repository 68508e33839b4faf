"""Model folders: what loads (a Llama with its own BPE tokenizer, the byte-level presets), and the
one-line errors for what does not (a vocabulary short of its tokenizer's, too few positions, a
missing tokenizer, a pickle, an unknown or custom model type, an unreachable Hub)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import torch

from swarm.models.build import (
    ModelError,
    ModelSource,
    build_model,
    check_fits,
    companion_files,
    load_tokenizer,
    resolve_model,
)
from swarm.models.byte_tokenizer import ByteTokenizer, byte_tokenizer_files
from swarm.models.folder import files_hash
from swarm.models.hub import fetch_from_hub
from swarm.models.tokenizer import HFTokenizer

TEXT = [
    "The swarm trains one model on donated machines, and every member keeps a global copy.",
    "def average(values):\n    return sum(values) / len(values)\n",
    "Members come and go; a round commits the shards whose owners answered in time.",
    "Checkpoints are content-addressed chunks, and any member serves the ones it holds.",
] * 20
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
EOS = "<|end|>"


TINY_CONFIGS: dict[str, dict[str, int]] = {
    "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
    "qwen2": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    ),
    "mistral": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    ),
    "gpt_neox": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=2),
}
"""Tiny configurations of the architectures a run's model folder commonly has."""


def model_folder(
    folder: Path,
    *,
    model_type: str = "llama",
    vocab_size: int | None = None,
    positions: int = 256,
    weights: bool = True,
    chat_template: str | None = CHAT_TEMPLATE,
    eos: str | None = EOS,
) -> Path:
    """A model folder (Llama-style by default) with a byte-level BPE tokenizer trained here on
    ``TEXT``: config, safetensors weights (unless ``weights`` is off) and the tokenizer's files, as
    transformers writes them. ``vocab_size`` overrides the model's (the tokenizer's size by default)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|end|>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(TEXT, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=eos)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=vocab_size or len(tokenizer),
        max_position_embeddings=positions,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **TINY_CONFIGS[model_type],
    )
    if weights:
        torch.manual_seed(7)
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    else:
        config.save_pretrained(folder)
    return folder


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_a_llama_folder_loads_with_its_own_tokenizer(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "llama")
    source = resolve_model(str(folder))
    tokenizer = load_tokenizer(source)
    assert isinstance(tokenizer, HFTokenizer)
    check_fits(source, seq_len=256, tokenizer=tokenizer)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    reference = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.vocab_size == len(
        reference
    ) == 400 and tokenizer.eos_id == reference.convert_tokens_to_ids(EOS)
    texts = ["Members come and go.", "", "def f(x):\n    return x <|user|>"]
    ids = tokenizer.encode(texts)
    assert ids == [reference(t, add_special_tokens=False).input_ids for t in texts]
    assert ids[1] == [] and reference.decode(ids[0]) == texts[0]
    assert len(ids[0]) < len(texts[0].encode()), "BPE tokens, not bytes"
    assert ids[2][-1] == reference.convert_tokens_to_ids("<|user|>"), "special tokens in text stay special"
    chat = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    assert tokenizer.render_chat(chat) == "<|user|>hello<|end|>\n<|assistant|>hi<|end|>\n"

    model = build_model(source, seed=123)  # the folder's weights, whatever the seed
    assert torch.equal(_flat(model), _flat(AutoModelForCausalLM.from_pretrained(folder)))
    assert {p.dtype for p in model.parameters()} == {torch.float32}

    files = companion_files(source, tokenizer)
    assert set(files) == {
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "generation_config.json",
    }
    assert all(files[name] == (folder / name).read_bytes() for name in files), "the folder's own bytes"
    assert tokenizer.content_hash == files_hash(
        {n: b for n, b in files.items() if n != "generation_config.json"}
    )
    (folder / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert load_tokenizer(source).content_hash != tokenizer.content_hash, (
        "the hash covers every tokenizer file"
    )


def test_a_folder_without_weights_starts_from_the_seed_with_a_generation_config_made_for_it(
    tmp_path: Path,
) -> None:
    source = resolve_model(str(model_folder(tmp_path / "fresh", weights=False)))
    assert source.weights_dir is None
    assert torch.equal(_flat(build_model(source, seed=1)), _flat(build_model(source, seed=1)))
    assert not torch.equal(_flat(build_model(source, seed=1)), _flat(build_model(source, seed=2)))
    tokenizer = load_tokenizer(source)
    assert not (tmp_path / "fresh" / "generation_config.json").exists()
    generation = json.loads(companion_files(source, tokenizer)["generation_config.json"])
    assert generation == {"eos_token_id": tokenizer.eos_id}


def test_presets_are_byte_level_and_their_tokenizer_files_load_with_transformers(tmp_path: Path) -> None:
    source = resolve_model("tiny")
    tokenizer = load_tokenizer(source)
    assert isinstance(tokenizer, ByteTokenizer)
    files = companion_files(source, tokenizer)
    assert json.loads(files["generation_config.json"]) == {"eos_token_id": 0}
    # The byte tokenizer's files never change: their hash is every byte-level run's tokenizer hash.
    assert files_hash(byte_tokenizer_files()) == tokenizer.content_hash
    assert tokenizer.content_hash == "58be50f23fcd366431c20844d0801420631c9ac7f120bafb75c5cd08fe534b57"
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(loaded) == 256 and loaded.eos_token_id == 0
    text = "héllo wörld\x00 Ā 日本 🙂 \t\n\x7f end"  # "Ā" is how the alphabet spells byte 0
    assert loaded(text).input_ids == list(text.encode()) == tokenizer.encode([text])[0]
    assert loaded.decode(list(text.encode())) == text
    assert loaded.decode([104, 105, 0], skip_special_tokens=True) == "hi"
    with pytest.raises(ModelError, match="no chat template"):
        tokenizer.render_chat([{"role": "user", "content": "hi"}])


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _set_config(folder: Path, **values: object) -> None:
    (folder / "config.json").write_text(json.dumps({**_config(folder), **values}))


def test_a_model_that_cannot_hold_its_tokenizer_or_the_sequence_is_one_line(tmp_path: Path) -> None:
    short = resolve_model(str(model_folder(tmp_path / "short", vocab_size=300, weights=False)))
    with pytest.raises(ModelError, match=r"vocabulary of 300 tokens, fewer than the 400 of its tokenizer"):
        check_fits(short, seq_len=128)
    source = resolve_model(str(model_folder(tmp_path / "ok", positions=64, weights=False)))
    check_fits(source, seq_len=64)
    with pytest.raises(ModelError, match="has 64 positions, fewer than the run's sequence length 65"):
        check_fits(source, seq_len=65)
    gpt2 = ModelSource("gpt2-like", {"model_type": "gpt2", "vocab_size": 256, "n_positions": 32}, None)
    with pytest.raises(ModelError, match="32 positions"):  # GPT-2 names them n_positions
        check_fits(gpt2, seq_len=128)


def test_a_folder_without_its_tokenizer_is_refused_unless_it_is_byte_level(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m", weights=False)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (folder / name).unlink()
    with pytest.raises(ModelError, match=r"has no tokenizer files .* its 400 token ids mean nothing"):
        resolve_model(str(folder))
    _set_config(folder, vocab_size=256)  # a byte-level model, saved without a tokenizer
    source = resolve_model(str(folder))
    assert isinstance(load_tokenizer(source), ByteTokenizer)
    check_fits(source, seq_len=128)


def test_model_types_and_weights_swarm_will_not_load(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "other.safetensors")
    with pytest.raises(ModelError, match=r"holds other.safetensors but no model.safetensors"):
        resolve_model(str(folder))
    torch.save({"w": torch.zeros(2)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"pytorch_model.bin, a pickle .* safetensors only"):
        resolve_model(str(folder))
    (folder / "pytorch_model.bin").unlink()
    (folder / "other.safetensors").unlink()
    _set_config(folder, model_type="my_own_llm", auto_map={"AutoModelForCausalLM": "modeling.MyLLM"})
    (folder / "modeling.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelError, match=r"type 'my_own_llm', which transformers .* does not know"):
        resolve_model(str(folder))
    _set_config(folder, model_type="vit")
    with pytest.raises(ModelError, match="'vit' is not a causal language model"):
        resolve_model(str(folder))
    _set_config(folder, model_type="llama", quantization_config={"quant_method": "gptq", "bits": 4})
    with pytest.raises(ModelError, match=r"is quantized \(gptq\)"):
        resolve_model(str(folder))


def test_weights_that_do_not_fit_their_config_are_one_line(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m")
    _set_config(folder, num_hidden_layers=3)  # the weights have 2 layers
    with pytest.raises(ModelError, match=r"weights of model .* do not fit its config.json: .* missing"):
        build_model(resolve_model(str(folder)), seed=0)
    _set_config(folder, num_hidden_layers=2, intermediate_size=48)
    with pytest.raises(ModelError, match=r"do not fit its config.json: 6 tensors .* another shape"):
        build_model(resolve_model(str(folder)), seed=0)
    _set_config(folder, intermediate_size=64)
    build_model(resolve_model(str(folder)), seed=0)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match=r"weights of model .* do not load: .*header"):
        build_model(resolve_model(str(folder)), seed=0)


def test_tokenizers_without_an_end_of_sequence_or_a_usable_template_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="names no end-of-sequence token"):
        load_tokenizer(resolve_model(str(model_folder(tmp_path / "a", eos=None, weights=False))))
    plain = load_tokenizer(
        resolve_model(str(model_folder(tmp_path / "b", chat_template=None, weights=False)))
    )
    with pytest.raises(ModelError, match="has no chat template"):
        plain.render_chat([{"role": "user", "content": "hi"}])
    strict = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('a user speaks first') }}{% endif %}x"
    tokenizer = load_tokenizer(
        resolve_model(str(model_folder(tmp_path / "c", chat_template=strict, weights=False)))
    )
    assert tokenizer.render_chat([{"role": "user", "content": "hi"}]) == "x"
    with pytest.raises(ModelError, match="refused a conversation: a user speaks first"):
        tokenizer.render_chat([{"role": "assistant", "content": "hi"}])
    custom = tmp_path / "c"
    config = json.loads((custom / "tokenizer_config.json").read_text())
    config.update(
        tokenizer_class="MyTokenizer", auto_map={"AutoTokenizer": ["tokenization_my.MyTokenizer", None]}
    )
    (custom / "tokenizer_config.json").write_text(json.dumps(config))
    (custom / "tokenization_my.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelError, match=r"the tokenizer of .* does not load: .*custom code"):
        load_tokenizer(resolve_model(str(custom)))
    broken = model_folder(tmp_path / "d", weights=False)
    (broken / "tokenizer.json").write_text('{"model": "not a tokenizer"}')
    with pytest.raises(ModelError, match=r"the tokenizer of .* does not load"):
        load_tokenizer(resolve_model(str(broken)))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_hub_id_without_a_reachable_hub_is_one_clear_line_and_quick(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(
        ModelError, match=r"the Hugging Face Hub is unreachable from here .* pass a local model folder"
    ):
        fetch_from_hub("someone/some-model", endpoint=endpoint, cache_dir=tmp_path, timeout_s=2)
    assert time.monotonic() - started < 2
    # A snapshot already in the cache is used when the Hub cannot be asked.
    snapshot = tmp_path / "models--someone--some-model" / "snapshots" / ("c" * 40)
    model_folder(snapshot, weights=False)
    (tmp_path / "models--someone--some-model" / "refs").mkdir()
    (tmp_path / "models--someone--some-model" / "refs" / "main").write_text("c" * 40)
    assert (
        fetch_from_hub("someone/some-model", endpoint=endpoint, cache_dir=tmp_path, timeout_s=2) == snapshot
    )


def test_a_hub_id_in_offline_mode_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # "someone/nothing-here" is no folder here, so a Hub id
    with pytest.raises(ModelError, match=r"HF_HUB_OFFLINE is set.* not in the local Hugging Face cache"):
        resolve_model("someone/nothing-here")
    with pytest.raises(ModelError, match="neither a preset"):
        resolve_model("./someone/nothing-here")
