"""Validation lists every problem at once; host, user and proxy settings are checked up front;
a missing ``${VAR}`` is a stack problem (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_stack.cli import main
from spark_stack.cli.common import state as cli_state
from spark_stack.errors import EXIT_USAGE, MissingSecret, StackFileError, UsageError
from spark_stack.stack.loader import load_stack_text
from spark_stack.stack.secrets import resolve

# The audit's file: --api-key in extra_args next to eight other problems.
EVERYTHING_WRONG = """\
name: lab
host: {address: spark}
models:
  - name: q
    preset: qwen3.6-35b-a3b-nvfp4-redhat
    gpu_memory_utilization: 0.7
    max_model_len: 1000
    extra_args: ["--enforce-eagr", "--api-key", "x"]
  - name: q
    preset: qwen3.5-27b
    gpu_memory_utilization: 0.5
    kv_cache_dtype: fp9
proxy:
  routes: {"*": missing}
  listen: 0.0.0.0:4000
claude:
  models: {opus: nothere}
"""


def problems_of(text: str) -> list[tuple[str, int | None, str, str]]:
    with pytest.raises(StackFileError) as caught:
        load_stack_text(text, filename="s.yaml")
    return [(p.key_path, p.line, p.message, p.fix or "") for p in caught.value.problems]


def run(*args: str) -> int:
    cli_state.exit_code = 0
    cli_state.json = False
    return main(list(args))


def test_api_key_in_extra_args_does_not_hide_the_other_problems() -> None:
    found = problems_of(EVERYTHING_WRONG)
    assert [(key, line) for key, line, _, _ in found] == [
        ("models[0].extra_args[1]", 8),
        ("models[1].name", 9),
        ("models[1].port", 9),
        ("proxy.routes.*", 14),
        ("claude.models.opus", 17),
        ("models[1].gpu_memory_utilization", 11),
        ("models[0].max_model_len", 7),
        ("proxy.listen", 15),
        ("models[0].extra_args[0]", 8),
        ("models[1].kv_cache_dtype", 12),
    ]
    assert "--api-key must not be passed" in found[0][2]
    assert "'--enforce-eagr'" in found[8][2] and "--enforce-eager" in found[8][3]


def test_schema_errors_do_not_hide_the_cross_field_checks() -> None:
    found = problems_of(
        "name: lab\n"
        "host: {address: spark}\n"
        "models:\n"
        "  - name: q\n"
        "    preset: qwen3.6-35b-a3b-nvfp4-redhat\n"
        "    gpu_memory_utilizaton: 0.5\n"
        "    max_model_len: 1000\n"
        "  - name: q\n"
        "    preset: nope\n"
        "proxy:\n"
        "  routes: {'*': missing}\n"
    )
    assert [(key, message.split(" (")[0]) for key, _, message, _ in found] == [
        ("models[1].preset", "unknown preset 'nope'"),
        ("models[0].gpu_memory_utilizaton", "unknown key 'gpu_memory_utilizaton'"),
        ("models[1].name", "duplicate model name 'q'"),
        ("proxy.routes.*", "route '*' points to unknown model 'missing'"),
        ("models[0].max_model_len", "max_model_len 1000 is too small for Claude Code, whose "
         "prompt alone is ~25K tokens"),
    ]


def test_a_refused_value_does_not_hide_a_missing_host() -> None:
    found = problems_of(
        "name: t\n"
        "models:\n"
        "  - name: m\n"
        "    preset: qwen3.6-35b-a3b-nvfp4-redhat\n"
        '    port: "abc"\n'
    )
    assert [(key, line) for key, line, _, _ in found] == [
        ("models[0].port", 5), ("models[0].host", 3)]
    assert "runs in a container but the stack has no host" in found[1][2]


def test_a_model_that_cannot_be_mended_still_takes_part_by_name() -> None:
    found = problems_of(
        "name: t\n"
        "models:\n"
        "  - {name: a, kind: simulator}\n"
        "  - {name: a, kind: rocket}\n"
        "  - {name: b, kind: simulator, port: 8800}\n"
        "  - {name: c, kind: simulator, port: banana, max_model_len: 10}\n"
        "proxy: {token: plain-text, routes: {'*': d}}\n"
    )
    keys = [key for key, _, _, _ in found]
    assert keys == [
        "models[1].kind", "models[3].port", "proxy.token",
        "models[1].name", "models[2].port", "proxy.routes.*", "models[3].max_model_len",
    ]
    # The proxy token was refused, not missing: no "without a token" follow-up.
    assert not any("without a token" in message for _, _, message, _ in found)


def test_known_models_are_listed_once() -> None:
    found = problems_of(
        "name: t\nmodels:\n  - {name: q, kind: simulator}\n"
        "  - {name: q, kind: simulator, port: 8801}\n"
        "proxy: {routes: {'x-*': zzz}}\nclaude: {default_model: zzz}\n"
    )
    fixes = {key: fix for key, _, _, fix in found}
    assert fixes["proxy.routes.x-*"] == "remove it; known models: q"
    assert fixes["claude.default_model"] == "use one of: q"


@pytest.mark.parametrize("listen", ["0.0.0.0:4000", "[::]:4000", "192.168.1.5:4000"])
def test_a_proxy_off_loopback_without_token_is_an_error(
    listen: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text(f"name: t\nmodels:\n  - {{name: m, kind: simulator}}\nproxy:\n"
                     f"  listen: '{listen}'\n")
    assert run("-s", str(stack), "validate") == 2
    err = capsys.readouterr().err
    assert f"{stack}:5:11: proxy.listen: the proxy listens on {listen} without a token" in err
    assert "set token: auto (generated) or token: ${VAR}" in err
    stack.write_text(stack.read_text() + "  token: auto\n")
    assert run("-s", str(stack), "validate") == 0


@pytest.mark.parametrize("listen", ["127.0.0.1:4000", "127.0.0.2:4000", "[::1]:4000",
                                    "localhost:4000"])
def test_a_loopback_proxy_needs_no_token(listen: str) -> None:
    text = f"name: t\nmodels:\n  - {{name: m, kind: simulator}}\nproxy: {{listen: '{listen}'}}\n"
    assert load_stack_text(text).stack.proxy.token is None


@pytest.mark.parametrize(
    "address",
    ["spark", "gb10.lan", "192.168.1.20", "fe80::1%eth0", "2001:db8::2", "my_alias-2"],
)
def test_good_host_addresses_validate(address: str) -> None:
    text = (f"name: t\nhosts:\n  a: {{address: '{address}', user: ubuntu.admin_1}}\n"
            "models:\n  - {name: m, kind: simulator}\n")
    assert load_stack_text(text).stack.hosts["a"].address == address


@pytest.mark.parametrize(
    "address", ["bad host", "spark;rm -rf ~", "$(id)", "'spark'", "a\"b", "-oProxyCommand=x",
                "user@spark", "a`b`"],
)
def test_bad_host_addresses_are_located_errors(address: str) -> None:
    text = (f"name: t\nhost:\n  user: ubuntu\n  address: {address!r}\n"
            "models:\n  - {name: m, kind: simulator}\n")
    found = problems_of(text)
    assert [(key, line) for key, line, _, _ in found] == [("host.address", 4)]
    assert "hostname, IP address or ~/.ssh/config alias" in found[0][2]


@pytest.mark.parametrize("user", ["bad user", "root;id", "$USER", "-l"])
def test_bad_user_names_are_located_errors(user: str) -> None:
    found = problems_of(
        f"name: t\nhost: {{address: spark, user: {user!r}}}\nmodels:\n"
        "  - {name: m, kind: simulator}\n"
    )
    assert [(key, line) for key, line, _, _ in found] == [("host.user", 2)]
    assert "user ubuntu" in found[0][3].replace(":", "")


def test_init_refuses_a_bad_host_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "y.yaml"
    assert run("init", "--host", "bad host;rm", str(target)) == 2
    err = capsys.readouterr().err
    assert "--host: address must be a hostname" in err and "fix:" in err
    assert not target.exists()
    assert run("init", "--host", "fe80::1%eth0", str(target)) == 0
    assert "address: fe80::1%eth0" in target.read_text()
    assert run("-s", str(target), "validate") == 0


def test_resolve_raises_missing_secret_with_exit_2() -> None:
    with pytest.raises(MissingSecret) as caught:
        resolve("x-${NOT_SET_ANYWHERE}", {}, where="proxy.token")
    assert isinstance(caught.value, UsageError)
    assert caught.value.exit_code == EXIT_USAGE
    assert caught.value.message == (
        "environment variable NOT_SET_ANYWHERE is not set (used by proxy.token)"
    )
    assert resolve("x-${SET}", {"SET": "v"}) == "x-v"


def test_an_unset_secret_exits_2_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("F2_UNSET_PROXY_TOKEN", raising=False)
    stack = tmp_path / "s.yaml"
    stack.write_text("name: t\nmodels:\n  - {name: m, kind: simulator}\n"
                     "proxy: {token: '${F2_UNSET_PROXY_TOKEN}'}\n")
    assert run("-s", str(stack), "claude", "--print-env") == 2
    err = capsys.readouterr().err
    assert "environment variable F2_UNSET_PROXY_TOKEN is not set (used by proxy.token)" in err
    assert "export F2_UNSET_PROXY_TOKEN=" in err
    monkeypatch.setenv("F2_UNSET_PROXY_TOKEN", "sekrit-value")
    assert run("-s", str(stack), "claude", "--print-env") == 0
    assert "sekrit-value" in capsys.readouterr().out


BASE_MODEL = (
    "name: t\nhost: {address: spark, user: ubuntu}\nmodels:\n  - name: m\n"
    "    preset: qwen3.6-35b-a3b-nvfp4-redhat\n"
)


@pytest.mark.parametrize(
    ("lines", "key", "message"),
    [
        ('    ulimits: {nofile: "abc"}\n', "models[0].ulimits.nofile",
         "a ulimit must be a number or 'SOFT:HARD'"),
        ('    ulimits: {nofile: "10:5"}\n', "models[0].ulimits.nofile", "soft limit 10 is above"),
        ("    ulimits: {nofiles: 5}\n", "models[0].ulimits.nofiles", "unknown ulimit 'nofiles'"),
        ("    image: 'vllm/vllm-openai:v0.28.0 --rm'\n", "models[0].image",
         "image must be a docker image reference"),
        ("    image: 'vllm/VLLM-openai:latest'\n", "models[0].image",
         "image must be a docker image reference"),
        ("    image: 'vllm/vllm-openai::x'\n", "models[0].image",
         "image must be a docker image reference"),
        ("    env: {'$(id)': x}\n", "models[0].env.$(id)", "'$(id)' is not a valid name"),
        ("    env: {'A B': x}\n", "models[0].env.A B", "'A B' is not a valid name"),
        ('    env: {"A\\nB": x}\n', "models[0].env.A\nB", "is not a valid name"),
        ('    env: {"A\\n": x}\n', "models[0].env.A\n", "is not a valid name"),
    ],
)
def test_values_docker_would_refuse_are_stack_file_errors(
    lines: str, key: str, message: str
) -> None:
    found = problems_of(BASE_MODEL + lines)
    assert [k for k, _, _, _ in found] == [key]
    assert message in found[0][2]
    assert found[0][3]  # a fix


@pytest.mark.parametrize(
    "image",
    ["vllm/vllm-openai:v0.28.0", "nvcr.io/nvidia/vllm:25.09-py3", "localhost:5000/vllm",
     "registry.example.com:443/a/b-c__d.e:tag_1", "ubuntu",
     "vllm/vllm-openai@sha256:" + "a" * 64, "[2001:db8::1]:5000/vllm:v1"],
)
def test_good_image_references_validate(image: str) -> None:
    loaded = load_stack_text(BASE_MODEL + f"    image: '{image}'\n", lint=False)
    assert loaded.stack.models[0].image == image  # type: ignore[union-attr]


def test_good_ulimits_validate_and_plan() -> None:
    from spark_stack.spec import render_container

    loaded = load_stack_text(
        BASE_MODEL + '    ulimits: {nofile: "65536:65536", memlock: -1, stack: " 67108864"}\n',
        lint=False)
    spec = render_container(loaded.stack, loaded.stack.models[0])  # type: ignore[arg-type]
    assert ("nofile", 65536, 65536) in spec.ulimits


@pytest.mark.parametrize(
    ("host", "key"),
    [('{address: "spark\\n", user: ubuntu}', "host.address"),
     ('{address: spark, user: "ubuntu\\n"}', "host.user")],
)
def test_a_trailing_newline_is_refused(host: str, key: str) -> None:
    found = problems_of(f"name: t\nhost: {host}\nmodels:\n  - {{name: m, kind: simulator}}\n")
    assert [k for k, _, _, _ in found] == [key]
