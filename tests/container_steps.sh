#!/usr/bin/env bash
# The Dockerfile's steps without Docker (there is no daemon here), so they
# cannot rot unseen. tests/run.sh calls this with the wheel it built through
# docker/build-wheel.sh, the build stage's script. This checks the Dockerfile's
# shape, runs the runtime stage's script into a temporary prefix, and runs the
# entry point there with the image's environment.
set -euo pipefail
cd "$(dirname "$0")/.."
wheel=$1
fail() { echo "container steps: $*" >&2; exit 1; }

# The Dockerfile: two stages whose RUN steps are the scripts exercised here.
[ "$(grep -c '^FROM ' Dockerfile)" = 2 ] || fail "Dockerfile must have a build and a runtime stage"
grep -q '^RUN sh docker/build-wheel.sh /wheels$' Dockerfile || fail "build stage does not run docker/build-wheel.sh"
grep -q '^RUN sh /tmp/install-runtime.sh /tmp/wheels /opt/sts' Dockerfile || fail "runtime stage does not run docker/install-runtime.sh"
runtime=$(sed -n '/^FROM python/,$p' Dockerfile)
copies=$(grep '^COPY' <<<"$runtime" || true)
[ "$copies" = "COPY docker/install-runtime.sh /tmp/install-runtime.sh
COPY --from=build /wheels /tmp/wheels" ] || fail "the runtime stage must copy only the wheel and its install script: $copies"
user=$(sed -n 's/^USER \(.*\)$/\1/p' <<<"$runtime")
[ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ] || fail "the runtime stage must run as a non-root user"
grep -q "useradd .* $user\$" <<<"$runtime" || fail "user $user is not created"
entry=$(sed -n 's/^ENTRYPOINT \["\([a-z-]*\)"\]$/\1/p' <<<"$runtime")
grep -q "^$entry = " pyproject.toml || fail "ENTRYPOINT '$entry' is not a console script of pyproject.toml"

# The runtime stage's step, into a fresh prefix, from the wheel alone.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/wheels"
cp "$wheel" "$work/wheels/"
TIMEFORMAT='installed from the wheel into a new virtualenv in %R s'
time sh docker/install-runtime.sh "$work/wheels" "$work/opt-sts"

# The entry point with the image's environment (PATH, LOG_FORMAT=json).
image_env=(env -i "PATH=$work/opt-sts/bin:/usr/bin:/bin" LOG_FORMAT=json PYTHONUNBUFFERED=1 "HOME=$work")
"${image_env[@]}" "$entry" --help >/dev/null || fail "$entry --help failed"
set +e
"${image_env[@]}" "$entry" --source-bucket a-b --destination-bucket a-b 2>"$work/stderr"
code=$?
set -e
[ "$code" = 2 ] || fail "bad input should exit 2, not $code"
"$work/opt-sts/bin/python" -c '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert lines, "no error line"
for line in lines:
    assert json.loads(line)["severity"] == "ERROR", line
' "$work/stderr" || fail "stderr is not JSON lines: $(cat "$work/stderr")"
echo "container steps: ok ($entry as user '$user', JSON logs, exit codes)"
