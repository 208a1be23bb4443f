#!/usr/bin/env bash
# `make run`: sets up the host, builds the guest images and carve, creates a first admin and
# token on first run, and runs `carve serve` on the embedded SQLite database.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARVE_DATA_DIR=${CARVE_DATA_DIR:-/var/lib/carve}
export CARVE_IMAGE_DIR=${CARVE_IMAGE_DIR:-/var/lib/carve/images}

./scripts/setup-host.sh
./images/build.sh "$CARVE_IMAGE_DIR"
cargo build --release --bin carve
carve=target/release/carve

mkdir -p "$CARVE_DATA_DIR"
chmod 0711 "$CARVE_DATA_DIR"
"$carve" migrate >/dev/null
credentials="$CARVE_DATA_DIR/admin-credentials"
if [ ! -s "$credentials" ]; then
  password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  echo "$password" | "$carve" admin create-user --email admin@localhost --role admin >/dev/null
  token=$("$carve" admin create-token --email admin@localhost --name first-admin-token)
  umask 077
  printf 'email: admin@localhost\npassword: %s\napi token: %s\n' "$password" "$token" > "$credentials"
fi
chmod 0600 "$credentials"
listen=${CARVE_HTTP_LISTEN:-127.0.0.1:8080}
cat <<MSG

carve is starting on http://$listen  (data in $CARVE_DATA_DIR)
First admin (also in $credentials, readable by root only):
$(sed 's/^/  /' "$credentials")
Try:  curl -H "Authorization: Bearer <api token>" http://$listen/api/v1/images
API reference: http://$listen/api/v1/openapi.json

MSG
exec "$carve" serve
