#!/usr/bin/env bash
# testbed-registry.sh - (the project's copy of shared/testbed/registry.sh) start a local OCI/Docker distribution registry on 127.0.0.1
# and push a tiny busybox image to it, using only Debian packages.
#
#   apt-get install -y docker-registry busybox-static curl jq
#   (optional) apt-get install -y apache2-utils   # for REG_AUTH (htpasswd)
#   (optional) apt-get install -y skopeo          # for PUSH_WITH=skopeo
#
# Usage:
#   registry.sh start        # start registry (background), wait until it answers
#   registry.sh build        # build OCI image layout $REG_DIR/oci (busybox-static)
#   registry.sh push         # push $REG_DIR/oci to 127.0.0.1:$REG_PORT/$IMAGE:$TAG
#   registry.sh check        # pull manifest+blobs back, check 404 on a missing tag
#   registry.sh stop         # stop the registry started by 'start' (by its pid file)
#   registry.sh all          # start + build + push + check
#
# Environment (defaults):
#   REG_DIR=$TMPDIR/skiff-registry  state: config, data, pid, log, image layout
#   REG_PORT=5000           listen on 127.0.0.1:$REG_PORT only
#   REG_AUTH=               "user:password" enables htpasswd (basic) auth
#   IMAGE=busybox TAG=1     repository and tag to push
#   PUSH_WITH=curl          curl (registry HTTP API v2) or skopeo
#   CMD='["sh"]'            image default command (JSON array)
set -euo pipefail

REG_DIR=${REG_DIR:-${TMPDIR:-/tmp}/skiff-registry}
REG_PORT=${REG_PORT:-5000}
REG_AUTH=${REG_AUTH:-}
IMAGE=${IMAGE:-busybox}
TAG=${TAG:-1}
PUSH_WITH=${PUSH_WITH:-curl}
CMD=${CMD:-'["sh"]'}
REG="127.0.0.1:${REG_PORT}"
OCI="$REG_DIR/oci"

die() { echo "local-registry: $*" >&2; exit 1; }
AUTH=(); if [ -n "$REG_AUTH" ]; then AUTH=(-u "$REG_AUTH"); fi   # curl basic-auth args

start() {
  command -v docker-registry >/dev/null || die "docker-registry not installed (apt-get install -y docker-registry)"
  mkdir -p "$REG_DIR/data"
  if [ -f "$REG_DIR/pid" ] && kill -0 "$(cat "$REG_DIR/pid")" 2>/dev/null; then
    echo "already running (pid $(cat "$REG_DIR/pid"))"; return 0
  fi
  if ss -ltn "sport = :$REG_PORT" | grep -q LISTEN; then die "port $REG_PORT already in use"; fi
  local auth=""
  if [ -n "$REG_AUTH" ]; then
    command -v htpasswd >/dev/null || die "htpasswd missing (apt-get install -y apache2-utils)"
    htpasswd -Bbn "${REG_AUTH%%:*}" "${REG_AUTH#*:}" > "$REG_DIR/htpasswd"
    auth="auth:
  htpasswd:
    realm: local-registry
    path: $REG_DIR/htpasswd"
  fi
  cat > "$REG_DIR/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$REG_PORT
  secret: $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
$auth
EOF
  # setsid: the registry survives the calling shell; stop it with 'stop'
  setsid docker-registry serve "$REG_DIR/config.yml" > "$REG_DIR/registry.log" 2>&1 < /dev/null &
  echo $! > "$REG_DIR/pid"
  for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/" || true)
    if [ "$code" = 200 ] || [ "$code" = 401 ]; then echo "registry up on $REG (pid $(cat "$REG_DIR/pid"), /v2/ -> $code)"; return 0; fi
    sleep 0.1
  done
  cat "$REG_DIR/registry.log" >&2; die "registry did not come up"
}

stop() {
  [ -f "$REG_DIR/pid" ] || { echo "not running"; return 0; }
  local pid; pid=$(cat "$REG_DIR/pid")
  if kill -0 "$pid" 2>/dev/null; then kill "$pid"; fi
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$REG_DIR/pid"; echo "stopped registry pid $pid"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# Put a file into the OCI layout's blob store; print its digest hex.
add_blob() {
  local f=$1 d; d=$(sha "$f")
  mkdir -p "$OCI/blobs/sha256"; cp "$f" "$OCI/blobs/sha256/$d"; echo "$d"
}

build() {
  [ -x /bin/busybox ] || die "/bin/busybox missing (apt-get install -y busybox-static)"
  file -L /bin/busybox 2>/dev/null | grep -q "statically linked" || echo "warning: /bin/busybox may not be static" >&2
  local work; work=$(mktemp -d); rm -rf "$OCI"; mkdir -p "$OCI"
  mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp" "$work/rootfs/proc" "$work/rootfs/sys" "$work/rootfs/dev"
  cp /bin/busybox "$work/rootfs/bin/busybox"
  for app in $(/bin/busybox --list); do
    [ "$app" = busybox ] || ln -sf busybox "$work/rootfs/bin/$app"
  done
  echo "root:x:0:0:root:/root:/bin/sh" > "$work/rootfs/etc/passwd"
  echo "root:x:0:" > "$work/rootfs/etc/group"
  chmod 1777 "$work/rootfs/tmp"
  # reproducible layer: sorted names, fixed mtime/owner, gzip without name/time
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/rootfs" -cf "$work/layer.tar" .
  gzip -n -9 -c "$work/layer.tar" > "$work/layer.tar.gz"
  local diff_id layer lsize
  diff_id=$(sha "$work/layer.tar"); layer=$(add_blob "$work/layer.tar.gz"); lsize=$(stat -c %s "$work/layer.tar.gz")
  jq -n --arg d "sha256:$diff_id" --argjson cmd "$CMD" '{
      architecture: "amd64", os: "linux",
      config: {Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: $cmd, WorkingDir: "/"},
      rootfs: {type: "layers", diff_ids: [$d]},
      history: [{created_by: "testbed registry.sh: busybox-static", created: "1970-01-01T00:00:00Z"}]}' -c > "$work/config.json"
  local cfg csize
  cfg=$(add_blob "$work/config.json"); csize=$(stat -c %s "$work/config.json")
  jq -n --arg c "sha256:$cfg" --argjson cs "$csize" --arg l "sha256:$layer" --argjson ls "$lsize" '{
      schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
      layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l, size: $ls}]}' -c > "$work/manifest.json"
  local man msize
  man=$(add_blob "$work/manifest.json"); msize=$(stat -c %s "$work/manifest.json")
  echo '{"imageLayoutVersion":"1.0.0"}' > "$OCI/oci-layout"
  jq -n --arg m "sha256:$man" --argjson ms "$msize" --arg tag "$TAG" '{schemaVersion: 2,
      manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
                   annotations: {"org.opencontainers.image.ref.name": $tag}}]}' > "$OCI/index.json"
  rm -rf "$work"
  echo "built OCI layout $OCI (manifest sha256:$man, layer $lsize bytes)"
}

push_blob() {  # $1 = digest hex; uploads blob unless the registry has it
  local d=$1 f="$OCI/blobs/sha256/$1" code loc
  code=$(curl -s "${AUTH[@]}" -o /dev/null -w '%{http_code}' -I "http://$REG/v2/$IMAGE/blobs/sha256:$d")
  [ "$code" = 200 ] && return 0
  loc=$(curl -s "${AUTH[@]}" -X POST -D - -o /dev/null "http://$REG/v2/$IMAGE/blobs/uploads/" \
        | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
  [ -n "$loc" ] || die "blob upload start failed for $d"
  case "$loc" in http*) ;; *) loc="http://$REG$loc";; esac
  case "$loc" in *\?*) loc="$loc&digest=sha256:$d";; *) loc="$loc?digest=sha256:$d";; esac
  code=$(curl -s "${AUTH[@]}" -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
         --data-binary "@$f" "$loc")
  [ "$code" = 201 ] || die "blob upload of $d failed: HTTP $code"
}

push() {
  [ -f "$OCI/index.json" ] || build
  if [ "$PUSH_WITH" = skopeo ]; then
    local creds=() src
    [ -n "$REG_AUTH" ] && creds=(--dest-creds "$REG_AUTH")
    src=$(jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"]' "$OCI/index.json")
    skopeo copy --quiet --dest-tls-verify=false "${creds[@]}" "oci:$OCI:$src" "docker://$REG/$IMAGE:$TAG"
  else
    local man; man=$(jq -r '.manifests[0].digest' "$OCI/index.json"); man=${man#sha256:}
    local m="$OCI/blobs/sha256/$man"
    for d in $(jq -r '.config.digest, .layers[].digest' "$m"); do push_blob "${d#sha256:}"; done
    local code
    code=$(curl -s "${AUTH[@]}" -o /dev/null -w '%{http_code}' -X PUT \
           -H "Content-Type: $(jq -r .mediaType "$m")" --data-binary "@$m" "http://$REG/v2/$IMAGE/manifests/$TAG")
    [ "$code" = 201 ] || die "manifest put failed: HTTP $code"
  fi
  echo "pushed $REG/$IMAGE:$TAG"
}

check() {
  local accept='application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json'
  local m; m=$(curl -sf "${AUTH[@]}" -H "Accept: $accept" "http://$REG/v2/$IMAGE/manifests/$TAG") || die "manifest pull failed"
  for d in $(echo "$m" | jq -r '.config.digest, .layers[].digest'); do
    got=$(curl -sfL "${AUTH[@]}" "http://$REG/v2/$IMAGE/blobs/$d" | sha256sum | cut -d' ' -f1)
    [ "sha256:$got" = "$d" ] || die "blob $d digest mismatch"
  done
  echo "pulled $REG/$IMAGE:$TAG: manifest + $(echo "$m" | jq '.layers|length') layer(s), digests ok"
  code=$(curl -s "${AUTH[@]}" -o /dev/null -w '%{http_code}' -H "Accept: $accept" "http://$REG/v2/$IMAGE/manifests/no-such-tag")
  echo "missing tag -> HTTP $code"
}

case "${1:-all}" in
  start) start ;; stop) stop ;; build) build ;; push) push ;; check) check ;;
  all) start; build; push; check ;;
  *) die "usage: $0 start|build|push|check|stop|all" ;;
esac
