"""The shared checkpoint folder helpers (harmonycloak.targets.checkpoint)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from harmonycloak.errors import ModelLoadError
from harmonycloak.io.files import atomic_write
from harmonycloak.targets.checkpoint import (
    check_format,
    open_checkpoint,
    read_weights,
    require_weights,
    write_checkpoint,
)

FIX = "point it at a directory written by X.save()"
META = {"format": "harmonycloak.test", "version": 1, "options": {"lr": 0.5, "name": "é"}}


def state() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
            "b.steps": torch.tensor([7], dtype=torch.int64)}


def test_round_trip_of_meta_and_tensors(tmp_path: Path) -> None:
    out = write_checkpoint(tmp_path / "new" / "model", META, state())
    assert out == tmp_path / "new" / "model"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert (out / "config.json").read_text() == json.dumps(META, indent=2) + "\n"
    where, config_path = open_checkpoint(out, fix=FIX)
    assert (where, config_path) == (out, out / "config.json")
    meta = check_format(json.loads(config_path.read_text()), name="harmonycloak.test", version=1)
    assert meta == META
    loaded = read_weights(require_weights(where, fix=FIX))
    assert loaded.keys() == state().keys()
    for name, tensor in state().items():
        assert torch.equal(loaded[name], tensor) and loaded[name].dtype == tensor.dtype


def test_torch_fallback_replaces_the_stale_file_and_loads_without_pickles(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, META, state())
    write_checkpoint(tmp_path, META, state(), weights_file="model.pt", stale="model.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.pt"]
    assert torch.equal(read_weights(tmp_path / "model.pt")["a.weight"], state()["a.weight"])
    torch.save({"x": object()}, tmp_path / "pickle.pt")  # weights_only refuses any object
    with pytest.raises(pickle.UnpicklingError):
        read_weights(tmp_path / "pickle.pt")


def test_writes_leave_no_temporary_files_and_use_the_given_replace(tmp_path: Path) -> None:
    used: list[str] = []

    def replace(path: Path, write) -> None:
        used.append(path.name)
        atomic_write(path, write, force=True)

    write_checkpoint(tmp_path, META, state(), replace=replace)
    write_checkpoint(tmp_path, META, state(), replace=replace)  # overwrites
    assert used == ["model.safetensors", "config.json"] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, META, state())
    before = (tmp_path / "config.json").read_bytes()
    with pytest.raises(TypeError):
        write_checkpoint(tmp_path, {"format": object()}, state())
    assert (tmp_path / "config.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_missing_folder_config_and_weights_messages(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError) as info:
        open_checkpoint(nowhere, fix=FIX)
    assert str(info.value) == f"{nowhere}: no such model directory; {FIX}"
    with pytest.raises(ModelLoadError) as info:
        open_checkpoint(tmp_path, fix=FIX)
    assert str(info.value) == f"{tmp_path}: config.json is missing; {FIX}"
    write_checkpoint(tmp_path, META, state())
    (tmp_path / "model.safetensors").unlink()
    open_checkpoint(tmp_path, fix=FIX)  # the config alone is enough here
    with pytest.raises(ModelLoadError) as info:
        require_weights(tmp_path, fix=FIX)
    assert str(info.value) == f"{tmp_path}: model.safetensors is missing; {FIX}"


def test_format_messages_for_bad_configs() -> None:
    cases = [
        ("a string", {}, "format None is not 'harmonycloak.test'"),
        ([1, 2], {}, "format None is not 'harmonycloak.test'"),
        ({**META, "format": "harmonycloak.musegan"}, {},
         "format 'harmonycloak.musegan' is not 'harmonycloak.test'"),
        ({**META, "version": 9}, {},
         "format version 9 is not 1 (written by another harmonycloak)"),
        (META, {"version_key": "format_version"},
         "format_version None is not 1 (written by another harmonycloak)"),
    ]
    for meta, options, message in cases:
        with pytest.raises(ValueError) as info:
            check_format(meta, name="harmonycloak.test", version=1, **options)
        assert str(info.value) == message


def test_corrupt_weights_raise_the_readers_error(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception, match="header too large"):
        read_weights(tmp_path / "model.safetensors")
