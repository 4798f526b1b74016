#!/usr/bin/env bash
# Run a latentjax command on this machine, optionally on N fake CPU devices (to rehearse a
# sharded run without accelerators).
#
#   launch/local.sh [--fake-devices N] [--dry-run] -- train --config configs/ae/digits.py --workdir runs/x
set -euo pipefail

fake=""
dry=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --fake-devices) fake="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[[ $# -gt 0 ]] || { echo "usage: $0 [--fake-devices N] [--dry-run] -- <latentjax args>" >&2; exit 2; }

here="$(cd "$(dirname "$0")/.." && pwd)"
bin="$here/.venv/bin/latentjax"
[[ -x "$bin" ]] || bin="latentjax"

cmd=("$bin" "$@")
envs=()
if [[ -n "$fake" ]]; then
  envs=("XLA_FLAGS=--xla_force_host_platform_device_count=$fake" "JAX_PLATFORMS=cpu")
fi
if [[ $dry -eq 1 ]]; then
  echo "env ${envs[*]} ${cmd[*]}"
  exit 0
fi
exec env "${envs[@]}" "${cmd[@]}"
