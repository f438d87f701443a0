"""The semantic-entropy side of `SETGRPOTrainer`: the curriculum sampler, stage restarts, the curriculum metrics and
the online semantic entropy of each GRPO group.

A mixin placed before `GRPOTrainer` in `SETGRPOTrainer`'s bases: its overrides (`_get_train_sampler`,
`create_scheduler`, `_save_checkpoint`, `_load_from_checkpoint`) call `super()`, i.e. TRL's and transformers' own
methods, and change nothing unless `curriculum` (and, for the restart, `curriculum_stage_restart`) is on.
"""

from __future__ import annotations

import os

import torch
from accelerate.logging import get_logger
from accelerate.utils import gather_object, is_peft_model
from trl.trainer.callbacks import SyncRefModelCallback

from .curriculum import CurriculumPlan, build_curriculum_sampler
from .rewards import checker_for, completion_text
from .semantic_entropy import cluster_answers, discrete_semantic_entropy


logger = get_logger(__name__)

REF_MODEL_CHECKPOINT_NAME = "sec_trl_ref_model.pt"
"""Written into each checkpoint once a curriculum stage restart has replaced the reference model (beta > 0)."""


class CurriculumTrainerMixin:
    """Semantic-entropy curriculum for a `GRPOTrainer` subclass (see the module docstring)."""

    def _get_train_sampler(self, dataset=None):
        if not self.args.curriculum:
            return super()._get_train_sampler(dataset)
        dataset = self.train_dataset if dataset is None else dataset
        self._curriculum_sampler = build_curriculum_sampler(dataset, self.args)
        self._curriculum_plan = CurriculumPlan.from_sampler(self._curriculum_sampler, self.args)
        if self.accelerator.is_main_process:
            logger.info("Semantic-entropy curriculum:\n%s", self._curriculum_sampler.summary())
            logger.info(self._curriculum_plan.describe())
        return self._curriculum_sampler

    # ------------------------------------------------------------------------------------ curriculum stage restart
    def _check_stage_restart_supported(self):
        """The restart swaps optimizer state and reference weights in place: only where that is plain torch."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(
                "curriculum_stage_restart=True is not supported with DeepSpeed or FSDP (the optimizer state and the "
                "reference model are sharded and were not tested here; under ZeRO-3 the reference copy would need "
                "gathered parameters). Run each stage as its own run instead (stage 2 from the stage-1 checkpoint), "
                "or use DDP / a single process."
            )
        if self.beta != 0.0 and self.ref_model is None and is_peft_model(self.model):
            raise ValueError(
                "curriculum_stage_restart=True with beta > 0 and PEFT: the reference model is the base model with the "
                "adapter disabled and cannot become the current policy. Set beta=0, or train without PEFT."
            )

    def _chunk_info(self) -> dict:
        """The curriculum sampler's schedule entry of the rollout batch feeding the current micro-batch
        (`self._step` restarts at 0 on resume; `global_step` does not)."""
        gas = self.args.gradient_accumulation_steps
        chunk = self._curriculum_plan.chunk_of(self.state.global_step, self._step % gas)
        return self._curriculum_sampler.chunk_info(chunk)

    def _stage_of_step(self, step: int) -> int:
        """Curriculum stage of the rollout batch that optimizer step `step` (0-based) starts with."""
        return self._curriculum_plan.stage_of_step(step)

    def _stage_start_steps(self, num_training_steps: int) -> list[int]:
        """Optimizer steps at which a stage starts: 0, then every step whose stage differs from the previous one."""
        stages = [self._stage_of_step(step) for step in range(num_training_steps)]
        return [0] + [step for step in range(1, num_training_steps) if stages[step] != stages[step - 1]]

    def _maybe_restart_stage(self):
        """At the first rollout batch of a new stage: fresh optimizer state and, with beta > 0, reference := policy.

        Stateless: decided from the schedule and the step alone. A run resumed from a checkpoint saved after the
        boundary does not restart again (its optimizer state, saved after the restart, is loaded, and the
        reference model is loaded from the checkpoint); one resumed from before the boundary restarts once. A
        rollout regenerated in the middle of a batch's span (TRL does so after a resume) is not a boundary.
        """
        gas = self.args.gradient_accumulation_steps
        micro_step = self.state.global_step * gas + self._step % gas
        if micro_step == 0 or micro_step % self._curriculum_plan.generate_every != 0:
            return
        step = micro_step // gas
        if self._stage_of_step(step) == self._stage_of_step(step - 1):
            return
        if self.optimizer is not None:
            inner = getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate's AcceleratedOptimizer
            inner.state.clear()  # torch optimizers re-create their state (e.g. Adam's moments, step 0) lazily
        if self.ref_model is not None:
            policy = self.accelerator.unwrap_model(self.model)
            SyncRefModelCallback.sync_target_model(policy, self.accelerator.unwrap_model(self.ref_model), alpha=1.0)
            self._ref_model_restarted = True
        self.stage_restarts.append(self.state.global_step)
        logger.info(
            "Curriculum stage %d starts at optimizer step %d: optimizer state reset%s (curriculum_stage_restart).",
            self._stage_of_step(step),
            step,
            ", reference model := current policy" if self.ref_model is not None else "",
        )

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """With `curriculum_stage_restart`, one schedule per stage: each stage restarts `lr_scheduler_type` (warm-up
        included) over its own steps, as a new run would. Built as one `LambdaLR` over the whole run, a function of
        the step alone, so a resumed run continues it exactly."""
        if not (self.args.curriculum_stage_restart and self._curriculum_sampler is not None) or (
            self.lr_scheduler is not None
        ):
            return super().create_scheduler(num_training_steps, optimizer)
        from bisect import bisect_right

        from transformers import get_scheduler

        starts = self._stage_start_steps(num_training_steps)
        ends = [*starts[1:], num_training_steps]
        factors = []
        for start, end in zip(starts, ends, strict=True):
            length = max(end - start, 1)
            probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
            stage_scheduler = get_scheduler(
                self.args.lr_scheduler_type,
                optimizer=probe,
                num_warmup_steps=self.args.get_warmup_steps(length),
                num_training_steps=length,
                scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
            )
            if not isinstance(stage_scheduler, torch.optim.lr_scheduler.LambdaLR):
                raise ValueError(
                    f"curriculum_stage_restart=True restarts the learning-rate schedule per stage, which needs a "
                    f"step-function schedule; lr_scheduler_type={self.args.lr_scheduler_type!r} is not one."
                )
            factors.append(stage_scheduler.lr_lambdas[0])

        def factor(step: int) -> float:
            stage = bisect_right(starts, step) - 1
            return factors[stage](step - starts[stage])

        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self._ref_model_restarted and self.ref_model is not None and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            state = self.accelerator.unwrap_model(self.ref_model).state_dict()
            torch.save(
                {k: v.detach().cpu() for k, v in state.items()}, os.path.join(folder, REF_MODEL_CHECKPOINT_NAME)
            )

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, REF_MODEL_CHECKPOINT_NAME)
        if self.ref_model is not None and os.path.isfile(path):
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.accelerator.unwrap_model(self.ref_model).load_state_dict(state)
            self._ref_model_restarted = True

    def _log_curriculum_position(self, inputs):
        """Stage and progress from the sampler's schedule; the batch's SE range from the data itself."""
        info = self._chunk_info()
        se = torch.tensor([float(x[self.args.curriculum_se_column]) for x in inputs], device=self.accelerator.device)
        # one collective for both ends of the range: (-min, max) per process, reduced by max
        extremes = self.accelerator.gather(torch.stack([-se.min(), se.max()]).reshape(1, 2)).amax(dim=0).tolist()
        se_min, se_max = -extremes[0], extremes[1]
        metrics = self._metrics["train"]
        metrics["curriculum/stage"].append(float(info["stage"]))
        metrics["curriculum/progress"].append(info["progress"])
        metrics["curriculum/se_min"].append(se_min)
        metrics["curriculum/se_max"].append(se_max)

    # ------------------------------------------------------------------------------------ online semantic entropy
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.args.log_semantic_entropy:
            self._log_online_semantic_entropy(completions)
        return rewards_per_func

    def _log_online_semantic_entropy(self, completions):
        """Semantic entropy of each GRPO group, from the completions that already exist (no extra generation),
        clustered by `se_cluster_method` (math-verify checks bounded by `answer_timeout`).

        A group's completions are spread over processes; gathered in process order they are contiguous blocks of
        `num_generations`, the layout TRL's advantage computation relies on too.
        """
        texts = gather_object([completion_text(c) for c in completions])
        if not self.accelerator.is_main_process:
            return
        g = self.num_generations
        entropies, clusters = [], []
        for start in range(0, len(texts) - g + 1, g):
            ids = cluster_answers(
                texts[start : start + g],
                method=self.args.se_cluster_method,
                checker=checker_for(self.args.answer_timeout) if self.args.se_cluster_method == "math" else None,
                lexical_threshold=self.args.se_lexical_threshold,
                time_budget=self.args.semantic_entropy_time_budget,
            )
            entropies.append(discrete_semantic_entropy(ids))
            clusters.append(max(ids) + 1)
        if entropies:
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["semantic_entropy/mean"].append(sum(entropies) / len(entropies))
            self._metrics[mode]["semantic_entropy/num_clusters"].append(sum(clusters) / len(clusters))
