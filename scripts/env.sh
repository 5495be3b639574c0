# Source this from bash or zsh in the project folder to work by hand with what `just test` uses:
#
#   source scripts/env.sh
#
# It makes sure the test Redis and Postgres answer (starting throwaway ones under .local/ when they
# do not, see scripts/services.sh), exports TEST_REDIS_URL / TEST_PG_URL and the DEMO_* URLs derived
# from them, and puts .venv/bin first on PATH when .venv exists (`just venv` creates it).
_bskyidx_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
if "$_bskyidx_root/scripts/services.sh" up >/dev/null; then
    . "$_bskyidx_root/.local/services.env"
    export DEMO_REDIS_URL="$TEST_REDIS_URL" DEMO_PG_URL="$TEST_PG_URL"
    if [ -d "$_bskyidx_root/.venv/bin" ]; then
        case ":$PATH:" in
        *":$_bskyidx_root/.venv/bin:"*) ;;
        *) export PATH="$_bskyidx_root/.venv/bin:$PATH" ;;
        esac
    fi
    echo "TEST_REDIS_URL=$TEST_REDIS_URL TEST_PG_URL=$TEST_PG_URL"
fi
unset _bskyidx_root
