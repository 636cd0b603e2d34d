#!/usr/bin/env bash
# The project's one test command (README, CI): install what the tests need when it is missing,
# then lint, type-check and run pytest. Arguments go to pytest, e.g. `bash scripts/test.sh tests/unit`.
# Idempotent: on a machine that already has everything it goes straight to the checks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

# The Claude Code CLI the e2e tests drive; bump deliberately, after re-checking claude-code-wire.md.
CLAUDE_CODE_VERSION=2.1.332
CLAUDE_PREFIX="$ROOT/.testhost/claude"
CLAUDE_BIN="$CLAUDE_PREFIX/node_modules/.bin/claude"

# Keep every tool hermetic: no telemetry, no update checks, no model-cost downloads.
export LITELLM_LOCAL_MODEL_COST_MAP=True
export DISABLE_TELEMETRY=1
export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
export DISABLE_AUTOUPDATER=1
export DISABLE_ERROR_REPORTING=1
export HF_HUB_OFFLINE=1 SPARK_STACK_OFFLINE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { printf '==> %s\n' "$*"; }
TIMINGS=()
step_done() { TIMINGS+=("$(printf '%-9s %6ss' "$1" "$(elapsed "$2")")"); }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

t_all=$(now)

# --- system packages (dockerd, sshd, ip, iptables) for the stand-in GB10 host ---------------
t=$(now)
missing=0
for cmd in docker dockerd containerd runc sshd ssh ssh-keygen ip iptables nsenter; do
  if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1; then missing=1; fi
done
if [ "$missing" -eq 1 ]; then
  say "installing system packages (docker.io openssh-server openssh-client iptables iproute2)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io openssh-server openssh-client iptables iproute2 >/dev/null
fi
step_done packages "$t"

# --- the pinned Claude Code CLI, project-local ------------------------------------------------
t=$(now)
installed_version() {
  local manifest="$CLAUDE_PREFIX/node_modules/@anthropic-ai/claude-code/package.json"
  [ -f "$manifest" ] && sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$manifest" | head -n1
}
if [ "$(installed_version || true)" != "$CLAUDE_CODE_VERSION" ] || [ ! -x "$CLAUDE_BIN" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    say "installing npm (Debian) to fetch Claude Code"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      nodejs npm >/dev/null
  fi
  say "installing @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION into .testhost/claude"
  mkdir -p "$CLAUDE_PREFIX"
  npm install --silent --no-save --prefix "$CLAUDE_PREFIX" \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >/dev/null
fi
export PATH="$CLAUDE_PREFIX/node_modules/.bin:$PATH"
export SPARK_STACK_CLAUDE_BIN="$CLAUDE_BIN"
step_done claude "$t"

# --- the project's venv -------------------------------------------------------------------------
t=$(now)
PYTHON=python3
if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the dependency lists change (or the venv is new).
stamp=.venv/.spark-stack-install
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $ROOT"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  say "installing the project into .venv (pip install -e '.[test]')"
  .venv/bin/pip install -q -e '.[test]'
  printf '%s\n' "$want" >"$stamp"
fi
step_done venv "$t"

# --- checks: every one runs, so one CI run reports every failure -------------------------------
run_check() {
  local name=$1
  shift
  local t
  t=$(now)
  say "$name"
  set +e
  "$@"
  local code=$?
  set -e
  step_done "$name" "$t"
  return "$code"
}
ruff_rc=0 mypy_rc=0 host_rc=0 rc=0
run_check ruff .venv/bin/ruff check -q spark_stack tests || ruff_rc=$?
run_check mypy .venv/bin/mypy || mypy_rc=$?
# A full run brings the stand-in GB10 host up first, so its cost shows on its own line; a
# failure there also fails the e2e tests with the same message, and the unit tests still run.
if [ "$#" -eq 0 ]; then
  run_check testhost .venv/bin/python -m tests.testhost up || host_rc=$?
  # vLLM's real engine (CPU build) for tests/e2e/test_real_vllm.py: installed and imaged once
  # per machine (minutes the first time, ~1 s after), so its cost shows on its own line too.
  run_check engine .venv/bin/python -m tests.testhost engine || host_rc=$?
fi
PYTEST_LOG=$(mktemp)
trap 'rm -f "$PYTEST_LOG"' EXIT
# One line per test file with its progress (not minutes of bare dots), then the slowest tests.
run_pytest() {
  .venv/bin/python -m pytest -p no:cacheprovider --durations=15 "$@" 2>&1 | tee "$PYTEST_LOG"
  return "${PIPESTATUS[0]}"
}
run_check pytest run_pytest "$@" || rc=$?

# CI leaves nothing running behind it; a developer keeps the warm stand-in host for the next run.
if [ "${CI:-}" = "true" ] && [ -d /run/netns ] && [ -e /run/netns/sparkhost ]; then
  t=$(now)
  .venv/bin/python -m tests.testhost down >/dev/null 2>&1 || true
  step_done teardown "$t"
fi

step_done total "$t_all"
echo "--- timing ---"
printf '%s\n' "${TIMINGS[@]}"

status=$rc
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests; refusing to pass an empty run" >&2
  status=1
elif [ "$rc" -eq 0 ] && { [ "$ruff_rc" -ne 0 ] || [ "$mypy_rc" -ne 0 ] || [ "$host_rc" -ne 0 ]; }; then
  echo "error: tests passed but ruff (exit $ruff_rc), mypy (exit $mypy_rc) or the" \
    "stand-in host (exit $host_rc) failed" >&2
  status=1
fi
# pytest's own summary line closes the output, where readers of test logs look for it.
tail -n 1 "$PYTEST_LOG"
exit "$status"
