"""The images the stand-in serves, built from this machine's own files (no registry).

Base: this Python's interpreter, its pruned stdlib, the shared libraries ``ldd`` names and a
``/bin/sh``, imported as a flat rootfs. On top: ``spark_stack/simulator`` as the package
``vllm_simulator`` with the vLLM 0.28.0 flag set, entrypoint ``python3 -m vllm_simulator serve``
like the real image's ``vllm serve``, tagged both as the sim image and as the real vLLM image
name. The top layer is rebuilt when the simulator's files change (their hash is a label).
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import docker
from docker.errors import APIError, BuildError, ImageNotFound

from .errors import TestHostError
from .layout import BUILD_DIR, SIM_HASH_LABEL, SIM_IMAGE, VLLM_IMAGE

REPO_ROOT = Path(__file__).resolve().parents[2]
SIMULATOR_SRC = REPO_ROOT / "spark_stack" / "simulator"
FLAGS_FILE = REPO_ROOT / "spark_stack" / "vllm" / "data" / "vllm-flags-0.28.0.json"

PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
BASE_IMAGE = f"spark-stack/python-base:{sys.version.split()[0]}"

# Parts of the stdlib a server never needs; they would triple the image.
PRUNED_STDLIB = frozenset(
    {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages"}
)
PRUNED_EXTENSIONS = re.compile(r"^(_tkinter|_test|_ctypes_test|_xx|xx)")

_DIR_MODES = {"/tmp": 0o1777, "/var/tmp": 0o1777, "/root": 0o700}

DOCKERFILE = f"""\
FROM {BASE_IMAGE}
COPY vllm_simulator /opt/vllm-sim/vllm_simulator
COPY vllm-flags-0.28.0.json /opt/vllm-sim/vllm-flags-0.28.0.json
ENV PYTHONPATH=/opt/vllm-sim \\
    PYTHONUNBUFFERED=1 \\
    VLLM_SIM_FLAGS_FILE=/opt/vllm-sim/vllm-flags-0.28.0.json
ENTRYPOINT ["python3", "-m", "vllm_simulator", "serve"]
"""


def _stdlib_files(stdlib: Path) -> Iterator[Path]:
    for path in sorted(stdlib.rglob("*")):
        rel = path.relative_to(stdlib)
        if rel.parts[0] in PRUNED_STDLIB or rel.parts[0].startswith("config-"):
            continue
        if path.name.endswith((".opt-1.pyc", ".opt-2.pyc")):
            continue
        if rel.parts[0] == "lib-dynload" and PRUNED_EXTENSIONS.match(path.name):
            continue
        if path.is_file() and not path.is_symlink():
            yield path


def shared_libraries(binaries: Iterable[Path]) -> set[Path]:
    """Every shared library (and the loader) ``ldd`` lists for ``binaries``, as ldd names them."""
    found: set[Path] = set()
    for binary in binaries:
        done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
        found.update(parse_ldd(done.stdout))
    return found


def parse_ldd(output: str) -> set[Path]:
    """Library paths from ``ldd`` output: ``name => /path (addr)`` and ``/path (addr)`` lines."""
    paths: set[Path] = set()
    for line in output.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            paths.add(Path(match.group(1)))
    return paths


def _add_file(tar: tarfile.TarFile, source: Path, dest: str, mode: int | None = None) -> None:
    info = tar.gettarinfo(str(source.resolve()), arcname=dest.lstrip("/"))
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if mode is not None:
        info.mode = mode
    with source.resolve().open("rb") as handle:
        tar.addfile(info, handle)


def _add_dir(tar: tarfile.TarFile, dest: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(dest.lstrip("/"))
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def _add_symlink(tar: tarfile.TarFile, dest: str, target: str) -> None:
    info = tarfile.TarInfo(dest.lstrip("/"))
    info.type = tarfile.SYMTYPE
    info.linkname = target
    tar.addfile(info)


def _add_text(tar: tarfile.TarFile, dest: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(dest.lstrip("/"))
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_base_rootfs(out: Path) -> None:
    """A minimal rootfs running this machine's Python, at the paths it was built for."""
    with tarfile.open(out, "w") as tar:
        add_base_rootfs(tar)


def add_base_rootfs(tar: tarfile.TarFile, extra_libraries: Iterable[Path] = ()) -> None:
    """The base rootfs's files into ``tar`` (with ``extra_libraries`` at their own paths)."""
    prefix = Path(sys.base_prefix)
    interpreter = prefix / "bin" / f"python{PY_VERSION}"
    stdlib = prefix / "lib" / f"python{PY_VERSION}"
    shell = Path(shutil.which("dash") or "/bin/sh").resolve()
    if not interpreter.exists() or not stdlib.is_dir():
        raise TestHostError(f"cannot find this Python's files under {prefix}")
    files = list(_stdlib_files(stdlib))
    extensions = [path for path in files if path.suffix == ".so"]
    # libpython comes in here too when the interpreter is a shared build (found via RUNPATH).
    libraries = shared_libraries([interpreter, shell, *extensions]) | set(extra_libraries)
    dirs = {"/bin", "/etc", "/tmp", "/root", "/usr/bin", "/usr/local/bin", "/proc", "/sys",
            "/dev", "/var/tmp"}
    for path in [*files, interpreter, *libraries]:
        dirs.update(str(parent) for parent in path.parents if str(parent) != "/")
    for directory in sorted(dirs):
        _add_dir(tar, directory, _DIR_MODES.get(directory, 0o755))
    for path in [*files, interpreter, *sorted(libraries)]:
        _add_file(tar, path, str(path))
    _add_file(tar, shell, "/bin/sh", 0o755)
    for link in ("/usr/local/bin/python3", "/usr/bin/python3", f"{prefix}/bin/python3"):
        _add_symlink(tar, link, str(interpreter))
    _add_text(tar, "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    _add_text(tar, "/etc/group", "root:x:0:\n")


def ensure_base(client: docker.DockerClient, build_dir: Path = BUILD_DIR) -> str:
    """The base image's id, importing it when this daemon does not have it yet."""
    try:
        return str(client.images.get(BASE_IMAGE).id)
    except ImageNotFound:
        pass
    build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_dir) as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        write_base_rootfs(rootfs)
        repository, tag = BASE_IMAGE.rsplit(":", 1)
        client.api.import_image_from_file(
            str(rootfs),
            repository=repository,
            tag=tag,
            changes=["ENV PATH=/usr/local/bin:/usr/bin:/bin", "CMD [\"python3\"]"],
        )
    return str(client.images.get(BASE_IMAGE).id)


def _simulator_files() -> list[Path]:
    return sorted(
        path
        for path in SIMULATOR_SRC.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def sim_hash(base_id: str) -> str:
    """What the sim image is made of: base image, Dockerfile, simulator sources, flag set."""
    digest = hashlib.sha256()
    digest.update(base_id.encode() + b"\0" + DOCKERFILE.encode() + b"\0")
    for path in _simulator_files():
        digest.update(str(path.relative_to(SIMULATOR_SRC)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(FLAGS_FILE.read_bytes())
    return digest.hexdigest()[:16]


def _current(client: docker.DockerClient, want: str) -> bool:
    try:
        sim = client.images.get(SIM_IMAGE)
        vllm = client.images.get(VLLM_IMAGE)
    except ImageNotFound:
        return False
    return sim.labels.get(SIM_HASH_LABEL) == want and sim.id == vllm.id


def ensure_sim(client: docker.DockerClient, build_dir: Path = BUILD_DIR) -> None:
    """Build and tag the simulator image unless the current one matches the sources."""
    want = sim_hash(ensure_base(client, build_dir))
    if _current(client, want):
        return
    build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_dir) as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(DOCKERFILE)
        package = context / "vllm_simulator"
        package.mkdir()
        for path in _simulator_files():
            dest = package / path.relative_to(SIMULATOR_SRC)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        shutil.copyfile(FLAGS_FILE, context / FLAGS_FILE.name)
        try:
            image, _ = client.images.build(
                path=str(context), tag=SIM_IMAGE, labels={SIM_HASH_LABEL: want}, rm=True,
                forcerm=True,
            )
        except BuildError as exc:
            raise TestHostError(f"building {SIM_IMAGE} failed: {exc.msg}") from exc
    repository, tag = VLLM_IMAGE.rsplit(":", 1)
    image.tag(repository, tag)
    # Sim images this one replaced, unless a container still runs from one (then a later build).
    for stale in client.images.list(filters={"dangling": True, "label": SIM_HASH_LABEL}):
        _remove_if_unused(client, str(stale.id))


def _remove_if_unused(client: docker.DockerClient, image_id: str) -> None:
    """Drop the replaced sim image unless a container still runs from it (it then stays)."""
    try:
        client.images.remove(image_id)
    except APIError:
        pass
