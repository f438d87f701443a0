"""A `SETGRPOTrainer` on a tiny model and hand-built batches shaped like `_generate_and_score_completions`' output,
for the tests that call the trainer's loss and logging directly."""

from __future__ import annotations

import warnings

import torch
from datasets import Dataset

from sec_trl import SETGRPOConfig, SETGRPOTrainer


def length_reward(completions, **kwargs):
    """Varies across a group, so advantages are non-zero (a random tiny model never answers arithmetic)."""
    return [float(len(c[0]["content"] if isinstance(c, list) else c)) for c in completions]


def tiny_dataset(n=8):
    return Dataset.from_dict({"prompt": [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(n)]})


def make_config(tmp_path, **overrides) -> SETGRPOConfig:
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    return SETGRPOConfig(**{**kwargs, **overrides})


def make_trainer(model_dir, tmp_path, *, train_dataset=None, reward_funcs=length_reward, **overrides):
    """A trainer in train mode, ready for `_compute_loss` outside `train()` (which would set the accumulation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SETGRPOTrainer(
            model=model_dir,
            reward_funcs=reward_funcs,
            args=make_config(tmp_path, **overrides),
            train_dataset=tiny_dataset() if train_dataset is None else train_dataset,
        )
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's training loop; the loss reads it
    trainer.model.train()
    return trainer


def batch(trainer, prompt_ids, completion_ids, completion_mask, advantages, *, prompt_mask=None):
    """The loss inputs for these ids (on-policy: no old log-probs yet), plus the model's `(logps, entropies)`."""
    completion_mask = torch.as_tensor(completion_mask, dtype=torch.long)
    prompt_mask = torch.ones_like(prompt_ids) if prompt_mask is None else prompt_mask
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": torch.as_tensor(advantages, dtype=torch.float32),
        "num_items_in_batch": completion_mask.sum().float(),
    }
    return inputs, logps_and_entropies(trainer, inputs, grad=False)


def logps_and_entropies(trainer, inputs, *, grad=True):
    """TRL's own `_get_per_token_logps_and_entropies` on the batch: what the loss sees."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.set_grad_enabled(grad):
        logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, attention, inputs["completion_ids"].size(1), compute_entropy=True
        )
    return logps, entropies


def random_batch(trainer, seed, *, batch_size=6, prompt_len=5, completion_len=8, lengths=(8, 3, 6, 1, 7, 5)):
    """Random ids and advantages, left-padded prompts, completions of `lengths` tokens, and off-policy old log-probs
    (the model's own + Gaussian noise of std 0.2), as on the 2nd optimizer step of a rollout batch."""
    g = torch.Generator().manual_seed(seed)
    vocab = trainer.model.config.vocab_size
    prompt_ids = torch.randint(0, vocab, (batch_size, prompt_len), generator=g)
    prompt_mask = torch.ones(batch_size, prompt_len, dtype=torch.long)
    prompt_mask[0, :2] = 0
    completion_ids = torch.randint(0, vocab, (batch_size, completion_len), generator=g)
    completion_mask = torch.arange(completion_len)[None] < torch.tensor(lengths)[:, None]
    advantages = torch.randn(batch_size, generator=g)
    inputs, (logps, _) = batch(
        trainer, prompt_ids, completion_ids, completion_mask, advantages, prompt_mask=prompt_mask
    )
    inputs["old_per_token_logps"] = logps + 0.2 * torch.randn(logps.shape, generator=g)
    return inputs


def loss_and_grads(trainer, inputs, loss_fn=None):
    """`loss_fn(trainer)` (default: the trainer's `_compute_loss` on `inputs`), backpropagated: (loss, grads)."""
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, inputs) if loss_fn is None else loss_fn(trainer)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


class CounterEnvironment:
    """A TRL `environment_factory` environment that owns its reward (`get_reward`): GRPOTrainer then needs no
    `reward_funcs`. Its one tool adds to a counter; the reward is the counter."""

    def reset(self, **kwargs):
        self.count = 0

    def increment(self, step: int) -> str:
        """
        Add to the counter.

        Args:
            step: How much to add.

        Returns:
            The new value of the counter.
        """
        self.count += step
        return str(self.count)

    def get_reward(self) -> float:
        return float(self.count)


def tool_calling_tokenizer(model_dir):
    """The tiny model's tokenizer with TRL's Qwen3 chat template (SmolLM2's cannot render tool calls), as
    `environment_factory` requires."""
    from pathlib import Path

    import trl
    from transformers import AutoTokenizer
    from trl.chat_template_utils import add_response_schema

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    return add_response_schema(tokenizer)
