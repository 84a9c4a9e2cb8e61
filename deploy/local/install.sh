#!/usr/bin/env bash
# Installs the servers of the no-Docker stack into a cache outside git.
#
# Usage: deploy/local/install.sh [kafka|minio|ferretdb|jaeger|prometheus|tools|all]...
#
# Each component is built or fetched once, from the package registries this project is allowed
# to reach (Maven Central, the Go module proxy, Debian's packages), and skipped when its marker
# file shows the pinned version is already there. Versions are pinned in versions.env beside
# this script, so the cache is reproducible and a version bump rebuilds only what changed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

home="${SCREWOPS_HOME:-$HOME/.cache/screwops}"
opt="$home/opt"
mkdir -p "$opt/bin"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf '[install] %s\n' "$*" >&2; }

# done_marker NAME VERSION -> true when NAME is installed at VERSION.
installed() { [[ -f "$opt/.$1" && "$(cat "$opt/.$1")" == "$2" ]]; }
mark() { printf '%s' "$2" >"$opt/.$1"; }

# Build a main package from a writable copy of a Go module, so the module's own replace
# directives apply (`go install pkg@version` refuses modules that have them).
go_build_from_module() {
  local module="$1" version="$2" pkg="$3" out="$4" patch="${5:-}"
  local src
  src="$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  local work="$opt/src/$(basename "$out")"
  rm -rf "$work"
  mkdir -p "$work"
  cp -r "$src/." "$work/"
  chmod -R u+w "$work"
  if [[ -n "$patch" ]]; then
    (cd "$work" && eval "$patch")
  fi
  (cd "$work" && go build -trimpath -ldflags="-s -w" -o "$out" "$pkg")
  rm -rf "$work"
}

install_kafka() {
  installed kafka "$KAFKA_VERSION" && return 0
  log "kafka $KAFKA_VERSION: resolving jars from Maven Central"
  local dir="$opt/kafka"
  rm -rf "$dir"
  mkdir -p "$dir/libs"
  sed -e "s/@KAFKA_VERSION@/$KAFKA_VERSION/" -e "s/@SLF4J_VERSION@/$SLF4J_VERSION/" \
    "$here/kafka/pom.xml" >"$dir/pom.xml"
  mvn -q -B -f "$dir/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$dir/libs"
  mark kafka "$KAFKA_VERSION"
}

install_minio() {
  installed minio "$MINIO_VERSION" && return 0
  log "minio $MINIO_VERSION: building from its Go module"
  GOBIN="$opt/bin" go install "github.com/minio/minio@$MINIO_VERSION"
  mark minio "$MINIO_VERSION"
}

install_ferretdb() {
  installed ferretdb "$FERRETDB_VERSION" && return 0
  log "ferretdb $FERRETDB_VERSION: building from its Go module"
  # The module zip lacks build/version/version.txt, which the version package embeds.
  go_build_from_module github.com/FerretDB/FerretDB "$FERRETDB_VERSION" ./cmd/ferretdb \
    "$opt/bin/ferretdb" "echo $FERRETDB_VERSION > build/version/version.txt"
  mark ferretdb "$FERRETDB_VERSION"
}

install_jaeger() {
  installed jaeger "$JAEGER_VERSION" && return 0
  log "jaeger $JAEGER_VERSION: building from its Go module"
  go_build_from_module github.com/jaegertracing/jaeger "$JAEGER_VERSION" ./cmd/jaeger "$opt/bin/jaeger"
  mark jaeger "$JAEGER_VERSION"
}

install_prometheus() {
  command -v prometheus >/dev/null && return 0
  log "prometheus: installing Debian's package"
  apt_install prometheus
}

install_tools() {
  # kcat: an upstream event producer to test against; grpcurl and ghz: production-line clients.
  command -v kcat >/dev/null || apt_install kcat
  installed grpcurl "$GRPCURL_VERSION" || {
    GOBIN="$opt/bin" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
    mark grpcurl "$GRPCURL_VERSION"
  }
}

apt_updated=""
apt_install() {
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  if [[ -z "$apt_updated" ]]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

components=("$@")
[[ ${#components[@]} -eq 0 || "${components[0]}" == "all" ]] &&
  components=(kafka minio ferretdb jaeger prometheus tools)
for c in "${components[@]}"; do
  "install_$c"
done
