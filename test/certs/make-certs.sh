#!/usr/bin/env bash
# Makes the test PKI in DIR (default: test/certs/out next to this script):
#   ca.pem / ca-key.pem          self-signed test CA
#   server.pem / server-key.pem  localhost, 127.0.0.1, ::1 (serverAuth)
#   client.pem / client-key.pem  URI SAN spiffe://skiff.test/ns/default/sa/client (clientAuth)
# EC P-256 keys (PKCS#8). Idempotent: an existing, valid set is left alone. Quiet unless
# something fails. Concurrent runs (parallel test files) are serialised with flock, and a
# new set is built in a scratch dir and moved in file by file with ca.pem last.
set -euo pipefail

dir="${1:-$(cd "$(dirname "$0")" && pwd)/out}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

if command -v flock >/dev/null 2>&1; then
  exec 9>"$dir/.lock"
  flock 9
fi

files=(ca-key.pem server.pem server-key.pem client.pem client-key.pem ca.pem)

is_complete() {
  local f
  for f in "${files[@]}"; do [[ -s "$dir/$f" ]] || return 1; done
  # Still valid for a day, and the leaves chain to this CA.
  openssl x509 -checkend 86400 -noout -in "$dir/ca.pem" >/dev/null 2>&1 || return 1
  openssl verify -CAfile "$dir/ca.pem" "$dir/server.pem" "$dir/client.pem" >/dev/null 2>&1 || return 1
}

if is_complete; then exit 0; fi

tmp="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log="$tmp/openssl.log"

run() {
  if ! "$@" >>"$log" 2>&1; then
    echo "make-certs.sh: failed: $*" >&2
    cat "$log" >&2
    exit 1
  fi
}

serial() { echo "0x$(openssl rand -hex 16)"; }

days=3650

# CA
run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/ca-key.pem"
cat >"$tmp/ca.ext" <<'EXT'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = Skiff Test CA
O = skiff.test
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EXT
run openssl req -new -x509 -config "$tmp/ca.ext" -key "$tmp/ca-key.pem" -days "$days" \
  -set_serial "$(serial)" -out "$tmp/ca.pem"

# leaf NAME CN EXTENSIONS
leaf() {
  local name="$1" cn="$2" ext="$3"
  run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/$name-key.pem"
  run openssl req -new -key "$tmp/$name-key.pem" -subj "/CN=$cn/O=skiff.test" -out "$tmp/$name.csr"
  printf '%s\n' "$ext" >"$tmp/$name.ext"
  run openssl x509 -req -in "$tmp/$name.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca-key.pem" \
    -set_serial "$(serial)" -days "$days" -sha256 -extfile "$tmp/$name.ext" -out "$tmp/$name.pem"
}

leaf server localhost "basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid"

leaf client client "basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:spiffe://skiff.test/ns/default/sa/client
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid"

for f in "${files[@]}"; do mv -f "$tmp/$f" "$dir/$f"; done
