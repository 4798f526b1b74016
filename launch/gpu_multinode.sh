#!/usr/bin/env bash
# Run a latentjax command on GPU nodes under SLURM: one process per GPU (srun), joined by
# jax.distributed with process 0 on the first node of the allocation as coordinator. Run it
# inside an allocation (sbatch / salloc), e.g. in an sbatch script with
#   #SBATCH --nodes=4 --gpus-per-node=8 --ntasks-per-node=8
#
#   launch/gpu_multinode.sh [--gpus-per-node N] [--port PORT] [--logs DIR] [--dry-run]
#       -- <latentjax args>
#   launch/gpu_multinode.sh --gpus-per-node 8 -- train --config dit/dit_xl2_imagenet256.py \
#       --workdir /shared/runs/dit
#
# Each process writes DIR/<job>-<rank>.log (srun's %j and %t).
set -euo pipefail

gpn="${SLURM_GPUS_ON_NODE:-8}"
port=12355
dry=0
logs="logs"
usage="usage: $0 [--gpus-per-node N] [--port PORT] [--logs DIR] [--dry-run] -- <latentjax args>"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpus-per-node) gpn="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --logs) logs="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "$usage" >&2
  exit 2
fi
if [[ -z "${SLURM_JOB_NODELIST:-}" ]]; then
  echo "$0: not inside a SLURM allocation (SLURM_JOB_NODELIST is unset); use sbatch or salloc" >&2
  exit 2
fi

if ! command -v scontrol > /dev/null; then
  echo "$0: scontrol not found (SLURM's client tools are needed)" >&2
  exit 2
fi
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
if [[ ${#nodes[@]} -eq 0 ]]; then
  echo "$0: scontrol listed no hosts for SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST" >&2
  exit 2
fi
coordinator="${nodes[0]}:$port"
total=$((${#nodes[@]} * gpn))

# SLURM_PROCID is read by each task, so it stays quoted here and expands inside the task.
printf -v args '%q ' "$@"
task="exec python3 -m latentjax ${args}--coordinator $coordinator --num-processes $total --process-id \$SLURM_PROCID"
cmd=(srun --nodes="${#nodes[@]}" --ntasks="$total" --ntasks-per-node="$gpn" --gpus-per-task=1
  --output="$logs/%j-%t.log" bash -c "$task")

if [[ $dry -eq 1 ]]; then
  printf '%q ' mkdir -p "$logs" | sed 's/ $//'
  echo
  printf '%q ' "${cmd[@]}" | sed 's/ $//'
  echo
  exit 0
fi
mkdir -p "$logs"
"${cmd[@]}"
