"""MkDocs hook (mkdocs.yml `hooks:`): every public name of the documented packages is on its API page.

The pages under docs/api/ name modules and members by hand (the lazily exported packages list each
public name where it is defined). A name added to a package's ``__all__`` but not to its page would
silently be missing from the site; this hook warns instead, so ``mkdocs build --strict`` fails naming
the package, the name and the page to add it to.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.api_coverage")

PACKAGES = ("registry", "model_io", "record", "deliver", "distill", "prune", "slim", "engine", "zoo")
# FutureWarning aliases kept for old imports; the API pages document their new homes instead.
DEPRECATED = {"engine": {"run_demo", "run_text_demo", "load_digits_split", "digits_loaders"}}
_ID = re.compile(r'\bid="(torchpare\.[^"]+)"')


def on_post_build(config, **kwargs) -> None:
    src = str(Path(config["config_file_path"]).parent / "src")
    if src not in sys.path:  # the checkout being documented, not another installed copy
        sys.path.insert(0, src)
    site = Path(config["site_dir"])
    for package in PACKAGES:
        page = site / "api" / package / "index.html"
        if not page.exists():
            log.warning("API page docs/api/%s.md is missing (torchpare.%s)", package, package)
            continue
        ids = set(_ID.findall(page.read_text(encoding="utf-8")))
        module = importlib.import_module(f"torchpare.{package}")
        for name in sorted(set(module.__all__) - DEPRECATED.get(package, set())):
            if not any(i == f"torchpare.{package}.{name}" or
                       (i.startswith(f"torchpare.{package}.") and i.endswith(f".{name}")) for i in ids):
                log.warning("torchpare.%s.%s is public (in __all__) but not on docs/api/%s.md: add it under "
                            "the module that defines it", package, name, package)
