"""forget=style: exact transforms, the seeded stylized subset, relabelling, cache keys, validation, one run end to end."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config, read_results, run_cli
from famr_cli.dataset import load_dataset
from famr_cli.errors import FamrError
from famr_cli.forget import make_forget_split
from famr_cli.forget.style import StyleForget, grayscale, invert, sepia, watermark
from famr_cli.model_store import original_cache_key
from famr_cli.prepared import prepare

NUM_TRAIN = 1437  # digits with the default stratified 20 % hold-out


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return load_dataset(compose_config().dataset, tmp_path_factory.mktemp("cache"))


def split_for(data, *overrides):
    cfg = compose_config(["forget=style", *overrides])
    return make_forget_split(cfg.forget, data)


def tiny(channels: int = 3, side: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (2, channels, side, side), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_invert_twice_is_the_identity():
    x = tiny()
    assert torch.equal(invert(x), 255 - x)
    assert torch.equal(invert(invert(x)), x)


def test_grayscale_makes_channels_equal_with_601_luma():
    x = tiny()
    g = grayscale(x)
    assert g.dtype == torch.uint8 and g.shape == x.shape
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])
    pixel = torch.tensor([100, 150, 200], dtype=torch.uint8).view(1, 3, 1, 1)
    assert int(grayscale(pixel)[0, 0, 0, 0]) == round(0.299 * 100 + 0.587 * 150 + 0.114 * 200)  # 141


def test_sepia_values_for_a_known_pixel_are_clamped():
    pixel = torch.tensor([10, 20, 30], dtype=torch.uint8).view(1, 3, 1, 1)
    # R = .393*10 + .769*20 + .189*30 = 24.98; G = .349*10 + .686*20 + .168*30 = 22.25; B = .272*10 + .534*20 + .131*30 = 17.33
    assert sepia(pixel).flatten().tolist() == [25, 22, 17]
    white = torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)
    assert sepia(white).flatten().tolist() == [255, 255, 239]  # 344.5 and 306.8 clamp to 255; 238.9 rounds to 239


def test_watermark_touches_only_the_bottom_right_patch():
    x = tiny(side=16)  # side max(2, round(16 / 8)) = 2
    w = watermark(x)
    assert torch.equal(w[..., :-2, :], x[..., :-2, :]) and torch.equal(w[..., :, :-2], x[..., :, :-2])
    assert w[0, 0, -2:, -2:].tolist() == [[255, 0], [0, 255]]
    assert torch.equal(w[..., -2:, -2:], w[:1, :1, -2:, -2:].expand_as(w[..., -2:, -2:]))
    assert watermark(tiny(side=32))[0, 0, -4:, -4:].tolist() == [[255, 0, 255, 0], [0, 255, 0, 255]] * 2
    assert torch.equal(watermark(x), w)  # deterministic; the input is left untouched
    assert not torch.equal(w, x)


def test_split_partitions_training_set_and_stylizes_only_the_forget_set(digits):
    split = split_for(digits, "forget.style=invert")
    forget, retain = split.forget_train.tolist(), split.retain_train.tolist()
    assert len(forget) == round(0.1 * NUM_TRAIN)
    assert not set(forget) & set(retain) and sorted(forget + retain) == list(range(NUM_TRAIN))
    assert split.forget_test.numel() == 0 and torch.equal(split.retain_test, torch.arange(len(digits.y_test)))
    assert split.modifies_training_data and split.relabel_to is None
    assert torch.equal(split.x_train[split.forget_train], 255 - digits.x_train[split.forget_train])
    assert torch.equal(split.x_train[split.retain_train], digits.x_train[split.retain_train])
    assert torch.equal(split.y_train, digits.y_train)  # no relabelling by default
    assert split.x_train.data_ptr() != digits.x_train.data_ptr()  # a copy: the loaded data is untouched


def test_draw_is_reproducible_for_a_seed_and_differs_across_seeds(digits):
    a = split_for(digits, "forget.seed=3")
    b = split_for(digits, "forget.seed=3")
    c = split_for(digits, "forget.seed=4")
    assert torch.equal(a.forget_train, b.forget_train) and torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.forget_train, c.forget_train)


def test_relabel_applies_to_the_forget_set_only(digits):
    split = split_for(digits, "forget.relabel_to=7")
    assert split.relabel_to == 7
    assert bool((split.y_train[split.forget_train] == 7).all())
    assert torch.equal(split.y_train[split.retain_train], digits.y_train[split.retain_train])
    by_name = split_for(digits, f"forget.relabel_to='{digits.class_names[7]}'")
    assert by_name.relabel_to == 7


def test_prepare_trains_on_the_stylized_training_set(tmp_path):
    p = prepare(compose_config(["forget=style", f"cache_dir={tmp_path}", "forget.relabel_to=0"]))
    assert torch.equal(p.data.x_train, p.split.x_train) and torch.equal(p.data.y_train, p.split.y_train)


@pytest.mark.slow
def test_cache_key_includes_the_style_spec_but_not_class_overrides(tmp_path):
    def key(*extra):
        return original_cache_key(compose_config([f"cache_dir={tmp_path}", *extra]))

    base = key("forget=class")
    assert key("forget=class", "forget.classes=[3,4]") == base
    assert key("forget=sample", "forget.fraction=0.3") == base
    styles = {key("forget=style"), key("forget=style", "forget.style=invert"), key("forget=style", "forget.relabel_to=1")}
    assert len(styles) == 3 and base not in styles
    assert key("forget=style") == key("forget=style")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("forget.style=blur", "grayscale, sepia, invert, watermark"),
        ("forget.style=grayscale", "forget.style=grayscale needs 3-channel"),
        ("forget.style=sepia", "forget.style=sepia needs 3-channel"),
        ("forget.fraction=1.5", "forget.fraction must lie strictly between 0 and 1"),
        ("forget.fraction=0", "forget.fraction must lie strictly between 0 and 1"),
        ("forget.fraction=0.0001", "empty forget set"),
        ("forget.relabel_to=10", "forget.relabel_to=10 is out of range"),
        ("forget.relabel_to=cat", "Unknown class 'cat' in forget.relabel_to"),
    ],
)
def test_validation_errors_name_the_key(digits, override, message):
    with pytest.raises(FamrError, match=message):
        split_for(digits, override)


def test_rgb_data_accepts_grayscale(digits):
    from dataclasses import replace

    rgb = replace(digits, x_train=digits.x_train.expand(-1, 3, -1, -1).contiguous())
    split = StyleForget().split(compose_config(["forget=style", "forget.style=grayscale"]).forget, rgb)
    assert torch.equal(split.x_train, rgb.x_train)  # equal channels: luma (0.299+0.587+0.114 = 1) leaves them unchanged


@pytest.mark.slow
def test_cli_run_reports_style_metrics(tmp_path):
    args = ["forget=style", "forget.style=invert", "forget.relabel_to=0", "train.epochs=2", "method.epochs=2"]
    proc = run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(tmp_path / "run")
    for name in ("original", "unlearned"):
        metrics = results["metrics"][name]
        for key in ("stylized_test_acc", "clean_test_acc", "attack_success_rate"):
            assert isinstance(metrics[key], float) and 0.0 <= metrics[key] <= 100.0, (name, key)
        assert metrics["clean_test_acc"] == metrics["test_acc"]
    assert results["forget"]["num_forget_train"] == round(0.1 * NUM_TRAIN)
    rob = results["robustness"]
    assert rob["kind"] == "style" and rob["unlearned"]["relearn"] == {"applicable": False}
    # D_f (stylized, relabelled training images) against stylized never-seen test images
    assert 0.0 <= rob["unlearned"]["heldout"]["auc"] <= 1.0 and rob["unlearned"]["heldout"]["n_heldout"] > 0
