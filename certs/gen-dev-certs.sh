#!/usr/bin/env bash
# Makes a development CA and a server certificate signed by it, for demos and local runs only.
#
#   certs/gen-dev-certs.sh [HOST ...]        (default hosts: localhost 127.0.0.1 ::1)
#
# Writes into the directory of this script (override with CERTS_DIR=...):
#   ca.pem / ca.key           the dev CA (trust ca.pem in curl --cacert, outbound.ca_file, browsers)
#   server.pem / server.key   server certificate (chain: server, CA) for tls.cert / tls.key or nginx
# Existing files are kept unless FORCE=1; the CA is reused so that already-trusted clients still
# trust a re-issued server certificate. Needs openssl ≥ 1.1.1.
set -euo pipefail

dir="${CERTS_DIR:-$(cd "$(dirname "$0")" && pwd)}"
days="${DAYS:-90}"
hosts=("$@")
[ ${#hosts[@]} -eq 0 ] && hosts=(localhost 127.0.0.1 ::1)

command -v openssl >/dev/null 2>&1 || { echo "gen-dev-certs: openssl is missing" >&2; exit 1; }
mkdir -p "$dir"
umask 077

if [ "${FORCE:-0}" != 1 ] && [ -e "$dir/server.pem" ]; then
  echo "gen-dev-certs: $dir/server.pem exists (FORCE=1 to replace)" >&2
  exit 0
fi

san=""
for h in "${hosts[@]}"; do
  if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
done
san="${san%,}"

if [ ! -e "$dir/ca.pem" ] || [ ! -e "$dir/ca.key" ]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 3650 -sha256 \
    -subj "/CN=o365-collector dev CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -keyout "$tmp/server.key" -out "$tmp/server.csr" -subj "/CN=${hosts[0]}" 2>/dev/null
cat > "$tmp/ext.cnf" <<CNF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san
CNF
openssl x509 -req -in "$tmp/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -CAserial "$tmp/ca.srl" -out "$tmp/server.crt" -days "$days" -sha256 -extfile "$tmp/ext.cnf" 2>/dev/null
# PKCS#8 key (what rustls and nginx both read); chain = server then CA.
openssl pkey -in "$tmp/server.key" -out "$tmp/server.p8"
cat "$tmp/server.crt" "$dir/ca.pem" > "$tmp/server.pem"
# Replace by rename so that a running collector (tls.reload_every) never sees half-written files.
mv -f "$tmp/server.p8" "$dir/server.key"
mv -f "$tmp/server.pem" "$dir/server.pem"
chmod 0644 "$dir/server.pem" "$dir/ca.pem"

echo "gen-dev-certs: CA $dir/ca.pem; server $dir/server.pem + server.key for: ${hosts[*]} ($days days)"
