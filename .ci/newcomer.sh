#!/usr/bin/env bash
# The newcomer path, proven on a clean clone: a fresh virtualenv, the README's
# first install line exactly as the README writes it (extracted, never copied
# here), then every documented command -- the bounded demo must reach its
# summary with a served prediction, `serve` must answer, and each command's
# --help must import with nothing but the documented install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d /tmp/streamlearn-newcomer.XXXXXX)
serve_pid=
cleanup() {
  if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
say() { echo "== newcomer: $*" >&2; }
fail() { echo "newcomer path FAILED: $*" >&2; exit 1; }

install=$("$PYTHON" .ci/readme_install_line.py README.md)
say "fresh virtualenv; the README's install line: $install"
"$PYTHON" -m venv "$work/venv"
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
start=$SECONDS
bash -euo pipefail -c "$install"
say "installed in $((SECONDS - start))s"

for cmd in demo run produce serve replay retrain inspect; do
  streamlearn "$cmd" --help >/dev/null || fail "streamlearn $cmd --help does not run with the README's install"
done

say "streamlearn demo --events 20000 (in $work, so the checkout stays clean)"
start=$SECONDS
set +e
(cd "$work" && timeout 900 streamlearn demo --events 20000) >"$work/demo.log" 2>&1
rc=$?
set -e
cat "$work/demo.log" >&2
[ "$rc" -eq 0 ] || fail "streamlearn demo exited $rc"
grep -Eq "POST /predict .* -> \{('id': '[^']+', )?'version': [0-9]+, 'prediction'" "$work/demo.log" \
  || fail "the demo's summary shows no served prediction"
say "demo reached its summary with a served prediction in $((SECONDS - start))s"

registry=$(sed -nE 's/^  registry +([^ ]+) .*/\1/p' "$work/demo.log" | tail -1)
[ -n "$registry" ] || fail "the demo's summary names no registry"
case "$registry" in /*) ;; *) registry="$work/$registry" ;; esac
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
say "streamlearn serve --registry $registry --port $port"
streamlearn serve --registry "$registry" --port "$port" >"$work/serve.log" 2>&1 &
serve_pid=$!
"$PYTHON" - "$port" "$work/demo.log" <<'PY' || { cat "$work/serve.log" >&2; fail "streamlearn serve did not serve a prediction"; }
import json, re, sys, time, urllib.request

port, log = sys.argv[1], open(sys.argv[2]).read()
x = json.loads(re.search(r'POST /predict (\{"x": \[[^\]]*\]\})', log).group(1))
base = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 120
while True:
    try:
        with urllib.request.urlopen(f"{base}/health/ready", timeout=2) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("serve never became ready")
    time.sleep(0.5)
req = urllib.request.Request(f"{base}/predict", json.dumps(x).encode(), {"content-type": "application/json"})
with urllib.request.urlopen(req, timeout=5) as r:
    answer = json.load(r)
assert "prediction" in answer and "version" in answer, answer
print(f"== newcomer: serve answered POST /predict -> {answer}", file=sys.stderr)
PY
say "ok"
