"""Model names known without importing torch or timm, for params validation. Checking
`train.model` against timm's own registry made every stage import torch, torchvision and timm:
check_params took 6.8 s of CPU and 1.3 GB (max RSS) with it, 0.3 s and 51 MB without it
(/usr/bin/time, median of 3 runs, 2-core AMD EPYC).

- skillpack's own models: OUR_MODEL_NAMES (skillpack/train/models.py registers them into timm;
  a test checks that the two agree).
- the searchable family's names (`sp_nas_s16_f1x16k3e1_...`): known when they spell a valid
  architecture (skillpack.config.architecture parses them; they are not in timm's registry).
- timm's models: listed by `timm.list_models()` (with the deprecated names timm still builds)
  in a subprocess, once per installed timm version, and cached as JSON under the user's cache
  folder ($XDG_CACHE_HOME/skillpack, else ~/.cache/skillpack). A new timm version gets a new
  list. `make install` writes it ahead: `python -m skillpack.model_names`.

A name is known when its architecture (the part before a pretrained tag, `resnet18.a1_in1k`
-> `resnet18`) is, as for `timm.is_model`.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

OUR_MODEL_NAMES = (
    "sp_cnn_xs", "sp_cnn_s", "sp_cnn_m", "sp_cnn_l",
    "sp_dwcnn_xs", "sp_dwcnn_s", "sp_dwcnn_m", "sp_dwcnn_l",
    "sp_condcnn_xs", "sp_condcnn_s", "sp_condcnn_m", "sp_condcnn_l",
    "sp_vit_micro_p4", "sp_vit_tiny_p4", "sp_vit_small_p4",
    "sp_nas_fused_ref", "sp_nas_mbconv_ref",
)
ARCH_PREFIX = "sp_nas_"   # names that spell an architecture (skillpack.config.architecture)

# Run in a child process: the only place that imports timm for a name list.
_LIST_TIMM_MODELS = (
    "import json, timm\n"
    "from timm.models import get_deprecated_models\n"
    "print(json.dumps(sorted(set(timm.list_models()) | set(get_deprecated_models()))))\n"
)


def installed_timm_version() -> str | None:
    """timm's installed version, read from its package metadata (no import); None without timm."""
    try:
        return version("timm")
    except PackageNotFoundError:
        return None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "skillpack"


def cache_file(timm_version: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / f"timm-{timm_version}-models.json"


def read_cached_names(path: Path, timm_version: str) -> list[str] | None:
    """The cached list, or None when it is missing, unreadable or made for another timm version."""
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or cached.get("timm") != timm_version:
        return None
    names = cached.get("models")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return None
    return names


def list_timm_models() -> list[str]:
    """timm's model names, from a child process that imports timm."""
    proc = subprocess.run([sys.executable, "-c", _LIST_TIMM_MODELS], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"listing timm's models failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def write_cached_names(path: Path, timm_version: str, names: list[str]) -> None:
    from skillpack.io import write_json

    write_json(path, {"timm": timm_version, "models": names})


def timm_model_names(cache_dir: Path | None = None) -> frozenset[str]:
    """timm's model names for the installed timm, from the cache; listed and cached when the
    cache is missing or stale. Empty without timm."""
    timm_version = installed_timm_version()
    if timm_version is None:
        return frozenset()
    path = cache_file(timm_version, cache_dir)
    names = read_cached_names(path, timm_version)
    if names is None:
        names = list_timm_models()
        try:
            write_cached_names(path, timm_version, names)
        except OSError as err:  # a read-only home: still correct, only slower next time
            print(f"warning: could not cache timm's model names in {path}: {err}", file=sys.stderr)
    return frozenset(names)


@functools.cache
def _installed_timm_names() -> frozenset[str]:
    return timm_model_names()


def is_known_model(name: str, timm_names: frozenset[str] | None = None) -> bool:
    """A name skillpack or timm can build (a pretrained tag after a dot is ignored)."""
    arch = name.split(".", 1)[0]
    if arch in OUR_MODEL_NAMES:
        return True
    if arch.startswith(ARCH_PREFIX):
        from skillpack.config.architecture import is_arch_name

        return is_arch_name(arch)
    return arch in (_installed_timm_names() if timm_names is None else timm_names)


def main() -> int:
    timm_version = installed_timm_version()
    if timm_version is None:
        print("timm is not installed: no timm model names to list", file=sys.stderr)
        return 1
    names = timm_model_names()
    print(f"timm {timm_version}: {len(names)} model names in {cache_file(timm_version)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
