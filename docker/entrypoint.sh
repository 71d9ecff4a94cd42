#!/bin/sh
# Container entrypoint: the first argument picks the role.
#   api [args]        HTTP API on 0.0.0.0:$API_PORT (python -m bot api)
#   telegram [args]   Telegram bot (webhook mode when TELEGRAM_WEBHOOK_URL is set)
#   discord [args]    Discord bot
#   console [args]    interactive console (docker run -it ... console)
#   ingest [args]     build / refresh the knowledge-base index (python -m ingest run) and exit
#   anything else     run as a command (e.g. `python -m ingest status`, `sh`)
# Before a role that reads the index locally (api; a bot without INFERENCE_URL), the index is
# built if it is absent (ingest.pipeline.ensure_index). ENSURE_INDEX_ON_START=0 skips that, for
# deployments where a separate job builds it (docker/k8s/ingest-job.yaml).
set -eu

role="${1:-api}"
if [ "$#" -gt 0 ]; then
    shift
fi

ensure_index() {
    if [ "${ENSURE_INDEX_ON_START:-1}" = "1" ]; then
        echo "entrypoint: checking the knowledge-base index (builds it on first start)"
        python -c "from ingest.pipeline import ensure_index; ensure_index()" \
            || echo "entrypoint: index not built; answers will come from the catalog only until 'ingest' runs" >&2
    fi
}

case "$role" in
    api)
        ensure_index
        exec python -m bot api --host 0.0.0.0 --port "${API_PORT:-8080}" "$@"
        ;;
    telegram|discord|console)
        # Remote mode (INFERENCE_URL set): the API holds the model and the index.
        if [ -z "${INFERENCE_URL:-}" ]; then
            ensure_index
        fi
        exec python -m bot "$role" "$@"
        ;;
    ingest)
        exec python -m ingest run "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
