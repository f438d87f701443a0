"""The mutants of `run_mutants.py`: small, realistic bugs in the core modules, one at a time.

Each mutant replaces the `occurrence`-th (0-based) match of `old` by `new` in `file`, and names the fast test files
that should catch it (run in that order, stopping at the first failure). `why` says what a user would suffer.
"""

LOSS = ["tests/test_losses.py", "tests/test_trainer_settings.py", "tests/test_metrics.py"]
TRAINER = ["tests/test_trainer_settings.py", "tests/test_metrics.py", "tests/test_trainer.py"]
CURRICULUM = ["tests/test_curriculum.py", "tests/test_metrics.py", "tests/test_trainer.py"]
SEMANTIC = ["tests/test_semantic_entropy.py", "tests/test_semantic_entropy_edges.py", "tests/test_metrics.py"]
CHECKER = ["tests/test_rewards.py", "tests/test_semantic_entropy.py"]
TWO_PROCESSES = ["tests/test_resume.py::test_two_processes_follow_the_single_process_stream_across_a_resume"]


def _m(id, file, old, new, why, tests, occurrence=0, slow=None):
    """`slow`: test files beyond the fast set that catch it (run with `run_mutants.py --slow`)."""
    return dict(id=id, file=file, old=old, new=new, why=why, tests=tests, occurrence=occurrence, slow=slow)


REGISTRY = ["tests/test_trainer_settings.py", "tests/test_regularizers.py", "tests/test_metrics.py"]

L, T, R, CT, C, E, A, AX = (
    f"sec_trl/{m}.py"
    for m in (
        "losses",
        "trainer",
        "regularizers",
        "curriculum_trainer",
        "curriculum",
        "semantic_entropy",
        "answer_checking",
        "answer_extraction",
    )
)


def _field(field, keyword):
    """One line of a multi-line `fields={...}` dict of `sec_trl/regularizers.py`."""
    return f'                "{field}": "{keyword}",\n'


KL_COV_FIELDS = 'fields={"cov_ratio": "cov_ratio", "kl_cov_coef": "kl_coef"},'

MUTANTS = [
    # ---- losses.py ------------------------------------------------------------------------------------------------
    _m(
        "L1",
        L,
        ".to(torch.int64).clamp(min=1)",
        ".to(torch.int64).clamp(min=0)",
        "a tiny batch selects no token",
        LOSS,
    ),
    _m(
        "L2",
        L,
        "tie_pick = tied & (torch.cumsum(tied, 0) <= needed)",
        "tie_pick = tied & (torch.cumsum(tied, 0) <= needed + 1)",
        "k + 1 tokens selected when the k-th value is tied",
        LOSS,
    ),
    _m(
        "L3",
        L,
        "return (advantages - mean_a) * (logps - mean_l)",
        "return (advantages - mean_a) * logps",
        "covariance not centred in logp",
        LOSS,
    ),
    _m("L4", L, "per_token_logps, over=low_entropy)", "per_token_logps, over=mask)", "SENT cov over all tokens", LOSS),
    _m(
        "L5",
        L,
        "    low_cov = low_cov & ~high_cov  # high wins on overlap\n",
        "",
        "overlap counted as low-cov",
        LOSS,
    ),
    _m("L6", L, "kl_coef * low_entropy_kl_coef", "low_entropy_kl_coef", "rest of L ignores kl_coef", LOSS, 1),
    _m("L7", L, "coef * log_ratio.abs()", "coef * log_ratio", "SENT penalty signed instead of |.|", LOSS),
    _m("L8", L, "    loss = loss.masked_fill(~mask, 0)\n", "", "SENT loss not 0 on padding", LOSS),
    _m(
        "L9",
        L,
        'torch.where(n_valid > 0, v.reshape(()), float("nan"))',
        'torch.where(n_valid > 0, entropies.masked_fill(~low, torch.inf).amin(), float("nan"))',
        "entropy threshold = min of L",
        LOSS,
    ),
    _m(
        "L10",
        L,
        "mask.numel()), largest=True, then_lowest=ties)",
        "mask.numel()), largest=False, then_lowest=ties)",
        "KL-Cov picks lowest cov",
        LOSS,
    ),
    _m("L11", L, "(clipped > unclipped) & mask", "(clipped >= unclipped) & mask", "ties count as PPO-clipped", LOSS),
    _m(
        "L12",
        L,
        "& (cov < clip_cov_upper) & mask & ~ppo_clipped",
        "& (cov < clip_cov_upper) & mask",
        "Clip-Cov draws PPO-clipped tokens",
        LOSS,
    ),
    _m(
        "L13", L, "1 - epsilon_low, 1 + epsilon_high", "1 - epsilon_low, 1 + epsilon_low", "epsilon_high ignored", LOSS
    ),
    _m(
        "L14",
        L,
        "count = over.count_nonzero().clamp(min=1)",
        "count = over.numel()",
        "covariance means include padding",
        LOSS,
    ),
    _m(
        "L15",
        L,
        "sentinels.masked_fill(position < k_bound - k, beat)",
        "sentinels.masked_fill(position <= k_bound - k, beat)",
        "large covariance selections one token short",
        LOSS,
    ),
    _m(
        "L16",
        L,
        "low_sentinels = (n_valid - k).clamp(min=0)",
        "low_sentinels = (n_valid - k + 1).clamp(min=0)",
        "low-entropy set one token short",
        LOSS,
    ),
    # ---- regularizers.py: the settings each regulariser is given (the trainer passes `entry.settings(args)`) --------
    *[
        _m(f"T{i + 1}", R, old, new, f"{field} not passed ({reg})", REGISTRY, occurrence)
        for i, (field, reg, old, new, occurrence) in enumerate(
            [
                ("low_entropy_quantile", "sent", _field("low_entropy_quantile", "low_entropy_quantile"), "", 0),
                ("cov_ratio", "sent", _field("cov_ratio", "cov_ratio"), "", 0),
                ("kl_cov_coef", "sent", _field("kl_cov_coef", "kl_coef"), "", 0),
                ("high_cov_coef", "sent", _field("high_cov_coef", "high_cov_coef"), "", 0),
                ("low_cov_coef", "sent", _field("low_cov_coef", "low_cov_coef"), "", 0),
                ("low_entropy_kl_coef", "sent", _field("low_entropy_kl_coef", "low_entropy_kl_coef"), "", 0),
                ("cov_ratio", "kl_cov", KL_COV_FIELDS, 'fields={"kl_cov_coef": "kl_coef"},', 0),
                ("kl_cov_coef", "kl_cov", KL_COV_FIELDS, 'fields={"cov_ratio": "cov_ratio"},', 0),
                ("cov_ratio", "clip_cov", _field("cov_ratio", "cov_ratio"), "", 1),
                ("clip_cov_lower", "clip_cov", _field("clip_cov_lower", "clip_cov_lower"), "", 0),
                ("clip_cov_upper", "clip_cov", _field("clip_cov_upper", "clip_cov_upper"), "", 0),
                ("epsilon", "clip_cov", _field("epsilon", "epsilon_low"), "", 0),
                ("epsilon_high", "clip_cov", _field("epsilon_high", "epsilon_high"), "", 0),
            ]
        )
    ],
    # ---- trainer.py: metrics ----------------------------------------------------------------------------------------
    _m("T14", T, "ratio_sum / max(count, 1.0)", "ratio_sum / n_valid", "*_abs_log_ratio over all tokens", TRAINER),
    _m("T15", T, "count / n_valid", "count / max(len(stats), 1)", "*_frac over the wrong count", TRAINER),
    _m(
        "T16",
        T,
        "abs_log_ratio = log_ratio.detach().abs()",
        "abs_log_ratio = log_ratio.detach()",
        "signed log ratio logged",
        TRAINER,
    ),
    # ---- curriculum_trainer.py: online semantic entropy, curriculum position and sampler settings -----------------
    _m("T17", CT, "texts[start : start + g]", "texts[start : start + g - 1]", "SE on 3 of 4 group members", TRAINER),
    _m(
        "T18",
        CT,
        "range(0, len(texts) - g + 1, g)",
        "range(0, len(texts) - g, g)",
        "last group left out of SE",
        TRAINER,
    ),
    _m("T19", CT, "clusters.append(max(ids) + 1)", "clusters.append(max(ids))", "num_clusters off by one", TRAINER),
    _m(
        "T20",
        CT,
        "chunk = self._curriculum_plan.chunk_of(self.state.global_step, self._step % gas)",
        "chunk = self._curriculum_plan.chunk_of(self._step // gas, self._step % gas)",
        "curriculum position restarts at 0 on resume",
        TRAINER,
        slow=["tests/test_resume.py::test_sigkill_and_resume_continue_the_exact_prompt_stream"],
    ),
    _m(
        "T21",
        C,
        "micro = (step % self.steps_per_pass) * self.gradient_accumulation_steps + micro_batch",
        "micro = (step % self.steps_per_pass) + micro_batch",
        "position ignores gradient accumulation",
        TRAINER,
    ),
    _m(
        "T22",
        CT,
        "extremes = self.accelerator.gather(torch.stack([-se.min(), se.max()]).reshape(1, 2)).amax(dim=0)",
        "extremes = torch.stack([-se.min(), se.max()]).reshape(1, 2).amax(dim=0)",
        "SE range of rank 0 only",
        TRAINER,
        slow=TWO_PROCESSES,
    ),
    _m(
        "T23",
        C,
        '"seed": args.seed,',
        '"seed": args.seed + args.process_index,',
        "curriculum shuffle differs per rank",
        TRAINER,
        slow=TWO_PROCESSES,
    ),
    _m(
        "T24",
        C,
        '"repeat_count": args.num_iterations * args.steps_per_generation,',
        '"repeat_count": args.steps_per_generation,',
        "num_iterations ignored by the curriculum",
        TRAINER,
    ),
    _m(
        "T25",
        C,
        '"batch_size": args.generation_batch_size // args.num_generations,',
        '"batch_size": args.per_device_train_batch_size // args.num_generations,',
        "curriculum chunk = one device's batch",
        TRAINER,
    ),
    # ---- new with the registry and the thin TRL copy ---------------------------------------------------------------
    _m(
        "T26",
        R,
        '    if field == "epsilon_high" and value is None:\n        return args.epsilon\n',
        "",
        "an unset epsilon_high reaches Clip-Cov as None, not TRL's epsilon",
        REGISTRY,
    ),
    _m(
        "T27",
        T,
        "on_policy = not self.model.training or self.state.global_step == self._rollout_global_step",
        "on_policy = not self.model.training",
        "on-policy rule dropped: the KL term sees TRL's stored old log-probs",
        TRAINER,
    ),
    _m(
        "T28",
        T,
        "if regularizer.clips:  # sec_trl",
        "if True:  # sec_trl",
        "clip_ratio/* logged for SENT / KL-Cov, which do not clip",
        TRAINER,
    ),
    _m(
        "T29",
        C,
        "generate_every = args.steps_per_generation * args.num_iterations",
        "generate_every = args.steps_per_generation",
        "curriculum position and stage restarts ignore num_iterations",
        TRAINER,
    ),
    # ---- curriculum.py ---------------------------------------------------------------------------------------------
    _m(
        "C1",
        C,
        'order = np.argsort(se, kind="stable")',
        'order = np.argsort(-se, kind="stable")',
        "high SE first",
        CURRICULUM,
    ),
    _m(
        "C2",
        C,
        "return [len(part) for part in np.array_split(np.arange(num_prompts), num_stages)]",
        "return [len(part) for part in np.array_split(np.arange(num_prompts), num_stages)][::-1]",
        "larger stages last, not first",
        CURRICULUM,
    ),
    _m(
        "C3",
        C,
        "SeedSequence([seed, stage, epoch])",
        "SeedSequence([seed, stage])",
        "same shuffle every epoch",
        CURRICULUM,
        1,
    ),
    _m(
        "C4",
        C,
        "_permutation(st.size, self.seed, st.stage, epoch)",
        "_permutation(st.size, self.seed, 0, epoch)",
        "same shuffle pattern for every stage",
        CURRICULUM,
    ),
    _m(
        "C5",
        C,
        "np.repeat(chunk, self.mini_repeat_count)",
        "np.tile(chunk, self.mini_repeat_count)",
        "a group's completions not consecutive",
        CURRICULUM,
    ),
    _m(
        "C6",
        C,
        '"progress": k / self.num_chunks',
        '"progress": (k + 1) / self.num_chunks',
        "progress off by one",
        CURRICULUM,
    ),
    _m(
        "C7",
        C,
        "self._chunk_se_min = chunk_se.min(axis=1)",
        "self._chunk_se_min = chunk_se.min()",
        "chunk SE minimum of the whole run",
        CURRICULUM,
    ),
    _m("C8", C, "if not math.isfinite(v)]", "if math.isnan(v)]", "inf SE accepted", CURRICULUM),
    _m("C9", C, "and not isinstance(value, (bool, np.bool_))", "", "booleans accepted as SE", CURRICULUM),
    _m(
        "C10",
        C,
        "return self.num_chunks * self.samples_per_chunk",
        "return self.num_samples * self.mini_repeat_count * self.repeat_count",
        "RepeatSampler's length",
        CURRICULUM,
    ),
    _m(
        "C11",
        C,
        "chunk = int(batch_index) // self.repeat_count",
        "chunk = int(batch_index) // self.samples_per_chunk",
        "batch -> chunk mapping wrong",
        CURRICULUM,
    ),
    _m(
        "C12",
        C,
        "for st in self.stages if st.size < self.batch_size",
        "for st in self.stages if st.size < 1",
        "stage without a batch not rejected",
        CURRICULUM,
    ),
    # ---- semantic_entropy.py ---------------------------------------------------------------------------------------
    _m("E1", E, "p * math.log(p)", "p * math.log2(p)", "entropy in bits", SEMANTIC),
    _m("E2", E, "[count / n for count", "[count / len(Counter(ids)) for count", "cluster masses not / N", SEMANTIC),
    _m("E3", E, "top = max(scores)", "top = min(scores)", "softmax overflows", SEMANTIC),
    _m("E4", E, "math.fsum(ws) / total", "math.fsum(ws) / len(ws)", "weighted masses not normalised", SEMANTIC),
    _m(
        "E5",
        E,
        "len(answer) <= MAX_ANSWER_CHARS",
        "len(answer) < MAX_ANSWER_CHARS",
        "length limit off by one",
        SEMANTIC,
    ),
    _m(
        "E6",
        E,
        "cluster = i\n                    break\n",
        "cluster = i\n",
        "joins the last matching cluster, not the first",
        SEMANTIC,
    ),
    _m("E7", E, "overlap >= threshold and", "overlap > threshold and", "lexical threshold exclusive", SEMANTIC),
    _m("E8", E, "overlap > best_overlap", "overlap >= best_overlap", "lexical ties to the higher id", SEMANTIC),
    _m(
        "E9",
        E,
        "overlap = 1.0 - jaccard_distance(words, rep)",
        "overlap = len(words & rep) / (len(words) + len(rep))",
        "not Jaccard",
        SEMANTIC,
    ),
    _m(
        "E10",
        E,
        "            ids.append(len(representatives))\n            representatives.append(None)\n",
        "            ids.append(0)\n            representatives.append(None)\n",
        "no-answer responses share cluster 0",
        SEMANTIC,
    ),
    # ---- answer_checking.py (the fast path) and answer_extraction.py (extraction, number parsing) ---------------
    _m("A1", A, "if (x_exact and y_exact) or", "if (x_exact or y_exact) or", "0.333333 != 1/3", CHECKER),
    _m(
        "A2",
        AX,
        'return (-value if sign == "-" else value), not (frac or bare_frac)',
        'return (-value if sign == "-" else value), True',
        "decimals compared exactly",
        CHECKER,
    ),
    _m("A3", AX, "    if den == 0:\n        return None\n", "", "1/0 raises", CHECKER),
    _m(
        "A4",
        AX,
        'return (-value if sign == "-" else value), True',
        "return value, True",
        "sign of fractions lost",
        CHECKER,
    ),
    _m("A5", AX, "            i += 2\n", "            i += 1\n", "escaped braces group", CHECKER),
    _m("A6", AX, "for s in starts if s in pairs]", "for s in starts if s in pairs][:1]", "first box wins", CHECKER),
    _m("A7", AX, "return matches[-1].group(0)", "return matches[0].group(0)", "first number wins", CHECKER),
    _m(
        "A8",
        A,
        "if len(gold) > MAX_ANSWER_CHARS or len(pred) > MAX_ANSWER_CHARS",
        "if len(gold) >= MAX_ANSWER_CHARS or len(pred) >= MAX_ANSWER_CHARS",
        "length limit off by one",
        CHECKER,
    ),
    _m(
        "A9", AX, '        if s.endswith("."):\n            s = s[:-1].rstrip()\n', "", "final full stop kept", CHECKER
    ),
    _m(
        "A10",
        AX,
        "return clean_text(text[-MAX_TAIL_CHARS:])",
        "return clean_text(text[:MAX_TAIL_CHARS])",
        "reads the head, not the tail",
        CHECKER,
    ),
    _m(
        "A11",
        A,
        "if not gold or not pred:\n        return False",
        "if not gold and not pred:\n        return False",
        "one empty answer not rejected",
        CHECKER,
    ),
]
