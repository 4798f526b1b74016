#!/usr/bin/env bash
# Run a latentjax command on this machine: on N fake CPU devices (a sharded run without
# accelerators) and/or as P local processes joined by jax.distributed (a multi-host rehearsal).
#
#   launch/local.sh [--fake-devices N] [--processes P] [--port PORT] [--dry-run] -- <latentjax args>
#   launch/local.sh --processes 2 -- train --config ae/digits.py --workdir runs/mp
set -euo pipefail

usage="usage: $0 [--fake-devices N] [--processes P] [--port PORT] [--dry-run] -- <latentjax args>"

fake=""
procs=1
port=12355
dry=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --fake-devices) fake="$2"; shift 2 ;;
    --processes) procs="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) echo "$usage"; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "$usage" >&2
  exit 2
fi

here="$(cd "$(dirname "$0")/.." && pwd)"
bin="$here/.venv/bin/latentjax"
[[ -x "$bin" ]] || bin="latentjax"

envs=()
if [[ -n "$fake" ]]; then
  envs+=("JAX_PLATFORMS=cpu" "XLA_FLAGS=--xla_force_host_platform_device_count=$fake")
fi

commands=()
if [[ "$procs" -eq 1 ]]; then
  commands+=("$bin $*")
else
  for ((i = 0; i < procs; i++)); do
    commands+=("$bin $* --coordinator 127.0.0.1:$port --num-processes $procs --process-id $i")
  done
fi

if [[ $dry -eq 1 ]]; then
  for c in "${commands[@]}"; do echo "env ${envs[*]:-} $c"; done
  exit 0
fi

pids=()
for c in "${commands[@]}"; do
  # shellcheck disable=SC2086  # $c is a command line built above from trusted pieces
  env ${envs[@]+"${envs[@]}"} $c &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
