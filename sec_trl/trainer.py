"""`SETGRPOTrainer`: TRL's `GRPOTrainer` with SENT's token-level loss (and the KL-Cov / Clip-Cov baselines)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate.logging import get_logger
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.trainer.utils import get_config_model_id, nanmax, nanmin

from .config import SETGRPOConfig
from .curriculum import CurriculumSampler, validate_semantic_entropy_column
from .curriculum_trainer import REF_MODEL_CHECKPOINT_NAME as REF_MODEL_CHECKPOINT_NAME
from .curriculum_trainer import CurriculumTrainerMixin
from .model_card import SENT_CITATION, card_model_name, tracker_links
from .regularizers import KL_TERM_REGULARIZERS, NO_REGULARIZER, REGULARIZERS


if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel
    from transformers import BitsAndBytesConfig
    from trl.trainer.grpo_trainer import EnvironmentFactory, RewardFunc, RolloutFunc


logger = get_logger(__name__)

# the inputs TRL's `_compute_loss` passes on to `_get_per_token_logps_and_entropies` as they are (vision models)
_MULTIMODAL_INPUTS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)

INERT_WARNING = (
    "token_regularizer={reg!r} is inert with this configuration: gradient_accumulation_steps={gas} is a multiple "
    "of steps_per_generation * num_iterations = {spg} * {it}, so every update is on-policy and the KL term "
    "|logp - old_logp| is exactly 0 (no value, no gradient). The loss reduces to plain policy gradient without "
    "clipping. To activate it, feed each rollout batch to more than one optimizer step, as in the SENT reference "
    "run: --steps_per_generation {spg_fix} or --num_iterations {it_fix} (each alone makes "
    "gradient_accumulation_steps not a multiple of steps_per_generation * num_iterations)."
)


@contextlib.contextmanager
def _tokens_removed(args):
    """``args`` with every ``*_token`` string field (TrainingArguments.to_dict's rule: `hub_token`) set to None
    inside the block, restored after."""
    saved = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(args)
        if f.name.endswith("_token") and isinstance(getattr(args, f.name, None), str)
    }
    try:
        for name in saved:
            setattr(args, name, None)
        yield args
    finally:
        for name, value in saved.items():
            setattr(args, name, value)


class SETGRPOTrainer(CurriculumTrainerMixin, GRPOTrainer):
    """
    GRPO with semantic- and token-entropy control (SENT, Cao et al. 2025, https://arxiv.org/abs/2512.04359).

    Drop-in replacement for [`trl.GRPOTrainer`] taking a [`SETGRPOConfig`]. What differs from `GRPOTrainer`:

    - `_compute_loss`: with `args.token_regularizer="none"`, TRL's `GRPOTrainer._compute_loss` itself. With a
      regulariser, `_regularized_loss`: a reduced copy of TRL's method (TRL 1.15 and 1.16 have the same one) in which
      the per-token policy term comes from the regulariser's pure function (`sec_trl.regularizers.REGULARIZERS`,
      functions in `sec_trl.losses`) instead of the clipped surrogate, and its metrics are logged; the changed lines
      are marked `# sec_trl`, and `tests/test_trainer.py` checks the copy against TRL's method with a regulariser
      whose effect is neutralised. Aggregation (`loss_type`), the `beta` KL to the reference model, the entropy
      bonus, `top_entropy_quantile`, the off-policy mask and the vLLM importance-sampling correction are TRL's.
      Two regulariser-only changes: while no optimizer step separates the rollout batch from the update (the step
      it was generated at is recorded), the regulariser gets the detached current log-probs as old ones, so its KL
      term is exactly 0 with exactly 0 gradient (docs/method.md, "On-policy rule"); and `clip_ratio/*` is not
      logged for `sent` / `kl_cov`, which do not clip. Around either, `cov/logp_advantage` is logged on every run
      from the log-probs of the loss's forward (`_get_per_token_logps_and_entropies` keeps them).
    - `__init__`: TRL's parameters, order and defaults (`tests/test_trainer.py` compares the signatures); it
      validates the curriculum's semantic-entropy column and its length (a `max_steps` past one pass of the
      curriculum needs `curriculum_replay`) before the model loads, and warns once when the
      configuration makes the KL term inert (fully on-policy updates).
    - `train`: first checks that every training prompt plus `max_completion_length` fits the model's context.
    - `_get_train_sampler`: with `args.curriculum`, a [`CurriculumSampler`] (low to high semantic entropy, in
      stages, same order on every process, same contract as TRL's `RepeatSampler`) instead of `RepeatSampler`.
    - `create_model_card`: the SENT card from `model_cards/` (settings, curves, citation, no local paths).
    - Hub uploads (`push_to_hub=True` with any `hub_strategy`, `push_to_hub()`, `save_model()` with `push_to_hub`):
      through `sec_trl.hub`, a staged copy without `training_args.bin`, local paths or tokens, with the SENT card
      (`init_hf_repo`, `_push_from_checkpoint`, `_save_checkpoint`, `push_to_hub`, `push_output_dir`). Nothing is
      contacted before the first save; a failed checkpoint push is reported once and training goes on.
    - `_save`: `training_args.bin` (a pickle of the args, in `output_dir` and every checkpoint) is written with
      `hub_token` (every `*_token` field) set to None: the token is never stored in plain text.
    - `_generate_and_score_completions` / `_calculate_rewards`: call TRL's, then log the curriculum position and
      the online semantic entropy of the GRPO groups; record the optimizer step of each rollout batch.
    - With `args.curriculum_stage_restart`: at the first rollout batch of each new stage the optimizer state is
      cleared and (with `beta > 0`) the reference model becomes the current policy; `create_scheduler` builds one
      learning-rate schedule per stage; checkpoints carry the replaced reference model (`_save_checkpoint`,
      `_load_from_checkpoint`). Not supported with DeepSpeed / FSDP (a ValueError says so).

    Everything else (generation, rewards, advantages, vLLM, PEFT, DeepSpeed, logging) is inherited unchanged.
    """

    _tag_names = ["trl", "grpo", "sent", "sec_trl"]
    # inside `_compute_loss`: the policy log-probs of its forward (see `_get_per_token_logps_and_entropies`)
    _loss_forward: list[torch.Tensor] | None = None
    _name = "SENT"
    _paper = {
        "title": "Efficient Reinforcement Learning with Semantic and Token Entropy for LLM Reasoning",
        "id": "2512.04359",
        "citation": SENT_CITATION,  # the one the SENT card prints
    }

    def __init__(
        self,
        model: str | PreTrainedModel | PeftModel,
        reward_funcs: RewardFunc | list[RewardFunc] | None = None,
        args: SETGRPOConfig | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset
        | IterableDataset
        | DatasetDict
        | IterableDatasetDict
        | dict[str, Dataset | IterableDataset]
        | None = None,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
        reward_processing_classes: PreTrainedTokenizerBase | list[PreTrainedTokenizerBase] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        quantization_config: BitsAndBytesConfig | None = None,
        peft_config: PeftConfig | None = None,
        tools: list[Callable] | None = None,
        rollout_func: RolloutFunc | None = None,
        environment_factory: EnvironmentFactory | dict[str, EnvironmentFactory] | None = None,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = SETGRPOConfig(f"{model_name.split('/')[-1]}-SENT")
        elif not isinstance(args, SETGRPOConfig):
            raise TypeError(
                f"SETGRPOTrainer needs args to be a SETGRPOConfig, got {type(args).__name__}; build it with "
                "SETGRPOConfig(**your_grpo_config.to_dict()) or use trl.GRPOTrainer."
            )
        if args.curriculum:  # fail before the model is loaded
            if train_dataset is None:
                raise ValueError("curriculum=True needs a train_dataset with a semantic-entropy column.")
            validate_semantic_entropy_column(train_dataset, args.curriculum_se_column)
            from .preflight import check_curriculum_replay

            check_curriculum_replay(len(train_dataset), args)  # a max_steps past one pass of the curriculum
        self._curriculum_sampler: CurriculumSampler | None = None
        self._curriculum_plan = None
        # the first failed checkpoint push (then no more are tried); see _push_checkpoint
        self.hub_push_failure: BaseException | None = None
        super().__init__(
            model,
            reward_funcs,
            args,
            train_dataset,
            eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
            tools=tools,
            rollout_func=rollout_func,
            environment_factory=environment_factory,
        )
        # the base model as the card shows it: the embedded copy by name, a Hub id as is, a local path by its name
        self._card_base_model = card_model_name(model if isinstance(model, str) else get_config_model_id(model.config))
        # optimizer step (global_step) at which the buffered rollout batch was generated: while it is unchanged, no
        # optimizer step separates the rollout from the update and the regulariser is given old := current
        self._rollout_global_step: int | None = None
        # global steps at which a curriculum stage restart happened in this process (for logs and tests)
        self.stage_restarts: list[int] = []
        self._ref_model_restarted = False
        if args.curriculum_stage_restart:
            self._check_stage_restart_supported()
        if args.reward_timeout is not None:  # every reward function (not reward models) bounded per call
            from .rewards import with_timeout

            self.reward_funcs = [
                f if isinstance(f, torch.nn.Module) else with_timeout(f, args.reward_timeout, name)
                for f, name in zip(self.reward_funcs, self.reward_func_names, strict=True)
            ]
        if args.token_regularizer in KL_TERM_REGULARIZERS and args.kl_term_is_inert:
            fix = args.kl_term_activating_settings()
            message = INERT_WARNING.format(
                reg=args.token_regularizer,
                gas=args.gradient_accumulation_steps,
                spg=args.steps_per_generation,
                it=args.num_iterations,
                spg_fix=fix["steps_per_generation"],
                it_fix=fix["num_iterations"],
            )
            if self.accelerator.is_main_process:
                warnings.warn(message, UserWarning, stacklevel=2)

    def train(self, *args, **kwargs):
        """`Trainer.train`, after checking that every training prompt fits the model's context."""
        self._check_prompt_lengths()
        return super().train(*args, **kwargs)

    def _check_prompt_lengths(self) -> None:
        """The longest training prompt plus `max_completion_length` fits the model's context, before training
        (`sec_trl.preflight.check_prompt_lengths`; TRL never truncates prompts). At `train()`, not construction,
        so that building a trainer with TRL's defaults (512 completion tokens) on a small model stays possible."""
        from .preflight import check_prompt_lengths, model_context_length

        dataset = self.train_dataset
        if not isinstance(dataset, Dataset) or "prompt" not in dataset.column_names:
            return
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        model_config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
        check_prompt_lengths(
            dataset["prompt"],
            tokenizer,
            model_context_length(model_config, tokenizer),
            self.args.max_completion_length,
            self.chat_template_kwargs or None,
        )

    def create_model_card(self, model_name=None, dataset_name=None, tags=None, **kwargs):
        """The SENT card rendered from `model_cards/` (never TRL's generic one): `push_to_hub` and checkpoint saves
        call this. The base model is recorded from `model`; name the training data with
        `create_model_card(dataset_name="org/dataset")` (or `trainer.model_card_info = {"dataset_name": ...,
        "base_model": ..., "se_histogram": ...}`, as train.py does). Tracker runs (wandb, Trackio, Comet) are
        linked as in TRL's cards."""
        if not self.is_world_process_zero():
            return
        from .model_card import render_model_card

        info = {**getattr(self, "model_card_info", {}), **kwargs}
        render_model_card(
            output_dir=self.args.output_dir,
            args=self.args,
            log_history=self.state.log_history,
            base_model=info.get("base_model") or self._card_base_model,
            dataset_name=dataset_name or info.get("dataset_name"),
            hub_model_id=self.args.hub_model_id,
            se_histogram=info.get("se_histogram"),
            license=info.get("license"),
            tags=[tags] if isinstance(tags, str) else tags,
            tracker_links=tracker_links(),
        )

    # ----------------------------------------------------------------------------------------------------------------
    # saving and publishing: no token on disk, every upload staged by sec_trl.hub

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Trainer's save, with `training_args.bin` (a pickle of `self.args`) written without the Hub token."""
        with _tokens_removed(self.args):
            super()._save(output_dir, state_dict)

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """No network at construction (Trainer would create the repository here, so an offline run would fail
        before any work): the repository is created, if missing, by the first upload."""
        if self.is_world_process_zero():
            self.hub_model_id = self.args.hub_model_id or Path(self.args.output_dir).absolute().name
            self.push_in_progress = None

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Not Trainer's push, which writes `training_args.bin` into `output_dir` and uploads the folder as it is:
        `_save_checkpoint` pushes once the checkpoint is complete (the reference model included)."""

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.push_to_hub:
            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            self._push_checkpoint(os.path.join(self._get_output_dir(trial=trial), folder))

    def _hub_base_model(self) -> str | None:
        """What `adapter_config.json` names as the base model once uploaded (see `sec_trl.hub.hub_base_model`)."""
        return (getattr(self, "model_card_info", None) or {}).get("base_model") or self._card_base_model

    def _push_checkpoint(self, checkpoint_folder: str) -> None:
        """Push a saved checkpoint as `hub_strategy` says (`sec_trl.hub.checkpoint_parts`), from the main process.
        The first failure (offline, no token, ...) is logged once with how to push later, and stops further
        checkpoint pushes; training goes on (everything is on disk)."""
        from .hub import checkpoint_parts, push_failure_message, upload

        if not self.is_world_process_zero() or self.hub_push_failure is not None:
            return
        parts = checkpoint_parts(self.args, checkpoint_folder)
        if not parts:
            return
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        by_steps = str(getattr(self.args.save_strategy, "value", self.args.save_strategy)) == "steps"
        progress = f"step {self.state.global_step}" if by_steps else f"epoch {int(self.state.epoch or 0)}"
        try:
            self.hub_model_id, _ = upload(
                self.args,
                parts,
                base_model=self._hub_base_model(),
                commit_message=f"Training in progress, {progress}",
            )
        except Exception as exc:  # keep training: everything is on disk
            self.hub_push_failure = exc
            logger.warning(push_failure_message(exc, self.args.output_dir, repo_id=self.args.hub_model_id))

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs,
    ):
        """Trainer's `push_to_hub` (save the model, write the card, upload `output_dir` without its checkpoints),
        through `sec_trl.hub`: the SENT card (`kwargs` go to `create_model_card`, e.g. `dataset_name=...`), a staged
        copy without `training_args.bin`, local paths or tokens. Always blocking (the staged copy lives for the
        upload only). Returns the `CommitInfo` on the main process, None elsewhere; a failure raises
        `sec_trl.hub.HubPushError`, whose message says how to push the saved run later."""
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        model_name = kwargs.pop("model_name", None)
        if model_name is None and self.args.should_save:
            model_name = (self.args.hub_model_id or Path(self.args.output_dir).name).split("/")[-1]
        self.save_model(_internal_call=True)  # on every process (sharded saves), written by the main one
        if not self.is_world_process_zero():
            return None
        self.create_model_card(model_name=model_name, **kwargs)
        return self.push_output_dir(commit_message=commit_message, token=token, revision=revision, private=private)

    def push_output_dir(
        self,
        commit_message: str | None = "End of training",
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
    ):
        """Upload `output_dir` as it is on disk (final model, card and whatever else was saved there, without the
        checkpoints), staged by `sec_trl.hub`; nothing is saved or rendered first (`push_to_hub` does both). Main
        process only (None elsewhere). Raises `sec_trl.hub.HubPushError` on failure."""
        from .hub import HubPushError, output_dir_parts, push_failure_message, upload

        if not self.is_world_process_zero():
            return None
        try:
            self.hub_model_id, info = upload(
                self.args,
                output_dir_parts(self.args),
                base_model=self._hub_base_model(),
                commit_message=commit_message,
                token=token,
                private=private,
                revision=revision,
            )
        except Exception as exc:  # offline, no token, no permission, a leak: the local copy is complete
            message = push_failure_message(exc, self.args.output_dir, repo_id=self.args.hub_model_id)
            raise HubPushError(message) from exc
        return info

    def _generate_and_score_completions(self, inputs):
        if self.model.training:
            # No optimizer step has happened since this rollout while global_step stays at this value (TRL calls
            # this from training_step, inside the accumulation window that will first use the batch).
            self._rollout_global_step = self.state.global_step
            if self.args.curriculum_stage_restart and self._curriculum_sampler is not None:
                self._maybe_restart_stage()  # before TRL computes the reference log-probs of the new batch
        output = super()._generate_and_score_completions(inputs)
        if self._curriculum_sampler is not None and self.model.training:
            self._log_curriculum_position(inputs)
        return output

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        """TRL's; inside `_compute_loss` the first result (the policy's forward) is kept for its metrics."""
        result = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        )
        if self._loss_forward is not None and not self._loss_forward:
            self._loss_forward.append(result[0])
        return result

    def _compute_loss(self, model, inputs):
        """The loss: TRL's `GRPOTrainer._compute_loss` itself with `token_regularizer="none"`, the regularised copy
        (`_regularized_loss`) otherwise; then `cov/logp_advantage`, on every run, from the policy log-probs of the
        loss's own forward (kept by `_get_per_token_logps_and_entropies`)."""
        self._loss_forward = []
        try:
            if self.args.token_regularizer == NO_REGULARIZER:
                loss = super()._compute_loss(model, inputs)
            else:
                loss = self._regularized_loss(model, inputs)
            (per_token_logps,) = self._loss_forward
        finally:
            self._loss_forward = None
        mask = (
            inputs["completion_mask"] if "tool_mask" not in inputs else inputs["completion_mask"] * inputs["tool_mask"]
        )
        advantages = inputs["advantages"]
        advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
        mode = "train" if self.model.training else "eval"
        # the covariance whose sign drives the entropy change (Cui et al. 2025)
        self._metrics[mode]["cov/logp_advantage"].append(
            self._logp_advantage_covariance(per_token_logps, advantages, mask)
        )
        return loss

    def _logp_advantage_covariance(self, per_token_logps, advantages, mask) -> float:
        """Cov(log pi(y_t), A_t) over the valid tokens of the global batch (all processes), one reduce.

        Under softmax policy-gradient updates the token entropy changes by about minus this covariance (Cui et al.
        2025, arXiv 2505.22617): a positive value means confident tokens are being reinforced, i.e. entropy falls.
        """
        mask = mask.to(per_token_logps.dtype)
        logps = per_token_logps.detach()
        adv = advantages.detach().to(logps.dtype).expand_as(logps)
        stats = torch.stack([mask.sum(), (adv * mask).sum(), (logps * mask).sum(), (adv * logps * mask).sum()])
        n, sum_a, sum_l, sum_al = self.accelerator.reduce(stats, reduction="sum").tolist()
        if n <= 0:
            return float("nan")
        return sum_al / n - (sum_a / n) * (sum_l / n)

    def _log_token_regularizer_metrics(self, mode, info, log_ratio, mask):
        """Per mask of the registry entry: fraction of valid tokens selected, their number, mean |log ratio| on them
        (one reduce); then its scalars (SENT's entropy threshold), averaged over processes."""
        regularizer = REGULARIZERS[self.args.token_regularizer]
        mask = mask.bool()
        abs_log_ratio = log_ratio.detach().abs()
        zero = abs_log_ratio.new_zeros(())
        stats = [mask.sum().to(abs_log_ratio.dtype)]
        for name in regularizer.masks:
            selected = info[name] & mask
            stats += [selected.sum().to(abs_log_ratio.dtype), torch.where(selected, abs_log_ratio, zero).sum()]
        totals = self.accelerator.reduce(torch.stack(stats), reduction="sum").tolist()
        n_valid = max(totals[0], 1.0)
        prefix = regularizer.name
        for i, name in enumerate(regularizer.masks):
            count, ratio_sum = totals[1 + 2 * i], totals[2 + 2 * i]
            self._metrics[mode][f"{prefix}/{name}_frac"].append(count / n_valid)
            self._metrics[mode][f"{prefix}/{name}_tokens"].append(count)  # k, summed over processes
            self._metrics[mode][f"{prefix}/{name}_abs_log_ratio"].append(ratio_sum / max(count, 1.0))
        for name in regularizer.scalars:
            values = self.accelerator.gather(info[name].detach().float().reshape(1))
            self._metrics[mode][f"{prefix}/{name}"].append(values.nanmean().item())

    def _regularized_loss(self, model, inputs):
        """TRL's `GRPOTrainer._compute_loss` (the same in TRL 1.15 and 1.16), in TRL's order and written more tightly,
        without the branches of the settings `SETGRPOConfig` rejects with a regulariser (other loss types,
        sequence-level importance sampling, `delta`); the lines that differ in meaning are marked `# sec_trl`.
        `test_neutral_regularizer_matches_grpo` (tests/test_trainer.py) compares it with TRL's method."""
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        mask = inputs["completion_mask"] * inputs["tool_mask"] if "tool_mask" in inputs else inputs["completion_mask"]
        per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, inputs["completion_ids"].size(1), compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled, **{key: inputs.get(key) for key in _MULTIMODAL_INPUTS},
        )  # fmt: skip
        entropy_mask = None
        if self.top_entropy_quantile < 1.0:
            entropy_mask = self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)
        advantages = inputs["advantages"].unsqueeze(1) if inputs["advantages"].dim() == 1 else inputs["advantages"]
        old_per_token_logps = inputs.get("old_per_token_logps")
        old_per_token_logps = per_token_logps.detach() if old_per_token_logps is None else old_per_token_logps
        if self.off_policy_mask_threshold is not None:
            off_policy_mask = self.get_off_policy_mask(
                advantages=advantages, per_token_logps=per_token_logps, mask=mask,
                sampling_per_token_logps=inputs.get("sampling_per_token_logps", old_per_token_logps),
                off_policy_threshold=self.off_policy_mask_threshold,
            )  # fmt: skip
        coef_1 = torch.exp(per_token_logps - old_per_token_logps)  # importance_sampling_level == "token"
        if self.beta != 0.0:
            ref_per_token_logps = inputs["ref_per_token_logps"]
            per_token_kl = (
                torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1
            )
            if self.args.use_bias_correction_kl:
                per_token_kl = per_token_kl * coef_1

        # sec_trl: the regulariser replaces TRL's clipped surrogate. Where no optimizer step separates the rollout
        # from this update (docs/method.md, "On-policy rule"), it gets the detached current log-probs as old ones.
        regularizer = REGULARIZERS[self.args.token_regularizer]  # sec_trl
        on_policy = not self.model.training or self.state.global_step == self._rollout_global_step  # sec_trl
        regularizer_old = per_token_logps.detach() if on_policy else old_per_token_logps  # sec_trl
        per_token_loss, regularizer_info = regularizer.loss(  # sec_trl
            per_token_logps, regularizer_old, advantages, entropies, mask, **regularizer.settings(self.args)
        )
        if self.off_policy_mask_threshold is not None:
            per_token_loss = per_token_loss * off_policy_mask
        if entropy_mask is not None:
            per_token_loss = per_token_loss * entropy_mask
        if self.use_vllm and self.vllm_importance_sampling_correction:
            per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]
        if self.beta != 0.0:
            per_token_loss = per_token_loss + self.beta * per_token_kl

        mode = "train" if self.model.training else "eval"
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0  # no accum in eval
        if self.loss_type == "grpo":
            loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
        elif self.loss_type == "bnpo":
            loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
        elif self.loss_type == "dr_grpo":
            loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * self.max_completion_length)
        else:  # dapo: `num_items_in_batch` spans the generation batch, so rescale it to one accumulation window
            dapo_normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                dapo_normalizer = dapo_normalizer * normalizer / self.args.steps_per_generation
            loss = (per_token_loss * mask).sum() / dapo_normalizer
            normalizer = 1.0  # in TRL, dapo's policy_loss is the normalised loss
        policy_loss = loss.detach()
        loss = loss / normalizer

        if self._entropy_bonus_enabled:
            effective_mask = mask if entropy_mask is None else mask * entropy_mask
            accumulation_factor = self.current_gradient_accumulation_steps if mode == "train" else 1.0
            entropy_loss = (
                (entropies * effective_mask).sum() / effective_mask.sum().clamp(min=1.0) / accumulation_factor
            )
            apply_coef = self.entropy_coef
            if self.use_adaptive_entropy and not self._last_world_entropy <= self.args.entropy_target:
                apply_coef = 0.0
            loss = loss - apply_coef * entropy_loss
            self._metrics[mode]["policy_loss"].append(self.accelerator.gather(policy_loss).nanmean().item())
            if self.use_adaptive_entropy and mode == "train":
                stats = torch.stack([(entropies * effective_mask).sum(), effective_mask.sum()]).detach()
                window = self._entropy_window_stats
                self._entropy_window_stats = stats if window is None else window + stats
                if self.accelerator.sync_gradients:
                    window_stats = self.accelerator.reduce(self._entropy_window_stats, reduction="sum")
                    world_entropy = (window_stats[0] / window_stats[1].clamp(min=1.0)).item()
                    args = self.args
                    if world_entropy <= args.entropy_target:
                        self.entropy_coef = min(self.entropy_coef + args.entropy_coef_delta, args.entropy_coef_max)
                    else:
                        self.entropy_coef = max(self.entropy_coef - args.entropy_coef_delta, args.entropy_coef_min)
                    self._last_world_entropy = world_entropy
                    self._entropy_window_stats = None
            if mode == "train" and self.accelerator.sync_gradients:
                self._metrics[mode]["entropy_coef"].append(self.entropy_coef)
        if self.aux_loss_enabled:
            normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
            loss = loss + self.router_aux_loss_coef * aux_loss / normalizer
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())

        def masked_seq_mean(x):
            if x.shape[1] == 1:  # TRL's rule, also taken when the completions are 1 token long
                return x.squeeze(1)
            return (x * mask).sum(-1) / mask.sum(-1)

        def global_masked_mean(x):
            if x.shape[1] == 1:
                local_sum, local_count = x.sum(), torch.tensor(float(x.shape[0]), device=x.device)
            else:
                local_sum, local_count = (x * mask).sum(), mask.sum().float()
            totals = self.accelerator.reduce(torch.stack([local_sum, local_count]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        if self.beta != 0.0:
            self._metrics[mode]["kl"].append(global_masked_mean(per_token_kl))
        self._metrics[mode]["entropy"].append(global_masked_mean(entropies))
        self._log_token_regularizer_metrics(mode, regularizer_info, per_token_logps - regularizer_old, mask)  # sec_trl
        if regularizer.clips:  # sec_trl: no clip_ratio/* for the regularisers that do not clip
            is_low_clipped = (coef_1 < 1 - self.epsilon_low) & (advantages < 0)
            is_high_clipped = (coef_1 > 1 + self.epsilon_high) & (advantages > 0)
            is_region_clipped = is_low_clipped | is_high_clipped
            self._metrics[mode]["clip_ratio/low_mean"].append(global_masked_mean(is_low_clipped.float()))
            self._metrics[mode]["clip_ratio/high_mean"].append(global_masked_mean(is_high_clipped.float()))
            self._metrics[mode]["clip_ratio/region_mean"].append(global_masked_mean(is_region_clipped.float()))
            gathered_low_clip = self.accelerator.gather(masked_seq_mean(is_low_clipped.float()))
            self._metrics[mode]["clip_ratio/low_min"].append(nanmin(gathered_low_clip).item())
            gathered_high_clip = self.accelerator.gather(masked_seq_mean(is_high_clipped.float()))
            self._metrics[mode]["clip_ratio/high_max"].append(nanmax(gathered_high_clip).item())
        return loss
