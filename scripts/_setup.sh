# shellcheck shell=bash
# Shared set-up for scripts/run and scripts/test: sourced, never run on its own.
#
# It brings a fresh Debian 12 machine (root or sudo, python3.11 with pip and venv) to a working tree:
# the Debian packages the tests drive, and a virtualenv in .venv with tobira installed in editable
# mode. Every step first checks whether it is already done, so a second run costs almost nothing.

# Debian packages the test suite needs on the machine (not inside the virtualenv). Add one word per
# package here.
APT_PACKAGES=(redis-server redis-sentinel chromium fonts-noto-cjk fonts-noto-color-emoji nodejs npm iproute2 apache2 libapache2-mod-auth-openidc nginx caddy)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# Written after a successful install (with `-EXTRA` appended for an extra); newer than pyproject.toml
# means the install is current.
INSTALL_STAMP="$VENV/.tobira-installed"

section() {
    printf '\n==> %s\n' "$*"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, through sudo when it exists.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

apt_package_present() {
    local status
    status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
    [[ $status == "install ok installed" ]] || command -v "$1" >/dev/null 2>&1
}

# Installs whichever of APT_PACKAGES is missing; `apt-get update` runs only if something is.
ensure_apt_packages() {
    local missing=() package
    for package in "${APT_PACKAGES[@]}"; do
        apt_package_present "$package" || missing+=("$package")
    done
    ((${#missing[@]} == 0)) && return 0
    section "installing Debian packages: ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${missing[*]} and there is no apt-get here: install them with your package manager"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Prints the first interpreter that is Python 3.11 or newer.
find_python() {
    local candidate
    for candidate in python3.11 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# Creates .venv if it is absent (or its interpreter no longer runs) and installs tobira into it, with the
# extra named by $1 if any (scripts/test: `test`, the test tools; scripts/run: none, only what tobira
# needs), unless a stamp says that was already done for this pyproject.toml.
ensure_venv() {
    local extra=${1:-}
    local stamp="$INSTALL_STAMP${extra:+-$extra}"
    if ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
        local python
        python="$(find_python)" || die "Python 3.11 or newer is needed (apt-get install python3.11 python3.11-venv)"
        section "creating .venv with $python"
        "$python" -m venv --clear "$VENV" ||
            die "could not create .venv (on Debian: apt-get install python3.11-venv)"
    fi
    if [[ ! -f $stamp || ! $stamp -nt $ROOT/pyproject.toml ]]; then
        section "installing tobira${extra:+ and its $extra tools} into .venv"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "${ROOT}${extra:+[$extra]}"
        touch "$stamp" "$INSTALL_STAMP" # an install with an extra includes the plain one
    fi
}

# Installs the tests' JavaScript (tests/package-lock.json: misskey-js and esbuild) into tests/node_modules
# unless it is already there for this lock file. No install scripts run: nothing needs them.
ensure_node_modules() {
    local lock="$ROOT/tests/package-lock.json" installed="$ROOT/tests/node_modules/.package-lock.json"
    [[ -f $installed && $installed -nt $lock ]] && return 0
    section "installing the tests' JavaScript packages (npm ci)"
    npm ci --prefix "$ROOT/tests" --ignore-scripts --no-audit --no-fund --loglevel=error
}
