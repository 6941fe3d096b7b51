#!/usr/bin/env bash
# Install the development music used by benchmarks and evaluation (not by unit tests):
# Debian's wesnoth-1.16-music (41 OGG Vorbis tracks, 44.1 kHz stereo, GPL-2+), linked
# into data/dev-music/. Needs apt (Debian/Ubuntu) and root or sudo.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dest="$here/data/dev-music"
src=/usr/share/games/wesnoth/1.16/data/core/music
if [ ! -d "$src" ]; then
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "error: run this as root or install sudo" >&2; exit 2; }
        sudo_cmd="sudo"
    fi
    echo "Installing Debian package wesnoth-1.16-music (about 190 MB)..."
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq wesnoth-1.16-music >/dev/null
fi
mkdir -p "$dest"
count=0
for f in "$src"/*.ogg; do
    ln -sf "$f" "$dest/$(basename "$f")"
    count=$((count + 1))
done
echo "dev music ready: $count tracks in $dest"
