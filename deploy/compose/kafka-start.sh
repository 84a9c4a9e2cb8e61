#!/usr/bin/env bash
# docker-compose's Kafka (the apache/kafka image), secured like the native stack's: its own start
# instead of the image's, because the image formats storage without SCRAM users and wants JKS key
# stores for TLS, while the native broker's users exist from formatting on (KRaft adds them only
# then) and its key store is PEM. The stack-secrets job (screwops_stack.compose) made what is
# read here: /etc/kafka/screwops (the users, the listeners' logins, the admin's client config)
# and /etc/kafka/tls (the CA and the broker's key store).
set -euo pipefail

secrets=/etc/kafka/screwops
config=/opt/kafka/config/server.properties
data=$KAFKA_LOG_DIRS
# Written by this script once the storage holds the users; the native stack's SCRAM_MARKER.
marker=$data/.screwops-scram
# The config holds the admin's password.
umask 077

if [[ -e $data/meta.properties && ! -e $marker ]]; then
    echo "Kafka's data volume predates SASL/SCRAM: it has no users to log in as. Remove it" \
        "(every topic is lost): docker compose down && docker volume rm <project>_kafka-data" \
        "&& docker compose up -d" >&2
    exit 1
fi

# Every KAFKA_* variable is a server property, named as the image names them
# (KAFKA_LOG_RETENTION_HOURS is log.retention.hours; `__` is `_`, `___` is `-`), then the
# listeners' logins, which hold a secret and so never are variables.
{
    env | grep -E '^KAFKA_' \
        | grep -vE '^KAFKA_(VERSION|HEAP_OPTS|LOG4J_OPTS|OPTS|JMX_OPTS|JVM_PERFORMANCE_OPTS|GC_LOG_OPTS)=' \
        | while IFS='=' read -r name value; do
            key=${name#KAFKA_}
            key=${key,,}
            key=${key//___/-}
            key=${key//__/@}
            key=${key//_/.}
            printf '%s=%s\n' "${key//@/_}" "$value"
        done
    cat "$secrets/listeners.properties"
} >"$config"

if [[ ! -e $data/meta.properties ]]; then
    mapfile -t users <"$secrets/scram-arguments"
    /opt/kafka/bin/kafka-storage.sh format -t "$CLUSTER_ID" -c "$config" "${users[@]}"
    touch "$marker"
fi

export KAFKA_LOG4J_OPTS="${KAFKA_LOG4J_OPTS:--Dlog4j.configuration=file:/etc/kafka/docker/log4j.properties}"
exec /opt/kafka/bin/kafka-server-start.sh "$config"
