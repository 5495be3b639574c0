# bsky-indexer tasks. `just` itself comes from PyPI: `pip install rust-just`.
#
#   just test [PYTEST ARGS]   run the tests against Redis/Postgres (throwaway ones if none answer)
#   just lint                 ruff check + ruff format --check
#   just demo                 index sample events end to end and print a short report
#   just bench [ARGS]         benchmarks
#   just bench-decode [ARGS]  decode + validation alone, no services (scripts/decode_bench.py)
#   just stop-services        stop the throwaway servers `just` started under .local/
#
# Test services: TEST_REDIS_URL (default redis://127.0.0.1:6379/0) and TEST_PG_URL (default
# postgresql://postgres@127.0.0.1:5432/postgres, an admin URL: the tests create their own database).
# When one does not answer, scripts/services.sh starts a throwaway server under .local/ instead.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

lint_paths := "flows connectors sinks config observability resolution cli.py tests"

# list the recipes
default:
    @{{just_executable()}} --list --unsorted

# create .venv (Python 3.11/3.12) and install the project with its dev extras when pyproject.toml changed
[private]
venv:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp=.venv/.installed-stamp
    ok_version() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' >/dev/null 2>&1; }
    if [[ -x .venv/bin/python ]] && ok_version .venv/bin/python && [[ -f .venv/bin/activate ]]; then
        :
    else
        py=""
        candidates=(python3 python3.11 python3.12 /usr/bin/python3 /usr/bin/python3.11 /usr/bin/python3.12)
        if command -v pyenv >/dev/null 2>&1; then
            candidates+=($(ls -d "$(pyenv root)"/versions/3.1[12].*/bin/python3 2>/dev/null | sort -V -r))
        fi
        for c in "${candidates[@]}"; do
            if command -v "$c" >/dev/null 2>&1 && ok_version "$c"; then py="$c"; break; fi
        done
        [[ -n "$py" ]] || { echo "venv: need Python 3.11 or 3.12 (python3, python3.11 or python3.12)" >&2; exit 1; }
        echo "venv: creating .venv with $("$py" --version) ($(command -v "$py"))" >&2
        rm -rf .venv
        if ! "$py" -m venv .venv; then
            # Debian's Python needs python3-venv for ensurepip
            if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
                rm -rf .venv
                DEBIAN_FRONTEND=noninteractive apt-get update -qq
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
                "$py" -m venv .venv
            else
                exit 1
            fi
        fi
        rm -f "$stamp"
    fi
    if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
        echo "venv: pip install -e '.[dev]'" >&2
        PIP_DISABLE_PIP_VERSION_CHECK=1 .venv/bin/python -m pip install --quiet -e '.[dev]'
        touch "$stamp"
    fi

# make sure a Redis and a Postgres answer (see scripts/services.sh); writes .local/services.env
[private]
services:
    @scripts/services.sh up >/dev/null

# run the tests: just test [pytest args], e.g. just test -k decode -x
test *ARGS: venv services
    #!/usr/bin/env bash
    set -euo pipefail
    source .local/services.env
    exec .venv/bin/python -m pytest "$@"

# ruff check and ruff format --check
lint: venv
    .venv/bin/ruff check {{lint_paths}}
    .venv/bin/ruff format --check {{lint_paths}}

# the main job on sample events against throwaway-or-local Redis/Postgres, then a short report
demo *ARGS: venv services
    #!/usr/bin/env bash
    set -euo pipefail
    source .local/services.env
    export DEMO_REDIS_URL="$TEST_REDIS_URL" DEMO_PG_URL="$TEST_PG_URL"
    exec .venv/bin/python scripts/demo.py "$@"

# the benchmark (docs/benchmarks.md): just bench [--events N] [--profile] [--backlog N] [--help]
bench *ARGS: venv services
    #!/usr/bin/env bash
    set -euo pipefail
    source .local/services.env
    export DEMO_REDIS_URL="$TEST_REDIS_URL" DEMO_PG_URL="$TEST_PG_URL"
    exec .venv/bin/python scripts/bench.py "$@"

# decode + validate alone on the synthetic live mix: just bench-decode [--events N] [--profile]
bench-decode *ARGS: venv
    .venv/bin/python scripts/decode_bench.py "$@"

# stop the throwaway Redis/Postgres started under .local/ (never the machine's own)
stop-services:
    scripts/services.sh down
