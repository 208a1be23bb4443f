#!/usr/bin/env bash
# Property-based API testing with schemathesis (from PyPI) against carve's own OpenAPI
# document, once with an admin token and once with a customer token: no 5xx, and no response
# that breaks its own schema, status codes or content type. carve runs on libvirt's test driver
# so the thousands of generated requests create no real guests.
set -euo pipefail
cd "$(dirname "$0")/.."
# A failing step says which one it was (and, once carve runs, what carve said).
trap 'echo "schemathesis.sh: the step \"$BASH_COMMAND\" failed (line $LINENO)" >&2; [ -n "${work:-}" ] && [ -s "$work/serve.log" ] && tail -20 "$work/serve.log" >&2' ERR
venv=${CARVETEST_VENV:-/opt/carve-testenv}
./tests/setup-test-tools.sh >/dev/null
cargo build -q --bin carve
work=$(mktemp -d /var/tmp/carve-schemathesis.XXXXXX)
chmod 0711 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CARVE_DATA_DIR=$work/data CARVE_IMAGE_DIR=${CARVE_IMAGE_DIR:-/var/lib/carve/images}
# Every listener on a free port, so this runs beside `make run` (8080, 2222) or another test.
export CARVE_LIBVIRT_URI=test:///default CARVE_LIBVIRT_DOMAIN_TYPE=qemu CARVE_HTTP_LISTEN=127.0.0.1:$port
export CARVE_SFTP_LISTEN=127.0.0.1:0
export CARVE_NETWORK_FORWARD_PORTS=39000-39999 CARVE_LB_PORTS=38900-38999 RUST_LOG=warn
carve=target/debug/carve
echo "schemathesis admin pw" | $carve admin create-user --email admin@example.com --role admin >/dev/null
admin=$($carve admin create-token --email admin@example.com --name schemathesis)
$carve serve 2> "$work/serve.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
base=http://127.0.0.1:$port
for _ in $(seq 1 300); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
if ! curl -sf "$base/healthz" >/dev/null; then
  echo "schemathesis.sh: carve serve did not become healthy on $base; its log:" >&2
  cat "$work/serve.log" >&2
  exit 1
fi

api() { curl -sf -H "Authorization: Bearer $1" -H 'content-type: application/json' -X "$2" "$base/api/v1$3" ${4:+-d "$4"}; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
api "$admin" POST /plans '{"name":"small","vcpus":1,"memory_mib":128,"disk_gib":1}' >/dev/null
tenant=$(api "$admin" POST /tenants '{"name":"fuzz"}' | field "['id']")
api "$admin" POST /users "{\"email\":\"customer@fuzz.example\",\"password\":\"customer password\",\"role\":\"customer\",\"tenant_id\":\"$tenant\"}" >/dev/null
customer=$(curl -sf -H 'content-type: application/json' "$base/api/v1/tokens" \
  -d '{"email":"customer@fuzz.example","password":"customer password"}' | field "['token']")
created=$(api "$customer" POST /vms '{"name":"target","plan":"small","image":"tiny","ports":[80]}')
vm=$(echo "$created" | field "['vm']['id']")
op=$(echo "$created" | field "['id']")
pool=$(api "$customer" POST /pools '{"name":"web","protocol":"http"}' | field "['id']")

# Real ids for the paths that take one, so requests reach past the 404s.
cat > "$work/schemathesis.toml" <<TOML
[[operations]]
include-path-regex = "^/api/v1/vms/"
parameters = { "path.id" = "$vm" }

[[operations]]
include-path-regex = "^/api/v1/operations/"
parameters = { "path.id" = "$op" }

[[operations]]
include-path-regex = "^/api/v1/tenants/"
parameters = { "path.id" = "$tenant" }

[[operations]]
include-path-regex = "^/api/v1/pools/"
parameters = { "path.id" = "$pool", "path.vm_id" = "$vm" }
TOML

status=0
# tests/schemathesis_hooks.py works around a CPython 3.11 ast bug that hypothesis can trip.
export SCHEMATHESIS_HOOKS=$PWD/tests/schemathesis_hooks.py
for who in admin customer; do
  token=${!who}
  echo "== schemathesis as $who"
  "$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$base/api/v1/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-40}" --workers 2 --phases examples,coverage,fuzzing,stateful \
    --seed 42 --warnings off || status=1
done
if grep -q "panicked" "$work/serve.log"; then
  echo "carve panicked during the run:" >&2
  grep -A5 panicked "$work/serve.log" >&2
  status=1
fi
exit $status
