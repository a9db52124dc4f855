"""Config validation, the CLI's flag mapping, and the safetensors checkpoint format."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import checkpoint
from common.config import Config, RunOptions, config_argv, parse_args
from common.errors import UserError
from tests.conftest import tiny_config

PARAMETER_COUNTS = {"rnn": 276_490, "gru": 686_090, "lstm": 890_890, "lstm-last": 821_770}


@pytest.mark.parametrize("variant, count", PARAMETER_COUNTS.items())
def test_parameter_counts_at_defaults(variant, count):
    given_flags, _ = parse_args(["--variant", variant], "t")
    assert checkpoint.count_params(Config(**given_flags)) == count


def test_defaults_are_the_tutorials():
    config = Config()
    assert (config.hidden_size, config.num_layers, config.lr, config.batch_size, config.epochs) == (256, 2, 0.005, 64, 2)
    assert config.variant == "lstm-last"


def test_flags_map_to_fields():
    given_flags, options = parse_args(["--cell", "gru", "--head", "all", "--hidden-size", "17", "--lr", "0.01",
                                       "--normalize", "--no-progress", "--limit-train", "100"], "t")
    config = Config(**given_flags)
    assert (config.variant, config.hidden_size, config.lr, config.normalize, config.limit_train) == \
        ("gru", 17, 0.01, True, 100)
    assert options == {"progress": False}


@pytest.mark.parametrize("argv, message", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--batch-size", "x"], "invalid int value"),
    (["--variant", "transformer"], "unknown variant"),
    (["--variant", "gru", "--cell", "lstm"], "conflicts"),
    (["--eval-only"], "--eval-only needs --init-from"),
    (["--device", "tpu"], "--device must be"),
])
def test_bad_flags(argv, message):
    with pytest.raises(UserError, match=message):
        given_flags, given_options = parse_args(argv, "t")
        Config(**given_flags)
        RunOptions(**given_options)


@pytest.mark.parametrize("field, value", [("batch_size", 0), ("lr", -1.0), ("lr", float("nan")), ("epochs", 0),
                                          ("hidden_size", 0), ("limit_train", 0), ("grad_clip", -1.0)])
def test_invalid_values(field, value):
    with pytest.raises(UserError, match=field.replace("_", "-")):
        Config(**{field: value})


def _params(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in checkpoint.param_shapes(config).items()}


def test_model_round_trip_is_bit_exact(tmp_path):
    config = tiny_config(cell="gru", head="all")
    params = _params(config)
    checkpoint.save_model(tmp_path / "m.safetensors", params, config, framework="torch")
    loaded, loaded_config, metadata = checkpoint.load_model(tmp_path / "m.safetensors", expect=config)
    assert loaded_config == config and metadata["framework"] == "torch"
    assert loaded.keys() == params.keys()
    for name in params:
        np.testing.assert_array_equal(loaded[name], params[name])


def test_checkpoint_of_another_variant_or_size(tmp_path):
    config = tiny_config()
    checkpoint.save_model(tmp_path / "m.safetensors", _params(config), config)
    with pytest.raises(UserError, match="cell lstm .run asks for gru"):
        checkpoint.load_model(tmp_path / "m.safetensors", expect=tiny_config(cell="gru"))
    with pytest.raises(UserError, match="hidden_size 8 .run asks for 9"):
        checkpoint.load_model(tmp_path / "m.safetensors", expect=tiny_config(hidden_size=9))


def test_wrong_shapes_are_refused(tmp_path):
    config = tiny_config()
    params = _params(config)
    params["fc.bias"] = np.zeros(11, np.float32)
    with pytest.raises(UserError, match="fc.bias has shape"):
        checkpoint.save_model(tmp_path / "m.safetensors", params, config)


def test_truncated_checkpoint(tmp_path):
    config = tiny_config()
    checkpoint.save_model(tmp_path / "m.safetensors", _params(config), config)
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        checkpoint.load_model(tmp_path / "m.safetensors")


def test_foreign_safetensors(tmp_path):
    from safetensors.numpy import save_file
    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(UserError, match="not one of this project's"):
        checkpoint.load_model(tmp_path / "x.safetensors")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="cannot read checkpoint"):
        checkpoint.load_model(tmp_path / "absent.safetensors")


_VALID = None


def _valid_bytes(tmp_path_factory) -> bytes:
    global _VALID
    if _VALID is None:
        path = tmp_path_factory.mktemp("ck") / "m.safetensors"
        config = tiny_config(hidden_size=2, num_layers=1)
        checkpoint.save_model(path, _params(config), config)
        _VALID = path.read_bytes()
    return _VALID


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_checkpoints_fail_only_with_our_error(tmp_path_factory, data):
    valid = bytearray(_valid_bytes(tmp_path_factory))
    if data.draw(st.booleans()):
        blob = data.draw(st.binary(max_size=400))
    else:  # mutate a valid file: flip bytes, cut it, or both
        for _ in range(data.draw(st.integers(1, 8))):
            position = data.draw(st.integers(0, len(valid) - 1))
            valid[position] = data.draw(st.integers(0, 255))
        blob = bytes(valid[: data.draw(st.integers(0, len(valid)))])
    path = tmp_path_factory.mktemp("fuzz") / "m.safetensors"
    path.write_bytes(blob)
    try:
        checkpoint.load_model(path)
    except UserError:
        pass


def test_train_state_round_trip(tmp_path):
    config = tiny_config(num_layers=1)
    params = _params(config)
    adam = {f"adam.{kind}.{n}": v * 0.5 for n, v in params.items() for kind in ("exp_avg", "exp_avg_sq")}
    adam["adam.step"] = np.array(7.0, np.float32)
    state = {"epoch": 1, "batch": 3, "metrics": [{"loss": 0.1}]}
    checkpoint.save_train_state(tmp_path / "s.safetensors", params, adam, config, state)
    p2, a2, c2, s2 = checkpoint.load_train_state(tmp_path / "s.safetensors")
    assert c2 == config and s2 == state and a2.keys() == adam.keys()
    np.testing.assert_array_equal(a2["adam.step"], 7.0)
    assert json.dumps(s2) == json.dumps(state)


def test_config_argv_is_the_inverse_of_parse_args():
    config = Config(cell="gru", head="all", hidden_size=17, lr=0.0013, schedule="cosine", grad_clip=1.0,
                    normalize=True, drop_last=True, limit_test=50, seed=3)
    given_flags, options = parse_args(config_argv(config), "t")
    assert Config(**given_flags) == config and options == {}
    assert Config(**parse_args(config_argv(Config()), "t")[0]) == Config()
