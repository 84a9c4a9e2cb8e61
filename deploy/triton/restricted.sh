#!/bin/sh
# Starts Triton with its model-control API (the model-repository protocol: load, unload, the
# repository index) closed, over gRPC and HTTP, to callers that send the stack's model-control key
# in the screwops-model-control header (screwops_contracts.models.MODEL_CONTROL_HEADER); inference,
# health, metadata and model configs stay open. Every stack starts Triton through this script:
#
#   restricted.sh KEY_FILE tritonserver [ARGS...]
#
# The key is read from KEY_FILE (owner-only) here, so it is in no manifest, variable or log; it is
# on tritonserver's command line, which only the machine's (or the container's) users can read.
set -eu
key_file="$1"
shift
key="$(cat "$key_file")"
if [ -z "$key" ]; then
    echo "restricted.sh: $key_file holds no model-control key" >&2
    exit 1
fi
restriction="model-repository:screwops-model-control=$key"
exec "$@" --grpc-restricted-protocol="$restriction" --http-restricted-api="$restriction"
