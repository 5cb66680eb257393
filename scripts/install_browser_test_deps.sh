#!/usr/bin/env bash
# Install what the JupyterLab browser test (tests/browser/) needs on a fresh Debian machine:
#   - Debian's Chromium (/usr/bin/chromium): the test never downloads a browser;
#   - playwright-core from the npm registry into tests/browser/node_modules (ignored by git), which drives
#     that Chromium through `executablePath` (playwright-core ships no browser and downloads none).
# Node.js and npm come with the machine; JupyterLab comes from PyPI (the project's `notebook` extra).
# Idempotent: a second run installs nothing. Called by .ci/run before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PLAYWRIGHT_CORE_VERSION="${PLAYWRIGHT_CORE_VERSION:-1.64.1}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "install_browser_test_deps: need root (or sudo) to run: $*" >&2; return 1; fi
}

if [ ! -x /usr/bin/chromium ]; then
    echo "install_browser_test_deps: installing Debian's chromium"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
/usr/bin/chromium --version

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "install_browser_test_deps: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi

if [ ! -f tests/browser/node_modules/playwright-core/package.json ] || \
   [ "$(node -p "require('./tests/browser/node_modules/playwright-core/package.json').version")" != "$PLAYWRIGHT_CORE_VERSION" ]; then
    echo "install_browser_test_deps: installing playwright-core@$PLAYWRIGHT_CORE_VERSION into tests/browser/node_modules"
    # --prefix keeps it local to the test; no package.json/lock is written to the repository root.
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: belt and braces, playwright-core downloads nothing anyway.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-save --no-audit --no-fund --no-package-lock \
        --prefix tests/browser "playwright-core@$PLAYWRIGHT_CORE_VERSION" >/dev/null
fi
node -e "const p=require('./tests/browser/node_modules/playwright-core/package.json'); console.log('playwright-core', p.version)"
