"""How `make setup` pins torch (scripts/select_constraints.py), decided from fake machines: nothing
is installed and nothing is downloaded."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("select_constraints", REPO / "scripts" / "select_constraints.py")
sc = importlib.util.module_from_spec(spec)
sys.modules["select_constraints"] = sc  # dataclasses look their module up
spec.loader.exec_module(sc)

WHEEL = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"


def test_constraint_files_pin_the_same_versions():
    local = (REPO / "constraints.txt").read_text()
    public = (REPO / "constraints-cpu.txt").read_text()
    assert re.search(r"^torch==2\.13\.0\+cpu$", local, re.M) and re.search(r"^torchvision==0\.28\.0$", local, re.M)
    assert re.search(r"^torch==2\.13\.0$", public, re.M) and re.search(r"^torchvision==0\.28\.0$", public, re.M)
    assert "+" not in "".join(line for line in public.splitlines() if not line.startswith("#"))
    assert sc.pinned_torch(REPO / "constraints.txt") == "2.13.0+cpu"


def test_this_kind_of_machine_uses_the_local_cpu_wheel(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / WHEEL).touch()
    config = f":env:.find-links='{wheels}'\nglobal.cert='/etc/ssl/certs/ca.crt'\n"
    locations = sc.pip_locations(config, {})
    assert locations == [str(wheels)]
    choice = sc.choose(gpu=False, locations=locations, system="Linux", machine="x86_64")
    assert choice.pip_args == ["-c", "constraints.txt"] and WHEEL in choice.reason
    # the same wheel in a local file:// simple index (project page torch/)
    index = tmp_path / "simple"
    (index / "torch").mkdir(parents=True)
    (index / "torch" / WHEEL).touch()
    locations = sc.pip_locations(f"global.extra-index-url='https://example.invalid/simple file://{index}'\n", {})
    assert sc.choose(gpu=False, locations=locations, system="Linux", machine="x86_64").pip_args == ["-c", "constraints.txt"]


@pytest.mark.parametrize("system, machine, extra_index", [("Linux", "x86_64", True), ("Darwin", "arm64", False),
                                                          ("Linux", "aarch64", False)])
def test_ordinary_cpu_machines_get_public_pins(tmp_path, system, machine, extra_index):
    other = tmp_path / "wheels"
    other.mkdir()
    (other / "torch-2.12.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").touch()  # another version does not count
    locations = sc.pip_locations("", {"PIP_FIND_LINKS": str(other), "PIP_INDEX_URL": "https://pypi.org/simple"})
    choice = sc.choose(gpu=False, locations=locations, system=system, machine=machine)
    expected = ["-c", "constraints-cpu.txt"] + (["--extra-index-url", "https://download.pytorch.org/whl/cpu"] if extra_index else [])
    assert choice.pip_args == expected


def test_cuda_machines_get_no_torch_pin(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / WHEEL).touch()  # even with the CPU wheel at hand, a GPU machine gets the CUDA build
    choice = sc.choose(gpu=True, locations=[str(wheels)], system="Linux", machine="x86_64")
    assert choice.pip_args == [] and "CUDA build" in choice.reason


def test_gpu_detection_asks_nvidia_smi():
    def fake_run(output, code=0):
        return lambda *a, **k: subprocess.CompletedProcess(a, code, stdout=output, stderr="")

    found = lambda name: "/usr/bin/nvidia-smi"  # noqa: E731
    assert sc.has_nvidia_gpu(run=fake_run("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\n"), which=found)
    assert not sc.has_nvidia_gpu(run=fake_run("", code=9), which=found)  # driver not loaded
    assert not sc.has_nvidia_gpu(run=fake_run("No devices were found\n"), which=found)
    assert not sc.has_nvidia_gpu(run=fake_run("GPU 0: ..."), which=lambda name: None)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_setup_installs_with_the_selected_options():
    """`make -n setup` (prints, runs nothing) uses the script's choice; CONSTRAINTS= overrides it."""
    expected = subprocess.run([sys.executable, str(REPO / "scripts" / "select_constraints.py")], capture_output=True,
                              text=True, check=True, cwd=REPO).stdout.strip()
    out = subprocess.run(["make", "-n", "-B", "setup", f"PYTHON={sys.executable}"], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    install = next(line for line in out.splitlines() if "-e '.[test,all]'" in line)
    assert f"install --quiet {expected} -e" in install.replace("  ", " ")
    out = subprocess.run(["make", "-n", "-B", "setup", "CONSTRAINTS=", f"PYTHON={sys.executable}"],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "install --quiet -e '.[test,all]'" in out.replace("  ", " ")
