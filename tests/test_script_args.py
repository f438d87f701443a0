"""The command lines' arguments are TRL's own dataclasses: `DatasetArguments` is a `trl.ScriptArguments`,
`ModelArguments` a `trl.ModelConfig`; every CLI, the Hub push included, parses with `trl.TrlParser` and takes
`--config`. Parsing only (real parsers, real YAML files); the push runs against the local Hub stand-in."""

import dataclasses
import json

import pytest
import trl
from helpers.hub_stand_in import commits, install, uploaded_files

from sec_trl.script_args import EVALUATION_MODEL_FLAGS, DatasetArguments, HubPushArguments, ModelArguments


def _parsers():
    from sec_trl.evaluation.cli import make_parser as eval_parser
    from sec_trl.hub import make_parser as hub_parser
    from sec_trl.ranking.cli import make_parser as rank_parser
    from sec_trl.train import make_parser as train_parser

    return {"train": train_parser, "rank": rank_parser, "evaluate": eval_parser, "hub": hub_parser}


def _flags(parser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def test_dataset_arguments_are_trls_script_arguments():
    from sec_trl.ranking.params import RankScriptArguments
    from sec_trl.train import SENTScriptArguments

    for cls in (DatasetArguments, SENTScriptArguments, RankScriptArguments):
        assert issubclass(cls, trl.ScriptArguments), cls
    trl_fields = {f.name: f for f in dataclasses.fields(trl.ScriptArguments)}
    ours = {f.name: f for f in dataclasses.fields(DatasetArguments)}
    assert set(trl_fields) <= set(ours)
    # TRL's defaults, except the documented one: no held-out split unless asked for (TRL: 'test')
    changed = {name for name, f in trl_fields.items() if ours[name].default != f.default}
    assert changed == {"dataset_test_split"} and DatasetArguments().dataset_test_split is None
    # every TRL dataset flag is on the three data-reading command lines
    for name in ("train", "rank", "evaluate"):
        flags = _flags(_parsers()[name]())
        assert {f"--{field}" for field in trl_fields} <= flags, name


@pytest.mark.parametrize("command", ["train", "rank", "evaluate"])
@pytest.mark.parametrize("flag", ["dataset_streaming", "ignore_bias_buffers"])
def test_trl_switches_sec_trl_cannot_honour_fail_at_parse_time_naming_the_flag(command, flag, tmp_path):
    parser = _parsers()[command]()
    args = ["--output_dir", str(tmp_path / "out")] if command != "evaluate" else []
    parser.parse_args_and_config(args=[*args, f"--{flag}", "false"])  # a TRL recipe's `false` is fine
    with pytest.raises(ValueError, match=f"--{flag} True is not supported: .* Leave --{flag} false"):
        parser.parse_args_and_config(args=[*args, f"--{flag}", "true"])


def test_model_arguments_are_trls_model_config_with_the_loading_flags_only():
    from sec_trl.evaluation.cli import make_parser

    assert issubclass(ModelArguments, trl.ModelConfig)
    shown = {f.name for f in dataclasses.fields(ModelArguments) if f.init}
    assert shown == {*EVALUATION_MODEL_FLAGS, "trust_remote_code"}
    model = ModelArguments()
    assert (model.dtype, model.model_revision, model.use_peft, model.lora_r) == ("auto", "main", False, 16)
    flags = _flags(make_parser())
    assert {"--model_name_or_path", "--model_revision", "--dtype", "--trust_remote_code"} <= flags
    assert not flags & {"--use_peft", "--lora_r", "--load_in_4bit", "--attn_implementation"}
    with pytest.raises(ValueError, match=r"not used by the HfArgumentParser: \['--use_peft'"):  # one error line
        make_parser().parse_args_and_config(args=["--use_peft", "true"])


@pytest.mark.parametrize("command", ["train", "rank", "evaluate"])
def test_a_yaml_field_is_overridden_by_a_flag(command, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"dataset_test_split: validation\nsystem_prompt: From the YAML.\noutput_dir: {tmp_path / 'o'}\n")

    def data_args(*flags):
        parsed = _parsers()[command]().parse_args_and_config(args=["--config", str(config), *flags])
        (args,) = [a for a in parsed if isinstance(a, DatasetArguments)]
        return args.dataset_test_split, args.system_prompt

    assert data_args() == ("validation", "From the YAML.")
    assert data_args("--system_prompt", "From the flag.") == ("validation", "From the flag.")


def _finished_run(folder):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "README.md").write_text("# a finished run\n")
    return folder


def test_hub_cli_takes_a_config_yaml_and_a_flag_overrides_it(tmp_path, monkeypatch, capsys):
    from sec_trl import hub

    remote = install(tmp_path / "hub", setattr=monkeypatch.setattr)
    monkeypatch.chdir(tmp_path)
    _finished_run(tmp_path / "run")
    config = tmp_path / "push.yaml"
    config.write_text("output_dir: run\nhub_model_id: someone/from-yaml\nhub_private_repo: true\n")

    (args,) = hub.make_parser().parse_args_and_config(args=["--config", str(config)])
    assert args == HubPushArguments(output_dir="run", hub_model_id="someone/from-yaml", hub_private_repo=True)
    (args,) = hub.make_parser().parse_args_and_config(  # the bare switch, as the former argparse store_true
        args=["--output_dir", "run", "--hub_model_id", "a/b", "--hub_private_repo"]
    )
    assert args.hub_private_repo is True and args.base_model is None

    assert hub.main(["--config", str(config), "--hub_model_id", "someone/from-flag"]) == 0
    assert "Pushed to https://huggingface.co/someone/from-flag" in capsys.readouterr().out
    (created,) = [c for c in commits(remote) if c["call"] == "create_repo"]
    assert (created["repo_id"], created["private"]) == ("someone/from-flag", True)  # the flag won, the YAML stayed
    assert set(uploaded_files(remote, "someone/from-flag")) == {"config.json", "README.md"}
    assert not (remote / "someone" / "from-yaml").exists()


def test_hub_cli_mistakes_end_with_one_error_line(tmp_path, monkeypatch, capsys):
    from sec_trl import hub

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        hub.main(["--output_dir", "no-such-run", "--hub_model_id", "someone/x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "sec_trl.hub: error: --output_dir 'no-such-run' is not a directory" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:  # the required flags, from argparse
        hub.main(["--output_dir", "run"])
    assert exit_info.value.code == 2 and "--hub_model_id" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        hub.main(["--config", "missing.yaml"])
    assert exit_info.value.code == 2 and "missing.yaml" in capsys.readouterr().err
