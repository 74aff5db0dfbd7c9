#!/usr/bin/env bash
# Make a CA and a serving certificate for the operator's admission webhooks, for
# local use (the operator runs on this machine, the API server calls it at
# https://127.0.0.1:<port>/). kopf could generate its own, but its optional
# certificate dependencies do not work with OpenSSL 3, so openssl does it here.
#
#   hack/webhook-certs.sh DIR [SAN ...]
#
# Writes DIR/ca.crt, DIR/ca.key, DIR/tls.crt, DIR/tls.key (the names cert-manager
# and kubernetes.io/tls Secrets use). SANs are always IP:127.0.0.1 and
# DNS:localhost; extra ones are given as openssl spells them (DNS:name, IP:addr).
# Idempotent: existing files are kept while the certificate is valid for another
# 30 days and covers the requested SANs; otherwise the serving certificate (and
# a missing CA) is made anew. Then run the operator with
#
#   --webhook-cert-file DIR/tls.crt --webhook-key-file DIR/tls.key \
#   --webhook-ca-file DIR/ca.crt --manage-webhook-config
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit $(( $# < 1 ? 2 : 0 ))
fi
command -v openssl >/dev/null || { echo "openssl not found (make system-deps)" >&2; exit 1; }

dir=$1
shift
sans="IP:127.0.0.1,DNS:localhost"
for san in "$@"; do
    [[ $san == DNS:* || $san == IP:* ]] || {
        echo "SAN '$san' must look like DNS:name or IP:address" >&2
        exit 2
    }
    sans+=",$san"
done
mkdir -p "$dir"
umask 077
ca_crt=$dir/ca.crt ca_key=$dir/ca.key crt=$dir/tls.crt key=$dir/tls.key
month=$((30 * 24 * 3600))

if [[ ! -s $ca_crt || ! -s $ca_key ]] || ! openssl x509 -in "$ca_crt" -noout -checkend "$month" >/dev/null; then
    openssl req -x509 -new -nodes -newkey rsa:2048 -keyout "$ca_key" -out "$ca_crt" \
        -days 3650 -subj "/CN=gpu-budget-operator webhook CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    rm -f "$crt" "$key"   # signed by the old CA, if any
    echo "webhook-certs: new CA in $ca_crt" >&2
fi

covers_sans() {
    local have
    have=$(openssl x509 -in "$crt" -noout -ext subjectAltName 2>/dev/null | tail -n +2 |
        tr -d ' ' | sed 's/IPAddress:/IP:/g')
    local san
    IFS=, read -ra wanted <<<"$sans"
    for san in "${wanted[@]}"; do
        [[ ",$have," == *",$san,"* ]] || return 1
    done
}

if [[ -s $crt && -s $key ]] && openssl x509 -in "$crt" -noout -checkend "$month" >/dev/null &&
    openssl verify -CAfile "$ca_crt" "$crt" >/dev/null 2>&1 && covers_sans; then
    echo "webhook-certs: $crt is valid; kept" >&2
    exit 0
fi

csr=$(mktemp)
ext=$(mktemp)
trap 'rm -f "$csr" "$ext"' EXIT
openssl req -new -nodes -newkey rsa:2048 -keyout "$key" -out "$csr" \
    -subj "/CN=gpu-budget-operator webhook" 2>/dev/null
cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$sans
EOF
openssl x509 -req -in "$csr" -CA "$ca_crt" -CAkey "$ca_key" -CAcreateserial \
    -CAserial "$dir/ca.srl" -out "$crt" -days 365 -extfile "$ext" 2>/dev/null
chmod 644 "$crt" "$ca_crt"
echo "webhook-certs: serving certificate $crt for $sans" >&2
