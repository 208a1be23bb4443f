# Shared by bench/api.sh and bench/panel.sh: starts `carve serve` on libvirt's test driver in
# a fresh work directory and gives a tenant 100 running VMs. Source it with $carve set; it
# sets $work, $base, $server, $admin (token), $token (the customer's) and $tenant.
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk >/dev/null
work=$(mktemp -d /var/tmp/carve-bench.XXXXXX)
chmod 0711 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CARVE_DATA_DIR=$work/data CARVE_IMAGE_DIR=${CARVE_IMAGE_DIR:-/var/lib/carve/images}
export CARVE_LIBVIRT_URI=test:///default CARVE_LIBVIRT_DOMAIN_TYPE=qemu CARVE_HTTP_LISTEN=127.0.0.1:$port
export CARVE_SFTP_LISTEN=127.0.0.1:0
export CARVE_NETWORK_FORWARD_PORTS=38000-38999 CARVE_QUOTA_MAX_VMS=1000 CARVE_QUOTA_MAX_VCPUS=1000
export CARVE_QUOTA_MAX_MEMORY_MIB=10000000 CARVE_QUOTA_MAX_DISK_GIB=100000
export CARVE_CAPACITY_CPU_OVERCOMMIT=100 CARVE_CAPACITY_MEMORY_OVERCOMMIT=100 CARVE_CAPACITY_DISK_OVERCOMMIT=100
export RUST_LOG=warn
echo "bench admin password" | "$carve" admin create-user --email admin@example.com --role admin >/dev/null
admin=$("$carve" admin create-token --email admin@example.com --name bench)
"$carve" serve 2> "$work/serve.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
echo "carve pid $server" >&2
base=http://127.0.0.1:$port
for _ in $(seq 1 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
api() { curl -sf -H "Authorization: Bearer $1" -H 'content-type: application/json' -X "$2" "$base/api/v1$3" ${4:+-d "$4"}; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
# shellcheck source=bench/seed.sh
. bench/seed.sh
seed_tenant "$base" "$admin" '[22,80]'
n=$(seed_running "$base" "$token")
report() { awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} /^ +50%/ {p50=$2} END {printf "%s req/s, p50 %s, p99 %s\n", rps, p50, p99}'; }
