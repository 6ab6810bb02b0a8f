#!/usr/bin/env bash
# Fetch the Debian `fortunes` and `fortunes-min` packages and copy their plain-text fortune files
# into DIR (default data/raw/fortunes): one file per category (computers, science, ...), entries
# separated by lines holding a single `%`. This is the small real-text corpus tests and examples
# train on (see shared/DATA.md).
#
#   scripts/fetch_fortunes.sh [DIR]
#
# Idempotent: a finished fetch leaves DIR/.complete, and later runs only print the summary
# (FORCE=1 fetches again). Needs apt-get and dpkg but not root: `apt-get download` and `dpkg -x`
# unpack into a temp folder without installing anything. Copied: regular files only, never the
# strfile `.dat` indexes or the `.u8` symlinks (which point at the same text), and no symlink is
# followed, so nothing outside the package's fortunes folder can be copied.
set -euo pipefail

DIR="${1:-data/raw/fortunes}"
PACKAGES=(fortunes fortunes-min)
STAMP="$DIR/.complete"

summary() {
    local files bytes
    files=$(find "$DIR" -maxdepth 1 -type f ! -name '.*' | wc -l)
    bytes=$(find "$DIR" -maxdepth 1 -type f ! -name '.*' -exec cat {} + | wc -c)
    echo "fortunes: $files files, $bytes bytes in $DIR"
}

if [[ -f "$STAMP" && "${FORCE:-0}" != 1 ]]; then
    summary
    exit 0
fi

for tool in apt-get dpkg; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: $tool not found; this script needs a Debian/Ubuntu system" >&2
        exit 1
    fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

debs="$tmp/debs"
mkdir -p "$debs"
# As root, apt drops to the `_apt` user to download; give it the folder so it need not fall back
# to downloading unsandboxed (and warn about it).
if [[ $(id -u) == 0 ]] && id _apt >/dev/null 2>&1; then
    chmod 755 "$tmp"
    chown _apt "$debs"
fi

download() {
    (cd "$debs" && apt-get download "${PACKAGES[@]}")
}

if ! download; then
    if [[ $(id -u) == 0 ]]; then
        echo "apt-get download failed; refreshing package lists with apt-get update and retrying" >&2
        apt-get update
        download
    else
        echo "error: 'apt-get download ${PACKAGES[*]}' failed. The package lists may be stale or" >&2
        echo "missing: run 'sudo apt-get update' (or run this script as root) and try again." >&2
        exit 1
    fi
fi

for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$tmp/root"
done

src="$tmp/root/usr/share/games/fortunes"
if [[ ! -d "$src" ]]; then
    echo "error: the packages did not contain usr/share/games/fortunes" >&2
    exit 1
fi

mkdir -p "$DIR"
# `find -type f` without -L matches regular files only and never descends through symlinks.
copied=0
while IFS= read -r -d '' file; do
    cp -- "$file" "$DIR/$(basename -- "$file")"
    copied=$((copied + 1))
done < <(find "$src" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' ! -name '.*' -print0)

if [[ $copied == 0 ]]; then
    echo "error: no fortune files found in the packages" >&2
    exit 1
fi
touch "$STAMP"
summary
