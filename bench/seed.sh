# Shared by bench/common.sh and bench/db.sh: the tenant every API benchmark measures.
# Source it, then call `seed_tenant BASE ADMIN_TOKEN PORTS_JSON`: a plan "small", a tenant
# "bench" with the customer c@bench.example, and 100 VMs (each forwarding PORTS_JSON, e.g.
# '[22,80]' or '[]'), waiting until all run. Sets $tenant and $token (the customer's).

# seed_call BASE TOKEN METHOD PATH [BODY]: one API call; its body on stdout.
seed_call() {
  curl -sf -H "Authorization: Bearer $2" -H 'content-type: application/json' -X "$3" "$1/api/v1$4" ${5:+-d "$5"}
}

# seed_running BASE TOKEN: how many of the token's VMs run.
seed_running() {
  seed_call "$1" "$2" GET '/vms?limit=500' | python3 -c 'import json,sys; print(sum(v["state"]=="running" for v in json.load(sys.stdin)))'
}

# seed_tenant BASE ADMIN_TOKEN PORTS_JSON: the tenant, its customer and 100 running VMs.
seed_tenant() {
  local base=$1 admin=$2 ports=$3 i
  seed_call "$base" "$admin" POST /plans '{"name":"small","vcpus":1,"memory_mib":128,"disk_gib":1}' >/dev/null
  tenant=$(seed_call "$base" "$admin" POST /tenants '{"name":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  seed_call "$base" "$admin" POST /users "{\"email\":\"c@bench.example\",\"password\":\"customer password\",\"role\":\"customer\",\"tenant_id\":\"$tenant\"}" >/dev/null
  token=$(curl -sf -H 'content-type: application/json' "$base/api/v1/tokens" -d '{"email":"c@bench.example","password":"customer password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  for i in $(seq 1 100); do
    seed_call "$base" "$token" POST /vms "{\"name\":\"vm$i\",\"plan\":\"small\",\"image\":\"tiny\",\"ports\":$ports}" >/dev/null
  done
  for _ in $(seq 1 600); do
    [ "$(seed_running "$base" "$token" || echo 0)" -ge 100 ] && return 0
    sleep 0.1
  done
  echo "seed_tenant: the 100 VMs did not all run within a minute" >&2
  return 1
}
