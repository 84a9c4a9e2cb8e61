#!/usr/bin/env bash
# Installs the servers of the no-Docker stack into a cache outside git.
#
# Usage: deploy/local/install.sh [kafka|minio|ferretdb|jaeger|prometheus|tools|browser|k8s|all]...
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
  installed ghz "$GHZ_VERSION" || {
    log "ghz $GHZ_VERSION: building from its Go module"
    GOBIN="$opt/bin" go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
    mark ghz "$GHZ_VERSION"
  }
}

install_browser() {
  # Debian's Chromium and its WebDriver, for the console's headless browser test (selenium drives
  # them by path, so nothing is downloaded when the test runs); a font so its screenshots have text.
  command -v chromium >/dev/null && command -v chromedriver >/dev/null && return 0
  log "chromium: installing Debian's chromium and chromium-driver"
  apt_install chromium chromium-driver fonts-dejavu-core
}

install_k8s() {
  # kubeconform and the JSON schemas it checks deploy/k8s against (tests/unit/test_k8s.py), all
  # offline once here: Kubernetes' schemas from the kubernetes-validate wheel (PyPI), Strimzi's
  # generated from its api jar by its own crd-generator (Maven Central), both laid out for
  # kubeconform by k8s_schemas.py.
  local stamp="$KUBECONFORM_VERSION k8s-$K8S_SCHEMA_VERSION kv-$KUBERNETES_VALIDATE_VERSION strimzi-$STRIMZI_API_VERSION+KafkaUser"
  installed k8s "$stamp" && return 0
  log "kubeconform $KUBECONFORM_VERSION: building from its Go module"
  GOBIN="$opt/bin" go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  local schemas="$opt/k8s-schemas" work="$opt/src/k8s-schemas"
  rm -rf "$schemas" "$work"
  mkdir -p "$schemas" "$work"
  log "kubernetes $K8S_SCHEMA_VERSION schemas: kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI"
  "${UV:-uv}" pip install --quiet --no-deps --target "$work/wheel" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  python3 "$here/k8s_schemas.py" kubernetes \
    "$work/wheel/kubernetes_validate/kubernetes-json-schema/v$K8S_SCHEMA_VERSION-local-strict" \
    "$schemas/kubernetes"
  log "strimzi $STRIMZI_API_VERSION CRD schemas: its crd-generator from Maven Central"
  sed -e "s/@STRIMZI_API_VERSION@/$STRIMZI_API_VERSION/" "$here/strimzi/pom.xml" >"$work/pom.xml"
  mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$work/libs"
  # The arguments of Strimzi's own build (api/pom.xml), for the kinds deploy/k8s uses.
  java -cp "$work/libs/*" io.strimzi.crdgenerator.CrdGenerator \
    --target-kube 1.16+ --crd-api-version v1 --api-versions v1beta2 --storage-version v1beta2 \
    io.strimzi.api.kafka.model.kafka.Kafka="$work/kafka.json" \
    io.strimzi.api.kafka.model.nodepool.KafkaNodePool="$work/kafkanodepool.json" \
    io.strimzi.api.kafka.model.topic.KafkaTopic="$work/kafkatopic.json" \
    io.strimzi.api.kafka.model.user.KafkaUser="$work/kafkauser.json" 2>/dev/null
  python3 "$here/k8s_schemas.py" crds "$schemas/crds" "$work"/*.json
  rm -rf "$work"
  mark k8s "$stamp"
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
  components=(kafka minio ferretdb jaeger prometheus tools browser k8s)
for c in "${components[@]}"; do
  "install_$c"
done
