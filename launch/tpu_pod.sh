#!/usr/bin/env bash
# Run a latentjax command on a Cloud TPU VM slice: create the slice (directly, or through a
# queued resource), copy this checkout to every worker, install it, run the same command on all
# workers (jax.distributed finds the other hosts by itself: --distributed), keep one log per
# worker, and delete the slice at the end (also on failure or Ctrl-C, unless --keep).
#
#   launch/tpu_pod.sh --name NAME --zone ZONE --accelerator-type v5p-64 [--version RUNTIME]
#       [--project PROJECT] [--queued] [--spot] [--keep] [--logs DIR]
#       [--gcsfuse BUCKET:MOUNT] [--dry-run] -- <latentjax args>
#   launch/tpu_pod.sh --name dit --zone us-east5-a --accelerator-type v5p-64 --queued -- \
#       train --config dit/dit_xl2_imagenet256.py --workdir gs://BUCKET/runs/dit
#
# --gcsfuse BUCKET:MOUNT mounts the bucket (read-only) at the absolute path MOUNT on every worker
# with gcsfuse (installed from Google's apt repository), for readers that need local files
# (ArrayRecord datasets: --config.data.data_dir=MOUNT/tfds). Run directories need no mount:
# --workdir gs://BUCKET/... is written through Orbax/TensorStore and gcsfs.
#
# Flags as in `gcloud compute tpus tpu-vm create|scp|ssh|delete` and
# `gcloud compute tpus queued-resources create|describe|delete` (Cloud SDK reference pages).
set -euo pipefail

name=""
zone=""
accel=""
version="tpu-ubuntu2204-base"
project=""
queued=0
spot=0
keep=0
dry=0
logs="logs"
gcsfuse=""
usage="usage: $0 --name NAME --zone ZONE --accelerator-type TYPE [--version RUNTIME] [--project P] [--queued] [--spot] [--keep] [--logs DIR] [--gcsfuse BUCKET:MOUNT] [--dry-run] -- <latentjax args>"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --accelerator-type) accel="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --queued) queued=1; shift ;;
    --spot) spot=1; shift ;;
    --keep) keep=1; shift ;;
    --logs) logs="$2"; shift 2 ;;
    --gcsfuse) gcsfuse="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
if [[ -z "$name" || -z "$zone" || -z "$accel" || $# -eq 0 ]]; then
  echo "$usage" >&2
  exit 2
fi
bucket=""
mount=""
if [[ -n "$gcsfuse" ]]; then
  spec="${gcsfuse#gs://}"
  bucket="${spec%%:*}"
  mount="${spec#*:}"
  if [[ "$spec" != *:* || -z "$bucket" || "$bucket" == */* || "$mount" != /* ]]; then
    echo "tpu_pod.sh: --gcsfuse takes BUCKET:MOUNT (a bucket name, an absolute mount point), got '$gcsfuse'" >&2
    exit 2
  fi
fi

# Prints a command (shell-quoted, so it can be pasted) on --dry-run, runs it otherwise.
run() {
  if [[ $dry -eq 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

common=(--zone="$zone")
[[ -n "$project" ]] && common+=(--project="$project")
extra=()
[[ $spot -eq 1 ]] && extra+=(--spot)
qr="$name-qr"

teardown() {
  if [[ $queued -eq 1 ]]; then
    # --force also deletes the TPU VM the queued resource created.
    run gcloud compute tpus queued-resources delete "$qr" "${common[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$name" "${common[@]}" --quiet
  fi
}

# 1. Create the slice.
if [[ $queued -eq 1 ]]; then
  run gcloud compute tpus queued-resources create "$qr" --node-id="$name" \
    --accelerator-type="$accel" --runtime-version="$version" "${common[@]}" ${extra[@]+"${extra[@]}"}
  if [[ $dry -eq 1 ]]; then
    echo "# poll until ACTIVE:"
    run gcloud compute tpus queued-resources describe "$qr" "${common[@]}" --format='value(state.state)'
  else
    until [[ "$(gcloud compute tpus queued-resources describe "$qr" "${common[@]}" \
      --format='value(state.state)')" == "ACTIVE" ]]; do
      sleep 30
    done
  fi
else
  run gcloud compute tpus tpu-vm create "$name" --accelerator-type="$accel" \
    --version="$version" "${common[@]}" ${extra[@]+"${extra[@]}"}
fi
if [[ $keep -eq 0 && $dry -eq 0 ]]; then
  trap teardown EXIT
fi

# 2. Copy this checkout (tracked files at HEAD) to every worker and install it.
here="$(cd "$(dirname "$0")/.." && pwd)"
tarball="${TMPDIR:-/tmp}/latentjax-$name.tar.gz"
run git -C "$here" archive --format=tar.gz -o "$tarball" HEAD
run gcloud compute tpus tpu-vm scp "$tarball" "$name:latentjax.tar.gz" --worker=all "${common[@]}"
install='rm -rf latentjax && mkdir latentjax && tar -xzf latentjax.tar.gz -C latentjax && python3 -m pip install -q -e "./latentjax[gcs]" "jax[tpu]"'
run gcloud compute tpus tpu-vm ssh "$name" --worker=all "${common[@]}" --command="$install"

# 2b. Optionally, the data bucket mounted read-only on every worker (gcsfuse's apt install).
if [[ -n "$bucket" ]]; then
  printf -v qbucket '%q' "$bucket"
  printf -v qmount '%q' "$mount"
  # shellcheck disable=SC2016  # $(lsb_release ...) is expanded on the worker, not here
  repo='echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list'
  key='curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null'
  fuse="$key && $repo && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse"
  fuse+=" && sudo mkdir -p $qmount && sudo chown \$(id -u):\$(id -g) $qmount"
  fuse+=" && gcsfuse -o ro --implicit-dirs $qbucket $qmount"
  run gcloud compute tpus tpu-vm ssh "$name" --worker=all "${common[@]}" --command="$fuse"
fi

# 3. The same command on all workers; each keeps its own log (named by host), fetched back.
printf -v args '%q ' "$@"
cmd="mkdir -p latentjax-logs && cd latentjax && python3 -m latentjax ${args}--distributed 2>&1 | tee ../latentjax-logs/worker-\$(hostname).log; exit \${PIPESTATUS[0]}"
status=0
run gcloud compute tpus tpu-vm ssh "$name" --worker=all "${common[@]}" --command="$cmd" || status=$?
run mkdir -p "$logs"
run gcloud compute tpus tpu-vm scp "$name:latentjax-logs/*" "$logs/" --worker=all "${common[@]}" || true

# 4. Tear down (the EXIT trap), or say how.
if [[ $dry -eq 1 ]]; then
  if [[ $keep -eq 0 ]]; then teardown; fi
elif [[ $keep -eq 1 ]]; then
  echo "kept $name; delete it with: $(dry=1; teardown)"
fi
exit $status
