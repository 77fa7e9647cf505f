# Sourced by scripts/serve and scripts/test: make .venv and install the project into it only
# when needed, so that a start takes seconds and needs no package index once installed.
#
# The stamp .venv/.triggers-installed holds the sha256 of pyproject.toml and the extras that
# were installed with it. It matches: nothing to do. It does not (first run, pyproject.toml
# changed, other extras asked for): `pip install -e` once, then the stamp is written. Python:
# $PYTHON, else python3 (3.11, 3.12 or 3.13; on 3.13 the Redis server comes from PATH, see
# the README's quick start).

ensure_venv() {
    local extras="$1" spec="." stamp=".venv/.triggers-installed" want have
    if [ -n "$extras" ]; then spec=".[$extras]"; fi
    if [ ! -x .venv/bin/python ]; then
        "${PYTHON:-python3}" -m venv .venv
    fi
    # The dev install also brings the Python client (clients/python, its own package), whose
    # tests and pytest plugin the suite runs: its pyproject.toml counts in the stamp too.
    local extra_args=() hashed="pyproject.toml"
    if [[ ",$extras," == *",dev,"* ]] && [ -f clients/python/pyproject.toml ]; then
        extra_args=(-e clients/python)
        hashed="pyproject.toml clients/python/pyproject.toml"
    fi
    want="$(.venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(b"".join(open(f, "rb").read() for f in sys.argv[1:])).hexdigest())' $hashed)"
    have="$(cat "$stamp" 2>/dev/null || true)"
    # Installed with the same pyproject.toml, and with these extras (or any, when none needed).
    if [ "$have" = "$want $extras" ] || { [ -z "$extras" ] && [ "${have%% *}" = "$want" ]; }; then
        return 0
    fi
    echo "installing the project into .venv (first run, or pyproject.toml changed)" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" "${extra_args[@]}"
    echo "$want $extras" > "$stamp"
}
