#!/usr/bin/env bash
# Builds the o365-collector image FROM scratch (deploy/Dockerfile) with podman; nothing is pulled.
#
#   deploy/build-image.sh [--profile dist|release] [--tag NAME] [--binary PATH]
#
# --profile  cargo profile of the binary (default dist: what ships; release builds faster, the
#            tests use it). The build is `cargo build --locked`, a no-op when target/ is fresh.
# --tag      image name (default localhost/o365-collector:dev)
# --binary   use this binary instead of building one
#
# Staged: the binary, the shared libraries `ldd` lists (copied from this host: build on the
# distribution whose glibc you want in the image), the CA roots, /etc/passwd and /etc/group
# naming the user 10001, and the state directory it owns. Prints the image's size.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=dist
tag=localhost/o365-collector:dev
binary=
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    *) echo "build-image.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
done

if [ -z "$binary" ]; then
  start=$SECONDS
  cargo build --profile "$profile" --locked --bin o365-collector
  echo "build-image.sh: cargo build --profile $profile took $((SECONDS - start)) s" >&2
  binary="target/$profile/o365-collector"
fi
[ -x "$binary" ] || { echo "build-image.sh: $binary is not an executable" >&2; exit 1; }
cacerts=/etc/ssl/certs/ca-certificates.crt
[ -f "$cacerts" ] || { echo "build-image.sh: $cacerts is missing: apt-get install ca-certificates" >&2; exit 1; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
install -D -m 0755 "$binary" "$root/usr/local/bin/o365-collector"
# The dist profile's line tables make the binary four times larger (102 MB against 25 MB); the
# image ships it without them (symbols stay: a backtrace names its functions). Symbolise a
# backtrace's addresses with the unstripped binary of the same build (target/dist).
command -v strip >/dev/null 2>&1 || { echo "build-image.sh: strip is missing: apt-get install binutils" >&2; exit 1; }
strip --strip-debug "$root/usr/local/bin/o365-collector"
# Every library the loader resolves, and the loader itself, at the path the binary asks for
# (none for a static binary).
if ldd "$binary" >"$ctx/ldd" 2>&1; then
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' "$ctx/ldd" | sort -u |
    while read -r lib; do
      install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
elif ! grep -q 'not a dynamic executable\|statically linked' "$ctx/ldd"; then
  cat "$ctx/ldd" >&2
  exit 1
fi
install -D -m 0644 "$cacerts" "$root/etc/ssl/certs/ca-certificates.crt"
printf 'collector:x:10001:10001:o365-collector:/var/lib/o365-collector:/sbin/nologin\n' >"$ctx/passwd"
printf 'collector:x:10001:\n' >"$ctx/group"
install -D -m 0644 "$ctx/passwd" "$root/etc/passwd"
install -D -m 0644 "$ctx/group" "$root/etc/group"
# /var/lib belongs to root; only the state directory under it (the Dockerfile's second COPY) to
# the collector.
install -d -m 0755 "$root/var/lib"
install -d -m 0750 "$ctx/state"
cp deploy/Dockerfile "$ctx/Dockerfile"

podman=(deploy/podman.sh)
"${podman[@]}" build --quiet --file "$ctx/Dockerfile" --tag "$tag" "$ctx" >/dev/null
size="$("${podman[@]}" image inspect --format '{{.Size}}' "$tag")"
echo "build-image.sh: built $tag: $size bytes ($(( (size + 524288) / 1048576 )) MiB)"
