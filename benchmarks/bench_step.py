"""Training-step time and peak memory of `SETGRPOTrainer` against TRL's `GRPOTrainer`.

Every variant (TRL's `GRPOTrainer`, and `SETGRPOTrainer` with `token_regularizer` = none, sent, kl_cov, clip_cov)
is built from the same saved model, data, seed and generation settings, with `steps_per_generation = 2 *
gradient_accumulation_steps` (each rollout batch feeds two optimizer steps, so the KL term of sent / kl_cov is
active). Measured:

1. **loss + backward** (the clean number): one generation batch is produced once, by TRL's own
   `_generate_and_score_completions` with the `GRPOTrainer`, and split into step batches as TRL does; the
   step batch's `old_per_token_logps` get a little noise, as on the second optimizer step of a rollout batch (the
   cost does not depend on it; it makes the KL term non-zero). Then `trainer.compute_loss(model, inputs)` +
   `.backward()` of every variant is timed on that identical batch, interleaved (the order alternates per
   repeat), median over the repeats; the ratio to `GRPOTrainer` is printed as the ratio of the medians and as the
   median of the per-repeat ratios (each variant against the `GRPOTrainer` measurement of the same repeat).
   `none` runs exactly TRL's loss code, so `none / GRPOTrainer` is the measurement's own noise floor: it is printed
   with every result (and whether it is within 2 %), and the regularisers are judged against `none` (`vs none`:
   the paired ratio to `none` in the same repeat), not against `GRPOTrainer`.
2. **peak memory of loss + backward**, above what is resident before it (weights, the batch; gradients are
   freed first): on CUDA `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`; on the CPU the
   running sum of the allocation / free events that `torch.profiler` records for torch's CPU allocator (tensor
   memory; checked against a known allocation first, and reported as unavailable if that check fails). Also
   shown with the model's weights added (what one trainer's process would peak at, before optimizer state).
3. **full `trainer.train()`** for a few optimizer steps per variant (generation included), interleaved, median
   wall time. `learning_rate = 0`, so every run generates the same completions from the same seed; the optimizer
   step still runs. Noisier than 1. (generation dominates), reported for completeness.

    python benchmarks/bench_step.py                       # CPU: small Llama (hidden 256, 4 layers)
    python benchmarks/bench_step.py --preset 0.5b         # GPU: Qwen2-0.5B-shaped model, bf16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _common import THREADS_HELP, machine_line, set_threads, sync


VARIANTS = ["grpo", "none", "sent", "kl_cov", "clip_cov"]
LABELS = {
    "grpo": "GRPOTrainer (TRL)",
    "none": "SETGRPOTrainer none",
    "sent": "SETGRPOTrainer sent",
    "kl_cov": "SETGRPOTrainer kl_cov",
    "clip_cov": "SETGRPOTrainer clip_cov",
}

# model architecture and batch settings per preset; the vocabulary is always SmolLM2's tokenizer's
PRESETS = {
    "tiny": dict(
        arch="llama",
        model=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2),
        model_kv_heads=1,
        batch=4,
        num_generations=4,
        max_completion_length=8,
    ),
    "cpu": dict(
        arch="llama",
        model=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4),
        model_kv_heads=2,
        batch=8,
        num_generations=8,
        max_completion_length=128,
    ),
    "0.5b": dict(  # Qwen2.5-0.5B's body (hidden 896, 24 layers, GQA 14/2) on SmolLM2's 49k vocabulary
        arch="qwen2",
        model=dict(
            hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, rope_theta=1e6
        ),
        model_kv_heads=2,
        batch=8,
        num_generations=8,
        max_completion_length=1024,
    ),
}


def _length_reward(completions, **kwargs):
    """Deterministic and varying across a group (completion length in characters): advantages are non-zero."""
    return [float(len(c[0]["content"] if isinstance(c, list) else c)) for c in completions]


def build_model(preset: str, directory: Path) -> tuple[str, int]:
    """Save a randomly initialised model of the preset, with SmolLM2's tokenizer, to `directory`."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from sec_trl.embedded import embedded_model_path

    spec = PRESETS[preset]
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    config_cls, model_cls = (
        (LlamaConfig, LlamaForCausalLM) if spec["arch"] == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    )
    config = config_cls(
        vocab_size=len(tokenizer),
        num_key_value_heads=spec["model_kv_heads"],
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **spec["model"],
    )
    torch.manual_seed(0)
    model = model_cls(config)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory), n_params


def build_trainers(model_dir, workdir, args, device):
    from datasets import Dataset
    from transformers import PrinterCallback, set_seed
    from trl import GRPOConfig, GRPOTrainer

    from sec_trl import SETGRPOConfig, SETGRPOTrainer

    use_cuda = device.type == "cuda"
    common = dict(
        report_to="none",
        use_cpu=not use_cuda,
        bf16=use_cuda and torch.cuda.is_bf16_supported(),
        per_device_train_batch_size=args.batch,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        gradient_accumulation_steps=args.grad_accum,
        steps_per_generation=2 * args.grad_accum,
        learning_rate=0.0,
        max_steps=max(args.train_steps, 1),
        temperature=1.0,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=args.seed,
    )
    dataset = Dataset.from_dict(
        {"prompt": [[{"role": "user", "content": f"What is {i} + {2 * i}?"}] for i in range(64)]}
    )
    trainers = {}
    for name in args.variants:
        set_seed(args.seed)
        output_dir = str(workdir / f"out-{name}")
        if name == "grpo":
            config, cls = GRPOConfig(output_dir=output_dir, **common), GRPOTrainer
        else:
            config = SETGRPOConfig(output_dir=output_dir, token_regularizer=name, **common)
            cls = SETGRPOTrainer
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = cls(model=model_dir, reward_funcs=_length_reward, args=config, train_dataset=dataset)
        trainer.remove_callback(PrinterCallback)  # the log dicts of every train() step would bury the table
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = args.grad_accum  # set by Trainer's loop; the loss reads it
        trainers[name] = trainer
    return trainers, dataset


def generate_step_batch(trainer, dataset, args):
    """One generation batch from TRL's own pipeline, split into step batches as `_prepare_inputs` does."""
    from transformers import set_seed
    from trl.trainer.utils import split_tensor_dict

    steps_per_generation = 2 * args.grad_accum
    n_prompts = args.batch * steps_per_generation // args.num_generations
    rows = [dataset[i] for i in range(n_prompts) for _ in range(args.num_generations)]
    set_seed(args.seed)
    with torch.no_grad():
        batch = trainer._generate_and_score_completions(rows)
    inputs = split_tensor_dict(batch, steps_per_generation)[0]
    old = inputs.get("old_per_token_logps")
    if old is None:
        raise RuntimeError("no old_per_token_logps in the generated batch: steps_per_generation must exceed GA")
    g = torch.Generator().manual_seed(args.seed)
    inputs["old_per_token_logps"] = old + 0.05 * torch.randn(old.shape, generator=g).to(old.device, old.dtype)
    return inputs


def progress(message):
    print(f"[bench_step {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def loss_backward(trainer, inputs):
    """`compute_loss` + `backward`, under the bf16 autocast accelerate puts around the forward in training."""
    trainer.model.zero_grad(set_to_none=True)
    device_type = trainer.accelerator.device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bool(trainer.args.bf16)):
        loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()


def time_loss_backward(trainers, inputs, device, repeats, warmup):
    names = list(trainers)
    times = {name: [] for name in names}
    for i in range(warmup + repeats):
        progress(f"loss + backward: round {i + 1}/{warmup + repeats}")
        for name in names if i % 2 == 0 else names[::-1]:
            trainer = trainers[name]
            trainer.model.zero_grad(set_to_none=True)
            sync(device)
            start = time.perf_counter()
            loss_backward(trainer, inputs)
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
            trainer._metrics["train"].clear()
    for trainer in trainers.values():
        trainer.model.zero_grad(set_to_none=True)
    return times


def time_train(trainers, device, repeats, warmup, seed):
    from transformers import set_seed

    names = list(trainers)
    times = {name: [] for name in names}
    for i in range(warmup + repeats):
        progress(f"train(): round {i + 1}/{warmup + repeats}")
        for name in names if i % 2 == 0 else names[::-1]:
            set_seed(seed)
            sync(device)
            start = time.perf_counter()
            trainers[name].train()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def _cpu_peak_bytes(fn) -> int:
    """Peak of the running sum of torch CPU allocator events recorded by the profiler while `fn` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    events.sort(key=lambda e: e.start_ns())  # stable: same-timestamp events keep their recorded order
    running = peak = 0
    for e in events:
        running += e.nbytes()
        peak = max(peak, running)
    return peak


def cpu_memory_measure_is_sound() -> tuple[bool, str]:
    """The profiler-based measure must see a known 100 MB allocation (and not much else) to be trusted."""
    expected = 25_000_000 * 4

    def known():
        x = torch.ones(25_000_000)
        del x

    try:
        seen = _cpu_peak_bytes(known)
    except Exception as exc:  # an internal profiler API: report, do not crash
        return False, f"torch.profiler memory events unavailable ({type(exc).__name__}: {exc})"
    ok = abs(seen - expected) <= 0.01 * expected
    return ok, f"self-check: a 100.0 MB tensor measured as {seen / 1e6:.1f} MB"


def peak_memory(trainer, inputs, device) -> int:
    trainer.model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        loss_backward(trainer, inputs)
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _cpu_peak_bytes(lambda: loss_backward(trainer, inputs))
    trainer.model.zero_grad(set_to_none=True)
    trainer._metrics["train"].clear()
    return peak


def _paired_ratio(times, name, baseline="grpo"):
    return statistics.median(a / b for a, b in zip(times[name], times[baseline], strict=True))


def _paired_spread(times, name, baseline="grpo"):
    """Half the interquartile range of the per-repeat ratios: how far one repeat's ratio typically strays."""
    ratios = sorted(a / b for a, b in zip(times[name], times[baseline], strict=True))
    if len(ratios) < 4:
        return float("nan")
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return (q3 - q1) / 2


def noise_floor_lines(times, floor_target=0.02):
    """`none` runs exactly TRL's loss, so `none / GRPOTrainer` is the measurement's own noise floor; every other
    variant is judged against `none` (paired, same repeat), not against GRPOTrainer."""
    floor = _paired_ratio(times, "none")
    within = abs(floor - 1.0) <= floor_target
    lines = [
        f"noise floor (SETGRPOTrainer none / GRPOTrainer, identical loss code) = "
        f"{statistics.median(times['none']) / statistics.median(times['grpo']):.3f} (paired {floor:.3f}, "
        f"half-IQR {_paired_spread(times, 'none'):.3f}; {len(times['none'])} repeats; within "
        f"{floor_target:.0%}: {'yes' if within else 'NO, more repeats or a quieter machine needed'})"
    ]
    for name in times:
        if name in ("grpo", "none"):
            continue
        lines.append(
            f"vs none ({LABELS[name]} / SETGRPOTrainer none) = "
            f"{statistics.median(times[name]) / statistics.median(times['none']):.3f} "
            f"(paired {_paired_ratio(times, name, 'none'):.3f}, half-IQR {_paired_spread(times, name, 'none'):.3f}); "
            f"floor none / GRPOTrainer = {floor:.3f}"
        )
    return lines


def main(argv=None):
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="0.5b" if cuda else "cpu")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if cuda else "cpu")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    parser.add_argument("--batch", type=int, help="per_device_train_batch_size (default: the preset's)")
    parser.add_argument("--num-generations", type=int, help="default: the preset's")
    parser.add_argument("--max-completion-length", type=int, help="default: the preset's")
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient_accumulation_steps")
    parser.add_argument("--repeats", type=int, default=10, help="loss+backward repeats per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=2, help="optimizer steps per train() run; 0: skip")
    parser.add_argument("--train-repeats", type=int, default=3)
    parser.add_argument("--train-warmup", type=int, default=1)
    parser.add_argument(
        "--train-variants", nargs="+", choices=VARIANTS, help="variants of the train() timing (default: --variants)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke run for the tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.repeats, args.warmup = "tiny", 2, 1
        args.train_steps, args.train_repeats, args.train_warmup = 2, 1, 0
        args.train_variants = ["grpo", "sent"]
    spec = PRESETS[args.preset]
    for key in ("batch", "num_generations", "max_completion_length"):
        if getattr(args, key) is None:
            setattr(args, key, spec[key])
    if args.device == "cuda" and not cuda:
        parser.error("--device cuda: CUDA is not available")
    if args.train_steps % (2 * args.grad_accum):
        parser.error("--train-steps must be a multiple of steps_per_generation = 2 * --grad-accum")
    if "grpo" not in args.variants:
        args.variants = ["grpo", *args.variants]
    if "none" not in args.variants:  # the noise floor: exactly TRL's loss through SETGRPOTrainer
        args.variants = ["grpo", "none", *[v for v in args.variants if v != "grpo"]]
    train_variants = [v for v in args.variants if v in (args.train_variants or args.variants)]
    if "grpo" not in train_variants:
        train_variants = ["grpo", *train_variants]
    device = torch.device(args.device)
    set_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="sec_trl-bench-") as tmp:
        workdir = Path(tmp)
        model_dir, n_params = build_model(args.preset, workdir / "model")
        trainers, dataset = build_trainers(model_dir, workdir, args, device)
        progress("generating the step batch")
        inputs = generate_step_batch(trainers["grpo"], dataset, args)
        B, T = inputs["completion_ids"].shape
        n_tokens = int(inputs["completion_mask"].sum())

        print(machine_line(device))
        print(
            f"model: {args.preset} preset, {spec['arch']}, {n_params / 1e6:.1f}M parameters; step batch {B} "
            f"completions x {T} tokens ({n_tokens} valid) + {inputs['prompt_ids'].shape[1]} prompt tokens; "
            f"GA {args.grad_accum}, steps_per_generation {2 * args.grad_accum}, "
            f"bf16 {trainers['grpo'].args.bf16}"
        )

        times = time_loss_backward(trainers, inputs, device, args.repeats, args.warmup)

        if device.type == "cuda":
            memory_ok, memory_note = True, "torch.cuda.max_memory_allocated"
        else:
            memory_ok, memory_note = cpu_memory_measure_is_sound()
            memory_note = f"torch.profiler CPU allocator events; {memory_note}"
        peaks = {}
        if memory_ok:
            progress("peak memory")
            for name, trainer in trainers.items():
                peaks[name] = peak_memory(trainer, inputs, device)
        param_bytes = sum(p.numel() * p.element_size() for p in trainers["grpo"].model.parameters())

        train_times = None
        if args.train_steps > 0:
            train_trainers = {name: trainers[name] for name in train_variants}
            train_times = time_train(train_trainers, device, args.train_repeats, args.train_warmup, args.seed)

    base = statistics.median(times["grpo"])
    print(f"\nloss + backward, one identical step batch: {args.repeats} repeats (+{args.warmup} warm-up), interleaved")
    print(f"peak memory: {memory_note}")
    header = (
        f"{'variant':<24} {'median ms':>10} {'ratio':>7} {'paired':>7} {'vs none':>8} {'peak MiB':>9} {'ratio':>7} "
        f"{'+weights MiB':>13} {'ratio':>7}"
    )
    print(header)
    for name in trainers:
        median = statistics.median(times[name])
        row = f"{LABELS[name]:<24} {median * 1e3:>10.1f} {median / base:>7.3f} {_paired_ratio(times, name):>7.3f}"
        row += f" {_paired_ratio(times, name, 'none'):>8.3f}"
        if memory_ok:
            total, base_total = peaks[name] + param_bytes, peaks["grpo"] + param_bytes
            row += (
                f" {peaks[name] / 2**20:>9.1f} {peaks[name] / max(peaks['grpo'], 1):>7.3f}"
                f" {total / 2**20:>13.1f} {total / base_total:>7.3f}"
            )
        else:
            row += f" {'n/a':>9} {'n/a':>7} {'n/a':>13} {'n/a':>7}"
        print(row)
    if not memory_ok:
        print("no sound CPU peak-memory measure on this machine: memory is reported on CUDA only")

    if train_times is not None:
        train_base = statistics.median(train_times["grpo"])
        print(
            f"\nfull trainer.train(), {args.train_steps} optimizer steps (generation included): "
            f"{args.train_repeats} repeats (+{args.train_warmup} warm-up), interleaved"
        )
        print(f"{'variant':<24} {'median s':>10} {'ratio':>7} {'paired':>7}")
        for name in train_times:
            median = statistics.median(train_times[name])
            print(
                f"{LABELS[name]:<24} {median:>10.2f} {median / train_base:>7.3f} "
                f"{_paired_ratio(train_times, name):>7.3f}"
            )
        if "none" in train_times:
            print("train(): " + noise_floor_lines(train_times)[0])

    print()
    for line in noise_floor_lines(times):
        print(line)
    for name in trainers:
        if name == "grpo":
            continue
        line = f"step-time ratio ({LABELS[name]} / GRPOTrainer) = {statistics.median(times[name]) / base:.3f}"
        line += f" (paired {_paired_ratio(times, name):.3f}; target <= 1.02)"
        if memory_ok:
            line += f"; peak-memory ratio = {peaks[name] / max(peaks['grpo'], 1):.3f} (target <= 1.01)"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
