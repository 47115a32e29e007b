"""Choose how `make setup` pins torch on this machine; prints the pip options (one line).

`make demo` / `make test` install vireid into `.venv` with ``pip install <options> -e '.[test,all]'``.
The torch build must match the machine, and an unpinned torch on a CPU-only Linux box pulls several
GB of CUDA packages. Three cases, decided in this order:

1. **A CUDA machine** (``nvidia-smi -L`` lists a GPU): no torch pin, so pip takes the default
   PyPI build of torch, which is a CUDA build on Linux; ``train.device=auto`` then trains on the GPU.
2. **The local CPU wheel is resolvable** (a ``torch-2.13.0+cpu`` wheel in a ``find-links`` folder
   or a local ``file://`` simple index of pip's configuration, as on the project's development
   and CI machines): ``-c constraints.txt`` (``torch==2.13.0+cpu``, ``torchvision==0.28.0``),
   resolved offline from those folders.
3. **Any other CPU-only machine**: ``-c constraints-cpu.txt`` (the same versions without a local
   label) and, on Linux x86_64, PyTorch's CPU wheel index as an extra index, whose
   ``2.13.0+cpu`` build satisfies ``torch==2.13.0`` (PEP 440 ignores the local label when the
   pin has none) and sorts above PyPI's CUDA build. macOS and Linux aarch64 wheels on PyPI are
   CPU builds already, so no extra index there.

``CONSTRAINTS=<file>`` (or ``CONSTRAINTS=`` for none) on the make command line skips this script.

    python scripts/select_constraints.py            # the pip options
    python scripts/select_constraints.py --explain  # and why, on stderr
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parent.parent
LOCAL_CONSTRAINTS = "constraints.txt"
PUBLIC_CONSTRAINTS = "constraints-cpu.txt"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def pinned_torch(constraints: Path) -> str:
    """The version ``constraints`` pins torch to (e.g. ``2.13.0+cpu``)."""
    for line in constraints.read_text().splitlines():
        m = re.match(r"\s*torch\s*==\s*([^\s#;]+)", line)
        if m:
            return m.group(1)
    raise SystemExit(f"{constraints} pins no torch version; add a line torch==<version>")


@dataclass
class Choice:
    pip_args: list[str]
    reason: str


def pip_locations(config_text: str, environ: dict[str, str]) -> list[str]:
    """The find-links and (extra) index URLs of ``pip config list`` output and ``PIP_*`` variables."""
    out: list[str] = []
    for line in config_text.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith(("find-links", "index-url", "extra-index-url")):
            out += value.strip().strip("'\"").split()
    for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        out += environ.get(name, "").split()
    return list(dict.fromkeys(out))


def _local_dir(location: str) -> Path | None:
    if location.startswith("file://"):
        return Path(unquote(urlparse(location).path))
    if "://" in location:
        return None  # a remote index: cannot be checked without the network
    return Path(location).expanduser()


def local_wheel(locations: list[str], version: str) -> Path | None:
    """A ``torch-<version>`` wheel in a local find-links folder or local simple index, or None."""
    prefix = f"torch-{version}-"
    for location in locations:
        folder = _local_dir(location)
        if folder is None:
            continue
        for candidate in (folder, folder / "torch"):  # find-links folder, simple-index project page
            try:
                names = sorted(os.listdir(candidate))
            except OSError:
                continue
            for name in names:
                if name.startswith(prefix) and name.endswith(".whl"):
                    return candidate / name
    return None


def has_nvidia_gpu(run=subprocess.run, which=shutil.which) -> bool:
    """True when ``nvidia-smi -L`` runs and lists at least one GPU."""
    if which("nvidia-smi") is None:
        return False
    try:
        res = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0 and "GPU" in res.stdout


def choose(*, gpu: bool, locations: list[str], system: str, machine: str, repo: Path = REPO) -> Choice:
    """The pip options for a machine described by the arguments (pure: no installs, no network)."""
    if gpu:
        return Choice([], "nvidia-smi lists a GPU: no torch pin, pip installs PyPI's CUDA build of torch")
    version = pinned_torch(repo / LOCAL_CONSTRAINTS)
    wheel = local_wheel(locations, version)
    if wheel is not None:
        return Choice(["-c", LOCAL_CONSTRAINTS], f"the local CPU wheel {wheel} is in pip's configuration: "
                      f"{LOCAL_CONSTRAINTS} pins torch=={version}")
    args = ["-c", PUBLIC_CONSTRAINTS]
    if system == "Linux" and machine.lower() in ("x86_64", "amd64"):
        return Choice(args + ["--extra-index-url", CPU_INDEX], f"no GPU and no local torch wheel: "
                      f"{PUBLIC_CONSTRAINTS} pins the versions and PyTorch's CPU index supplies the CPU build")
    return Choice(args, f"no GPU on {system} {machine}: PyPI's torch is a CPU build here; "
                  f"{PUBLIC_CONSTRAINTS} pins the versions")


def _pip_config_text() -> str:
    try:
        res = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return res.stdout if res.returncode == 0 else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--explain", action="store_true", help="say why on stderr")
    args = ap.parse_args()
    choice = choose(gpu=has_nvidia_gpu(), locations=pip_locations(_pip_config_text(), dict(os.environ)),
                    system=platform.system(), machine=platform.machine())
    if args.explain:
        print(f"select_constraints: {choice.reason}", file=sys.stderr)
    print(" ".join(choice.pip_args))


if __name__ == "__main__":
    main()
