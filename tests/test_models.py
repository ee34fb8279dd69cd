"""Backbones: open_clip names, hpcfed's own configs, and weights from a local checkpoint file."""

import pytest
import torch

from hpcfed.errors import ConfigError
from hpcfed.models import check_model, create_backbone, known_models


def test_hpcfed_tiny_is_registered_with_open_clip():
    assert "hpcfed-tiny" in known_models() and "ViT-B-16" in known_models()


def test_a_local_checkpoint_loads_through_open_clip_with_identical_weights(tmp_path):
    torch.manual_seed(1)
    source, _, _ = create_backbone("hpcfed-tiny", None)
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)  # a different random init, overwritten by the file
    loaded, _, _ = create_backbone("hpcfed-tiny", str(path))
    check_model("hpcfed-tiny", str(path))
    for (name, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in loaded.parameters())  # frozen


def test_unknown_architecture_and_tag_fail_before_any_work():
    with pytest.raises(ConfigError, match="model.name"):
        check_model("ViT-Q-99", None)
    with pytest.raises(ConfigError, match="neither a file nor an open_clip tag"):
        check_model("ViT-B-16", "/no/such/file.pt")


class RunsCode:
    def __reduce__(self):
        return (__import__("os").system, ("touch pwned_by_checkpoint",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model, _, _ = create_backbone("hpcfed-tiny", None)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": model.state_dict(), "extra": RunsCode()}, evil)
    with pytest.raises(Exception, match="[Ww]eights only load failed|weights_only"):
        create_backbone("hpcfed-tiny", str(evil))
    assert not (tmp_path / "pwned_by_checkpoint").exists()
