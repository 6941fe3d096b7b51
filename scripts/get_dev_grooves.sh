#!/usr/bin/env bash
# Install the multi-track, genre-labelled dev MIDI corpus used by benchmarks and evaluation
# (not by unit tests): Debian's mma (Musical MIDI Accompaniment, GPL-2+, about 47 MB with
# its documentation and ~300 groove libraries) renders its grooves over chord progressions into
# data/dev-grooves/<genre>/*.mid with data/dev-grooves/labels.csv, by
# scripts/make_dev_grooves.py (arguments are passed on to it, e.g. --takes 2).
# Needs apt (Debian/Ubuntu) and root or sudo, and the project's .venv (scripts/setup.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="$here/.venv/bin/python"
[ -x "$py" ] || { echo "error: $py not found; run: bash scripts/setup.sh" >&2; exit 2; }
if ! command -v mma >/dev/null || [ ! -d /usr/share/mma/lib/stdlib ]; then
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "error: run this as root or install sudo" >&2; exit 2; }
        sudo_cmd="sudo"
    fi
    echo "Installing Debian package mma ..."
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends mma >/dev/null
fi
# mma finds grooves through the database files (.mmaDB) the package builds on install;
# rebuild them if they are missing (a copied or hand-installed library)
if [ ! -f /usr/share/mma/lib/stdlib/.mmaDB ]; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd mma -G >/dev/null
fi
exec "$py" "$here/scripts/make_dev_grooves.py" "$@"
