"""The Ray test image (``distributed: ray``): the simulator plus Ray, on both stand-ins.

Kept apart from the sim image (it is ~3x its size; the shared sim and vLLM tags are never
touched) and built only when a Ray test asks for it, from the same base: Ray's wheel from PyPI
installed for this Python into a directory under the build dir (once per Ray version), the
shared libraries its binaries need (``ldd``), and two commands as the real vLLM image has them,
``ray`` and ``vllm`` (``vllm serve`` runs the simulator). Built on host 1's daemon and copied
to host 2's (``docker save``/``load``), so both hold the same image id, as ``up`` requires of a
model's nodes.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import docker
from docker.errors import BuildError, ImageNotFound

from .errors import TestHostError
from .image import (
    FLAGS_FILE,
    PY_VERSION,
    SIMULATOR_SRC,
    _simulator_files,
    ensure_base,
    shared_libraries,
    sim_hash,
)
from .layout import HOST1, HOST2, Layout

RAY_VERSION = "2.60.0"
RAY_IMAGE = "spark-stack/vllm-sim-ray:test"
RAY_HASH_LABEL = "spark-stack.testhost.ray-hash"
# Parts of Ray a cluster of `ray start` nodes and one driver never import (Java, libraries).
PRUNED = ("jars", "rllib", "data", "serve", "tune", "train")

RAY_COMMAND = """#!/usr/local/bin/python3
import sys
from ray.scripts.scripts import main
sys.exit(main())
"""
VLLM_COMMAND = """#!/usr/local/bin/python3
import runpy, sys
sys.argv[0] = "vllm"
runpy.run_module("vllm_simulator", run_name="__main__", alter_sys=True)
"""
DOCKERFILE = """\
FROM {base}
COPY lib/ /
COPY site /opt/ray-site
COPY ray vllm /usr/local/bin/
COPY vllm_simulator /opt/vllm-sim/vllm_simulator
COPY vllm-flags-0.28.0.json /opt/vllm-sim/vllm-flags-0.28.0.json
ENV PYTHONPATH=/opt/vllm-sim:/opt/ray-site \\
    PYTHONUNBUFFERED=1 \\
    VLLM_SIM_FLAGS_FILE=/opt/vllm-sim/vllm-flags-0.28.0.json \\
    RAY_USAGE_STATS_ENABLED=0
ENTRYPOINT ["python3", "-m", "vllm_simulator", "serve"]
"""


def ray_site(build_dir: Path) -> Path:
    """Ray and its dependencies for this Python, installed once per version (PyPI wheels)."""
    site = build_dir / f"ray-{RAY_VERSION}-py{PY_VERSION}"
    if (site / "ray" / "__init__.py").exists():
        return site
    partial = site.with_name(site.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--only-binary=:all:",
         "--target", str(partial), f"ray=={RAY_VERSION}"],
        capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise TestHostError(f"pip could not install ray {RAY_VERSION}: {done.stderr[-2000:]}")
    for name in PRUNED:
        shutil.rmtree(partial / "ray" / name, ignore_errors=True)
    shutil.rmtree(partial / "bin", ignore_errors=True)
    partial.rename(site)
    return site


def _binaries(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*") if p.is_file() and (
        ".so" in p.name or p.name in ("raylet", "gcs_server")))


def _hash(base_id: str) -> str:
    digest = hashlib.sha256()
    for part in (sim_hash(base_id), RAY_VERSION, "lib-mode", DOCKERFILE, RAY_COMMAND,
                 VLLM_COMMAND, *PRUNED):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def _label(client: docker.DockerClient) -> tuple[str, str] | None:
    try:
        image = client.images.get(RAY_IMAGE)
    except ImageNotFound:
        return None
    return str(image.id), image.labels.get(RAY_HASH_LABEL, "")


def ensure_ray_image(layouts: tuple[Layout, Layout] = (HOST1, HOST2)) -> str:
    """Build the Ray image on the first host's daemon unless current, copy it to the second;
    its id."""
    first, second = (docker.DockerClient(base_url=f"unix://{layout.docker_sock}", timeout=600)
                     for layout in layouts)
    try:
        base = ensure_base(first, layouts[0].build_dir)
        want = _hash(base)
        have = _label(first)
        if have is None or have[1] != want:
            _build(first, layouts[0].build_dir, base, want)
            have = _label(first)
        assert have is not None
        if _label(second) != have:
            _copy(first, second, layouts[0].build_dir)
        return have[0]
    finally:
        first.close()
        second.close()


def _build(client: docker.DockerClient, build_dir: Path, base: str, want: str) -> None:
    site = ray_site(build_dir)
    with tempfile.TemporaryDirectory(dir=build_dir) as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
        for name, text in (("ray", RAY_COMMAND), ("vllm", VLLM_COMMAND)):
            (context / name).write_text(text)
            (context / name).chmod(0o755)
        for path in _simulator_files():
            dest = context / "vllm_simulator" / path.relative_to(SIMULATOR_SRC)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        shutil.copyfile(FLAGS_FILE, context / FLAGS_FILE.name)
        shutil.copytree(site, context / "site", symlinks=True)
        for library in shared_libraries(_binaries(site)):
            dest = context / "lib" / str(library).lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(library.resolve(), dest)  # the mode too: the loader must stay executable
        try:
            client.images.build(path=str(context), tag=RAY_IMAGE,
                                labels={RAY_HASH_LABEL: want}, rm=True, forcerm=True)
        except BuildError as exc:
            raise TestHostError(f"building {RAY_IMAGE} failed: {exc.msg}") from exc


def _copy(source: docker.DockerClient, target: docker.DockerClient, build_dir: Path) -> None:
    with tempfile.TemporaryDirectory(dir=build_dir) as tmp:
        archive = Path(tmp) / "ray-image.tar"
        with archive.open("wb") as out:
            for chunk in source.images.get(RAY_IMAGE).save(named=True):
                out.write(chunk)
        with archive.open("rb") as data:
            target.images.load(data)
