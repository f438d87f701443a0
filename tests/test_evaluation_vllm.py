"""`python -m sec_trl.evaluate --use_vllm true` against a stand-in of vLLM's interface, not vLLM.

vLLM cannot be installed on these machines (it needs CUDA), so this test injects a small fake `vllm` module through
`sys.modules`: `LLM(model=..., **kwargs).generate(prompts, sampling_params, use_tqdm=...)` returning objects with
`.outputs[j].text / .token_ids / .finish_reason`, and `SamplingParams(n, temperature, top_p, max_tokens, seed)`,
the parts of vLLM's API the sampler uses. It checks what sec_trl hands to vLLM and how it reads vLLM's answer; it says
nothing about vLLM itself, which has not been run here.
"""

import importlib.machinery
import json
import sys
import types

import pytest


class FakeSamplingParams:
    def __init__(self, n=1, temperature=1.0, top_p=1.0, max_tokens=16, seed=None):
        self.n, self.temperature, self.top_p, self.max_tokens, self.seed = n, temperature, top_p, max_tokens, seed


class FakeLLM:
    """Every even sample answers \\boxed{5} and stops; every odd one runs to max_tokens (finish_reason 'length')."""

    instances = []

    def __init__(self, model, **kwargs):
        self.model, self.kwargs, self.calls = model, kwargs, []
        FakeLLM.instances.append(self)

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((prompts, sampling_params))
        results = []
        for _prompt, params in zip(prompts, sampling_params, strict=True):
            outputs = []
            for j in range(params.n):
                if j % 2 == 0:
                    outputs.append(types.SimpleNamespace(text="\\boxed{5}", token_ids=[1, 2, 3], finish_reason="stop"))
                else:
                    ids = [7] * params.max_tokens
                    outputs.append(types.SimpleNamespace(text="so the answer", token_ids=ids, finish_reason="length"))
            results.append(types.SimpleNamespace(outputs=outputs))
        return results


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", loader=None)  # importlib.util.find_spec finds it
    module.LLM, module.SamplingParams = FakeLLM, FakeSamplingParams
    FakeLLM.instances = []
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def test_use_vllm_hands_vllm_the_prompts_and_settings_and_reads_its_outputs(fake_vllm, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from sec_trl.data import PromptFormat
    from sec_trl.evaluation.cli import main
    from sec_trl.generation import evaluation_seed as derive_seed
    from sec_trl.generation import prompt_token_ids

    data = [{"question": "What is 2 + 3?", "solution": "5"}, {"question": "What is 2 + 2?", "solution": "4"}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    report = main(
        ["--model_name_or_path", tiny_model_dir, "--use_vllm", "true", "--dataset_name", str(tmp_path / "q.jsonl"),
         "--dataset_prompt_column", "question", "--dataset_answer_column", "solution", "--k", "4",
         "--temperature", "0.6", "--top_p", "0.95", "--max_new_tokens", "9", "--seed", "11",
         "--vllm_gpu_memory_utilization", "0.5", "--output_dir", str(tmp_path / "out"), "--show_progress", "false"]
    )  # fmt: skip

    (llm,) = FakeLLM.instances
    assert llm.model == tiny_model_dir and llm.kwargs["seed"] == 11 and llm.kwargs["gpu_memory_utilization"] == 0.5
    ((prompts, params),) = llm.calls
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected = [prompt_token_ids(tokenizer, PromptFormat().apply(r["question"])) for r in data]
    assert prompts == [{"prompt_token_ids": ids} for ids in expected]  # chat-templated, as in training
    assert [(p.n, p.temperature, p.top_p, p.max_tokens) for p in params] == [(4, 0.6, 0.95, 9)] * 2
    assert [p.seed for p in params] == [derive_seed(11, 0), derive_seed(11, 1)]  # one seed per prompt index

    (result,) = report["results"].values()
    assert result["per_prompt_correct"] == [2, 0]  # \\boxed{5} is right for 2 + 3 only
    assert result["avg@4"] == 0.25 and result["pass@4"] == 0.5
    assert result["truncated_frac"] == 0.5  # finish_reason == "length"
    assert result["mean_completion_length"] == (3 + 9) / 2  # len(token_ids)
    assert report["backend"] == "vllm"
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["results"] == report["results"]
