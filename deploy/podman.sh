#!/usr/bin/env bash
# podman with the settings that let it run where it is itself inside a container or a VM without
# systemd (CI runners, sandboxes); elsewhere they change nothing that matters. Used by
# deploy/build-image.sh and tests/image.rs; call it as you would call podman.
#
# - `--cgroup-manager=cgroupfs`, `--events-backend=file`: no systemd, no journald.
# - `--runtime=runc` on a host with hybrid cgroups (v1 controllers plus an empty v2 tree at
#   /sys/fs/cgroup/unified): crun refuses those ("cgroups in hybrid mode not supported").
# - for `run`: `--ulimit nofile` and `nproc` no higher than this shell's own hard limits. podman's
#   defaults are higher, and without CAP_SYS_RESOURCE the runtime cannot raise a limit
#   ("setrlimit `RLIMIT_NOFILE`: Operation not permitted").
# - `O365_PODMAN_STORAGE_DRIVER=vfs` where overlay mounts are not allowed.
set -euo pipefail

global=(--cgroup-manager=cgroupfs --events-backend=file)
if [ -n "${O365_PODMAN_STORAGE_DRIVER:-}" ]; then
  global+=("--storage-driver=$O365_PODMAN_STORAGE_DRIVER")
fi
if grep -qs ' /sys/fs/cgroup/unified cgroup2 ' /proc/mounts && command -v runc >/dev/null 2>&1; then
  global+=(--runtime=runc)
fi

if [ "${1:-}" = run ]; then
  shift
  nofile="$(ulimit -Hn)"
  [ "$nofile" = unlimited ] && nofile=1048576
  # The collector's threads are far fewer; the limit counts every process of the uid on the host.
  exec podman "${global[@]}" run --ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096 "$@"
fi
exec podman "${global[@]}" "$@"
