#!/usr/bin/env bash
# Makes the mesh test PKI in DIR (default: test/certs/out/mesh next to this script):
#   ca.pem / ca-key.pem                  "Skiff Mesh CA", trust domain example.org
#   frontend.pem / frontend-key.pem      spiffe://example.org/ns/default/sa/frontend
#   backend.pem / backend-key.pem        spiffe://example.org/ns/default/sa/backend
#   backend-rotated.pem / -key.pem       the same ID, a new key and serial (rotation tests)
#   intruder.pem / intruder-key.pem      spiffe://example.org/ns/default/sa/intruder (same CA,
#                                        on no allow list)
#   rogue-ca.pem / rogue-ca-key.pem      a second, unrelated CA
#   rogue.pem / rogue-key.pem            signed by the rogue CA, claiming the frontend's ID
# Every leaf: the SPIFFE ID as its only URI SAN plus IP:127.0.0.1, serverAuth + clientAuth.
# EC P-256 keys (PKCS#8). Idempotent: an existing, valid set is left alone. Quiet unless
# something fails. Concurrent runs are serialised with flock; a new set is built in a scratch
# dir and moved in file by file with ca.pem last.
set -euo pipefail

dir="${1:-$(cd "$(dirname "$0")" && pwd)/out/mesh}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

if command -v flock >/dev/null 2>&1; then
  exec 9>"$dir/.lock"
  flock 9
fi

leaves=(frontend backend backend-rotated intruder)
files=(ca-key.pem rogue-ca.pem rogue-ca-key.pem rogue.pem rogue-key.pem)
for n in "${leaves[@]}"; do files+=("$n.pem" "$n-key.pem"); done
files+=(ca.pem)

is_complete() {
  local f
  for f in "${files[@]}"; do [[ -s "$dir/$f" ]] || return 1; done
  openssl x509 -checkend 86400 -noout -in "$dir/ca.pem" >/dev/null 2>&1 || return 1
  openssl x509 -checkend 86400 -noout -in "$dir/rogue-ca.pem" >/dev/null 2>&1 || return 1
  local n
  for n in "${leaves[@]}"; do
    openssl verify -CAfile "$dir/ca.pem" "$dir/$n.pem" >/dev/null 2>&1 || return 1
  done
  openssl verify -CAfile "$dir/rogue-ca.pem" "$dir/rogue.pem" >/dev/null 2>&1 || return 1
}

if is_complete; then exit 0; fi

tmp="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log="$tmp/openssl.log"

run() {
  if ! "$@" >>"$log" 2>&1; then
    echo "make-mesh-certs.sh: failed: $*" >&2
    cat "$log" >&2
    exit 1
  fi
}

serial() { echo "0x$(openssl rand -hex 16)"; }

days=3650
td=example.org

# ca NAME CN
ca() {
  local name="$1" cn="$2"
  run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/$name-key.pem"
  cat >"$tmp/$name.ext" <<EXT
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = $cn
O = $td
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EXT
  run openssl req -new -x509 -config "$tmp/$name.ext" -key "$tmp/$name-key.pem" -days "$days" \
    -set_serial "$(serial)" -out "$tmp/$name.pem"
}

# leaf NAME SA CA
leaf() {
  local name="$1" sa="$2" issuer="$3"
  run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/$name-key.pem"
  run openssl req -new -key "$tmp/$name-key.pem" -subj "/CN=$sa/O=$td" -out "$tmp/$name.csr"
  cat >"$tmp/$name.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = URI:spiffe://$td/ns/default/sa/$sa, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT
  run openssl x509 -req -in "$tmp/$name.csr" -CA "$tmp/$issuer.pem" -CAkey "$tmp/$issuer-key.pem" \
    -set_serial "$(serial)" -days "$days" -sha256 -extfile "$tmp/$name.ext" -out "$tmp/$name.pem"
}

ca ca "Skiff Mesh CA"
ca rogue-ca "Rogue CA"
leaf frontend frontend ca
leaf backend backend ca
leaf backend-rotated backend ca
leaf intruder intruder ca
leaf rogue frontend rogue-ca

for f in "${files[@]}"; do mv -f "$tmp/$f" "$dir/$f"; done
