#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./dev.sh demo   set up, then run the offline demo (weather bot: recorded LLM session + espeak-ng -> WAV)
#   ./dev.sh test   set up, then run lint, type checks and the whole test suite
# Set-up is idempotent: system packages (when root and missing), a .venv, the package with its extras.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(espeak-ng ffmpeg sox redis-server chromium chromium-driver)

setup() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing system packages: ${missing[*]}" >&2
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "warning: missing system packages (install them as root): ${missing[*]}" >&2
    fi
  fi
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,redis,contract-livekit]" 2>&1 \
    | grep -v "^WARNING: Location" || true
  # Pipecat's Twilio/Telnyx/Plivo serializers are the telephony tests' reference clients (code nobody here wrote).
  # --no-deps: its full dependency set pulls numba and onnxruntime (~300 MB) that the serializers never import.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps pipecat-ai==1.14.0 wait_for2==0.4.1 \
    loudness==0.2.0 docstring_parser==0.18.0 sentencex==1.0.32 aiofiles==25.1.0 loguru==0.7.3 2>&1 \
    | grep -v -e "^WARNING: Location" -e "incompatible" -e "dependency conflicts" -e "^pipecat-ai" || true
}

# mypy cannot follow the package-dir mapping (adapters/ and examples/ ship as voiceagent.adapters and
# voiceagent.examples), so imports of voiceagent.adapters.* would be unchecked Any. It checks a tree of
# symlinks laid out as the installed package is; its errors name files under .mypy_tree/voiceagent/.
typecheck() {
  rm -rf .mypy_tree && mkdir -p .mypy_tree/voiceagent
  local f
  for f in voiceagent/*; do
    [ "$(basename "$f")" = __pycache__ ] || ln -s "../../$f" .mypy_tree/voiceagent/
  done
  ln -s ../../adapters .mypy_tree/voiceagent/adapters
  ln -s ../../examples .mypy_tree/voiceagent/examples
  (cd .mypy_tree && ../.venv/bin/mypy --config-file ../pyproject.toml -p voiceagent)
  .venv/bin/mypy _voiceagent_pytest.py
}

case "${1:-}" in
  demo)
    setup
    shift
    exec .venv/bin/voiceagent demo --out out/demo.wav "$@"  # (run anywhere, `voiceagent demo` writes ./demo.wav)
    ;;
  test)
    setup
    shift
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    typecheck
    status=0
    .venv/bin/python -m pytest "$@" || status=$?
    if [ "$status" = 5 ]; then
      echo "error: pytest collected no tests" >&2
      exit 1
    fi
    exit "$status"
    ;;
  *)
    echo "usage: ./dev.sh demo | ./dev.sh test [pytest args]" >&2
    exit 2
    ;;
esac
