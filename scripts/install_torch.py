"""Put torch in this interpreter's environment, the CPU build where there is no NVIDIA GPU, and say
in one line which build went in. ``make install`` runs it before the package.

PyPI's Linux torch is the CUDA build (with about 15 ``nvidia-*`` packages, several GB), so on a
machine without ``nvidia-smi`` torch comes from PyTorch's CPU wheel index. Where that index cannot
be reached within a few seconds (no network, a firewall, a local mirror) or has no wheel for this
machine, pip chooses as it always does, from its configured sources; the line then says the CPU
index was not used, and whether what pip found is a CPU build. With an NVIDIA GPU nothing is done
here: the package's ``torch>=`` range brings PyPI's CUDA build.

    .venv/bin/python scripts/install_torch.py 2.13.0
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_SECONDS = 10


def cpu_index_reachable() -> bool:
    try:
        with urllib.request.urlopen(f"{CPU_INDEX}/torch/", timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False


def pip_install(*args: str) -> str | None:
    """Install quietly; the URL torch came from, "" if it was already there, None if pip failed."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--report", "-", *args],
                          stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        return None
    installed = json.loads(done.stdout or "{}").get("install", [])
    return next((i["download_info"]["url"] for i in installed if i["metadata"]["name"] == "torch"), "")


def installed_build() -> tuple[str, str | None]:
    """(torch's version, its CUDA version or None) as installed here."""
    code = "import torch, json; print(json.dumps([torch.__version__, torch.version.cuda]))"
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          check=True)
    version, cuda = json.loads(done.stdout.splitlines()[-1])
    return version, cuda


def main(argv: list[str]) -> int:
    (version,) = argv
    if shutil.which("nvidia-smi"):
        print("torch: an NVIDIA GPU is present: the package brings PyPI's CUDA build")
        return 0
    source = pip_install("--index-url", CPU_INDEX, f"torch=={version}") if cpu_index_reachable() else None
    via = "PyTorch's CPU index"
    if source is None:
        via = "PyTorch's CPU index could not be used; pip's usual sources"
        source = pip_install(f"torch=={version}")
        if source is None:
            print(f"error: torch {version} could not be installed", file=sys.stderr)
            return 1
    found, cuda = installed_build()
    build = "the CPU build" if cuda is None else f"the CUDA {cuda} build, though there is no NVIDIA GPU"
    print(f"torch {found}: {build}, " + (f"from {source} ({via})" if source else "already installed"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
