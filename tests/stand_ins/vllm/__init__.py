"""A stand-in of vLLM's interface, NOT vLLM: vLLM cannot be installed on the machines this project is tested on.

It implements the slice of the API that `sec_trl` calls (`LLM(...)`, `LLM.generate(prompts, sampling_params,
use_tqdm=...)`, `SamplingParams(...)`, outputs with `text`, `token_ids`, `cumulative_logprob`, `logprobs`,
`finish_reason`) and records every call in `$SEC_TRL_VLLM_STAND_IN_LOG` (one JSON object per line), so that tests can
check what sec_trl asked vLLM for. The "model" answers `\\boxed{<n>}` with n drawn from the request's seed, so a
fixed seed gives fixed answers and different seeds give different clusters. Nothing here is a language model.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field


__version__ = "0.0.0-stand-in"


def _log(event: str, **data) -> None:
    path = os.environ.get("SEC_TRL_VLLM_STAND_IN_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"event": event, "rank": os.environ.get("RANK", "0"), **data}, default=str) + "\n")


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    logprobs: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list
    cumulative_logprob: float | None
    logprobs: object
    finish_reason: str


@dataclass
class RequestOutput:
    prompt_token_ids: list
    outputs: list


class LLM:
    def __init__(self, model: str, **kwargs):
        self.model = model
        self.kwargs = kwargs
        _log("init", model=os.path.basename(str(model)), kwargs=kwargs)

    def generate(self, prompts, sampling_params=None, use_tqdm=True, **kwargs):
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        results = []
        for prompt, p in zip(prompts, params, strict=True):
            ids = prompt["prompt_token_ids"] if isinstance(prompt, dict) else list(str(prompt).encode())
            rng = random.Random(p.seed if p.seed is not None else 0)
            outputs = []
            for i in range(p.n):
                answer = rng.randint(1, 3)
                length = min(p.max_tokens, 3 + i % 2)
                outputs.append(
                    CompletionOutput(
                        index=i,
                        text=f"\\boxed{{{answer}}}",
                        token_ids=list(range(length)),
                        cumulative_logprob=-0.5 * length - answer,
                        logprobs=None,
                        finish_reason="length" if length == p.max_tokens else "stop",
                    )
                )
            results.append(RequestOutput(prompt_token_ids=list(ids), outputs=outputs))
        _log(
            "generate",
            num_prompts=len(prompts),
            seeds=[p.seed for p in params],
            n=params[0].n if params else 0,
            temperature=params[0].temperature if params else None,
            top_p=params[0].top_p if params else None,
        )
        return results
