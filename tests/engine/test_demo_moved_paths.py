"""The demos moved to torchpare.demo; the old engine paths keep working for one release with a FutureWarning."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-W", "always::FutureWarning", "-c", code], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip() + "\n" + proc.stderr


def test_old_demo_paths_warn_and_give_the_moved_functions() -> None:
    out = _run(
        "import torchpare.demo as new\n"
        "from torchpare.engine.demo import run_demo, kd_distiller\n"
        "from torchpare.engine.demo_text import run_text_demo\n"
        "import torchpare.engine as eng\n"
        "print(run_demo is new.run_demo, kd_distiller is new.kd_distiller, run_text_demo is new.run_text_demo,\n"
        "      eng.run_demo is new.run_demo)\n"
    )
    assert out.splitlines()[0] == "True True True True"
    assert "FutureWarning: torchpare.engine.demo moved to torchpare.demo.digits" in out
    assert "FutureWarning: torchpare.engine.demo_text moved to torchpare.demo.text" in out


def test_new_demo_paths_import_without_warnings() -> None:
    out = _run("import warnings\nwarnings.simplefilter('error')\n"
               "from torchpare.demo import run_demo, run_text_demo, kd_distiller, at_kd_distiller\nprint('ok')")
    assert out.startswith("ok")
