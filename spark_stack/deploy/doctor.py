"""``doctor``: check the link between the hosts of a model across hosts, before deploying.

One remote script per host gathers what it sees (:func:`link_script`): its link interface
(state, MTU, addresses), whether it reaches every peer's link address *from that host* (ping,
else a TCP connect by a python3 one-liner), the image's id and the model's files in its HF
cache. :func:`judge` turns that into verdicts, each with its fix (pure). Everything goes over
the connector protocol, so the fake hosts test it.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..deployment import Deployment, ModelDeployment
from ..errors import SparkStackError
from ..spec import CACHE_TARGETS
from ..stack.cluster_checks import LINK_LOCAL_CAUSE
from .connector import Connect

MARK = "@@spark-stack-doctor@@"
ADVISED_MTU = 9000
Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Verdict:
    check: str  # interface | address | mtu | reach | image | model_files | ssh
    host: str
    level: Level
    message: str
    fix: str | None = None


@dataclass(frozen=True)
class HostLook:
    """What one host reported (None for what the script could not see)."""

    operstate: str | None = None
    mtu: int | None = None
    addresses: tuple[str, ...] = ()
    reach: Mapping[str, bool] = field(default_factory=dict)  # peer link address → reached
    image_id: str | None = None
    model_bytes: int | None = None


def _model_dir(model: ModelDeployment) -> str | None:
    spec = model.container
    assert spec is not None
    mount = next((m for m in spec.mounts if m.target == CACHE_TARGETS["huggingface"]), None)
    if mount is None or not spec.command:
        return None
    source = "$HOME" + mount.source[1:] if mount.source.startswith("~") else mount.source
    return f"{source.rstrip('/')}/hub/models--{spec.command[0].replace('/', '--')}"


# A TCP connect to the peer's port 22: an answer, even a refusal (sshd may listen on the LAN
# address only), proves the peer's stack answered over the link; a timeout does not.
TCP_REACH = (
    "import errno,socket,sys; a=sys.argv[1]; "
    "s=socket.socket(socket.AF_INET6 if chr(58) in a else socket.AF_INET); s.settimeout(2); "
    "sys.exit(s.connect_ex((a, 22)) not in (0, errno.ECONNREFUSED))"
)


def link_script(interface: str, peers: list[str], image: str, model_dir: str | None) -> str:
    """One round trip: the interface, each peer over the link, the image id, the model files."""
    iface = shlex.quote(interface)
    # Netlink (`ip`), not /sys/class/net: sysfs shows the network namespace it was mounted
    # in, which need not be the session's (a container, a namespaced sshd).
    link = f"ip -o link show dev {iface} 2>/dev/null"
    parts = [
        f"echo '{MARK} operstate'; {link} | sed -n 's/.* state \\([A-Za-z]*\\).*/\\1/p' "
        "| tr 'A-Z' 'a-z'",
        f"echo '{MARK} mtu'; {link} | sed -n 's/.* mtu \\([0-9]*\\).*/\\1/p'",
        f"echo '{MARK} addresses'; ip -o addr show dev {iface} 2>/dev/null "
        "| awk '{print $4}'",
    ]
    for peer in peers:
        quoted = shlex.quote(peer)
        tcp = f"python3 -c '{TCP_REACH}' {quoted}"
        parts.append(f"echo '{MARK} reach {peer}'; (ping -c1 -W1 {quoted} >/dev/null 2>&1 || "
                     f"{tcp} >/dev/null 2>&1) && echo yes || echo no")
    parts.append(f"echo '{MARK} image'; docker image inspect --format '{{{{.Id}}}}' "
                 f"{shlex.quote(image)} 2>/dev/null")
    if model_dir is not None:
        parts.append(f"echo '{MARK} model'; du -sbL \"{model_dir}\" 2>/dev/null | cut -f1")
    return "; ".join(parts)


def parse_look(text: str) -> HostLook:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith(MARK + " "):
            current = sections.setdefault(line[len(MARK) + 1:].strip(), [])
        elif line.strip():
            current.append(line.strip())

    def first(key: str) -> str | None:
        lines = sections.get(key)
        return lines[0] if lines else None

    mtu, size = first("mtu"), first("model")
    return HostLook(
        operstate=first("operstate"),
        mtu=int(mtu) if mtu and mtu.isdigit() else None,
        addresses=tuple(a.split("/")[0] for a in sections.get("addresses", [])),
        reach={key[len("reach "):]: (lines or ["no"])[0] == "yes"
               for key, lines in sections.items() if key.startswith("reach ")},
        image_id=first("image"),
        model_bytes=int(size) if size and size.isdigit() else None,
    )


def judge(model: ModelDeployment, looks: Mapping[str, HostLook]) -> list[Verdict]:
    """The verdicts on one model's nodes and the link between them (pure)."""
    out: list[Verdict] = []
    for node in model.nodes:
        key, look, iface, address = node.host_key, looks.get(node.host_key), node.interface, \
            node.link_address
        if look is None:
            continue
        if look.operstate is None:
            out.append(Verdict("interface", key, "fail", f"{key} has no interface {iface}",
                               f"write the CX7 port's name in cluster.link.{key}.interface "
                               "(`ip -br link` on the host lists them)"))
            continue
        if look.operstate.lower() != "up":
            out.append(Verdict("interface", key, "fail", f"{iface} on {key} is {look.operstate}",
                               "check the QSFP cable and `sudo ip link set "
                               f"{iface} up` (netplan applies it at boot)"))
        else:
            out.append(Verdict("interface", key, "ok", f"{iface} on {key} is up"))
        if ipaddress.ip_address(address).is_link_local:
            out.append(Verdict("address", key, "fail", f"{address} is link-local: "
                               f"{LINK_LOCAL_CAUSE}", "give the port a static address by "
                               "netplan (/etc/netplan/40-cx7.yaml)"))
        elif address not in look.addresses:
            found = ", ".join(look.addresses) or "none"
            link_local = [a for a in look.addresses if ipaddress.ip_address(a).is_link_local]
            why = f" (only link-local {', '.join(link_local)}: {LINK_LOCAL_CAUSE})" \
                if link_local and len(link_local) == len(look.addresses) else ""
            out.append(Verdict("address", key, "fail",
                               f"{iface} on {key} does not have {address} (it has: {found}){why}",
                               f"add {address}/24 to {iface} by netplan "
                               "(/etc/netplan/40-cx7.yaml) and `sudo netplan apply`, or fix "
                               f"cluster.link.{key}.address"))
        else:
            out.append(Verdict("address", key, "ok", f"{iface} on {key} has {address}"))
        if look.mtu is not None:
            if look.mtu < ADVISED_MTU:
                out.append(Verdict("mtu", key, "warn",
                                   f"MTU {look.mtu} on {iface} of {key}: NCCL reaches ~3 GB/s "
                                   "instead of ~24 (dgx-spark-playbooks #103)",
                                   f"set mtu: {ADVISED_MTU} for {iface} in netplan on both "
                                   "hosts"))
            else:
                out.append(Verdict("mtu", key, "ok", f"MTU {look.mtu} on {iface} of {key}"))
        for peer in model.nodes:
            if peer.host_key == key:
                continue
            reached = look.reach.get(peer.link_address)
            if reached:
                out.append(Verdict("reach", key, "ok", f"{key} reaches {peer.host_key} at "
                                   f"{peer.link_address} over the link"))
            else:
                out.append(Verdict("reach", key, "fail", f"{key} cannot reach "
                                   f"{peer.host_key} at {peer.link_address} over the link",
                                   "check the cable, both addresses (same subnet) and any "
                                   "firewall between the CX7 ports"))
    out += _image_verdicts(model, looks)
    for node in model.nodes:
        look = looks.get(node.host_key)
        if look is None:
            continue
        if look.model_bytes:
            out.append(Verdict("model_files", node.host_key, "ok",
                               f"the model's files on {node.host_key}: "
                               f"{look.model_bytes / 2**30:.1f} GiB"))
        else:
            out.append(Verdict("model_files", node.host_key, "warn",
                               f"the model's files are not in {node.host_key}'s HF cache: "
                               "the first `up` downloads them on every node",
                               "copy them over the link first (rsync to the peer's CX7 "
                               "address, not the 10G port)"))
    return out


def _image_verdicts(model: ModelDeployment, looks: Mapping[str, HostLook]) -> list[Verdict]:
    assert model.container is not None
    image = model.container.image
    ids = {n.host_key: looks[n.host_key].image_id for n in model.nodes if n.host_key in looks}
    out = [Verdict("image", key, "warn", f"{image} is not on {key}",
                   "`spark-stack up --pull` pulls it on every node (or docker save | ssh "
                   "docker load over the link)") for key, found in ids.items() if not found]
    present = {i for i in ids.values() if i}
    if len(present) > 1:
        seen = ", ".join(f"{k}: {(i or 'missing')[:19]}" for k, i in ids.items())
        out.append(Verdict("image", model.nodes[0].host_key, "fail",
                           f"{image} differs between the hosts ({seen})",
                           "`spark-stack up --pull`, or pin the image by digest"))
    elif present and not out:
        out.append(Verdict("image", model.nodes[0].host_key, "ok",
                           f"{image} has the same id on every host"))
    return out


# `--bandwidth`: one TCP stream for a few seconds from a worker to the head, by python3 on
# both (no iperf3 needed on the hosts). NCCL over RoCE reaches ~24 GB/s (playbooks PR #103);
# one Python stream is bounded by a CPU core, so the figure is a floor; below the 10G port's
# ~1.2 GB/s the traffic is not on the CX7 link.
BANDWIDTH_MARK = "@@spark-stack-bandwidth@@"
BANDWIDTH_PORT = 5201
BANDWIDTH_SECONDS = 3
EXPECTED_GBPS = 24.0
SLOW_GBPS = 1.5
_SINK = ("import socket,sys\n"
         "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
         "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(30)\n"
         "c, _ = s.accept()\n"
         "while c.recv(1 << 22): pass\n")
_SOURCE = ("import socket,sys,time\n"
           "end = time.time() + 5\n"
           "while True:\n"
           "    try:\n"
           "        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
           "        break\n"
           "    except OSError:\n"
           "        if time.time() > end: raise\n"
           "        time.sleep(0.2)\n"
           "b = bytes(1 << 22); n = 0; t = time.time()\n"
           "while time.time() - t < float(sys.argv[3]): c.sendall(b); n += len(b)\n"
           "c.close(); print(n, time.time() - t)\n")


def sink_script(address: str) -> str:
    """Started in the background on the head: receives one stream on its link address."""
    return (f": {BANDWIDTH_MARK} sink; nohup python3 -c {shlex.quote(_SINK)} "
            f"{shlex.quote(address)} {BANDWIDTH_PORT} >/dev/null 2>&1 &")


def source_script(address: str) -> str:
    return (f"echo '{BANDWIDTH_MARK}'; python3 -c {shlex.quote(_SOURCE)} "
            f"{shlex.quote(address)} {BANDWIDTH_PORT} {BANDWIDTH_SECONDS} 2>&1 | tail -1")


def bandwidth_verdict(source: str, sink: str, output: str) -> Verdict:
    """The verdict on one measured stream (``BYTES SECONDS`` from the source's script)."""
    words = output.replace(BANDWIDTH_MARK, "").split()
    try:
        gbps = int(words[0]) / float(words[1]) / 1e9
    except (IndexError, ValueError, ZeroDivisionError):
        return Verdict("bandwidth", source, "fail",
                       f"no stream from {source} to {sink} over the link: "
                       f"{' '.join(words)[:160] or 'no answer'}",
                       "check `reach` above, python3 on both hosts and that port "
                       f"{BANDWIDTH_PORT} is free on {sink}")
    text = (f"{gbps:.1f} GB/s from {source} to {sink} over the link (one TCP stream; NCCL "
            f"over RoCE reaches ~{EXPECTED_GBPS:.0f} GB/s)")
    if gbps < SLOW_GBPS:
        return Verdict("bandwidth", source, "warn", text,
                       "the traffic may use the 10G port or a small MTU: check the addresses, "
                       "MTU 9000 and set nccl_ib_hca for RoCE")
    return Verdict("bandwidth", source, "ok", text)


def measure(deployment: Deployment, connect: Connect, trust_host_key: bool) -> list[Verdict]:
    """One stream from every worker to its head."""
    out = []
    for model in deployment.models:
        if not model.nodes:
            continue
        head = model.nodes[0]
        for node in model.nodes[1:]:
            try:
                with connect(head.host_key, head.host, trust_host_key) as session:
                    session.conn.run_script(sink_script(head.link_address), timeout=20)
                with connect(node.host_key, node.host, trust_host_key) as session:
                    done = session.conn.run_script(source_script(head.link_address),
                                                   timeout=BANDWIDTH_SECONDS + 30)
            except SparkStackError as exc:
                out.append(Verdict("ssh", node.host_key, "fail", exc.message, exc.fix))
                continue
            out.append(bandwidth_verdict(node.host_key, head.host_key,
                                         done.stdout + done.stderr))
    return out


def doctor(deployment: Deployment, *, trust_host_key: bool = False,
           connect: Connect | None = None, bandwidth: bool = False) -> list[Verdict]:
    """Every verdict on every model across hosts (none when the stack has none); with
    ``bandwidth`` also a short transfer between the hosts."""
    if connect is None:
        from .session import open_session

        connect = open_session
    out: list[Verdict] = []
    for model in deployment.models:
        if not model.nodes or model.container is None:
            continue
        looks: dict[str, HostLook] = {}
        for node in model.nodes:
            peers = [p.link_address for p in model.nodes if p.host_key != node.host_key]
            script = link_script(node.interface, peers, model.container.image, _model_dir(model))
            try:
                with connect(node.host_key, node.host, trust_host_key) as session:
                    looks[node.host_key] = parse_look(session.conn.run_script(script,
                                                                              timeout=60).stdout)
            except SparkStackError as exc:
                out.append(Verdict("ssh", node.host_key, "fail", exc.message, exc.fix))
        out += judge(model, looks)
    if bandwidth:
        out += measure(deployment, connect, trust_host_key)
    return out


def as_json(verdicts: list[Verdict]) -> dict[str, Any]:
    return {"ok": not any(v.level == "fail" for v in verdicts),
            "checks": [asdict(v) for v in verdicts]}
