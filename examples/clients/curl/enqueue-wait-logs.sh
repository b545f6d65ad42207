#!/usr/bin/env bash
# Enqueue a job over HTTP, follow its log live (Server-Sent Events), then read its result.
#   GATEWAY=http://127.0.0.1:8080 TOKEN=... examples/clients/curl/enqueue-wait-logs.sh
# Optional: LANGUAGE (python), SOURCE (the program text), FILE (main.py), JOB_ID (generated).
set -euo pipefail
: "${GATEWAY:?set GATEWAY, e.g. http://127.0.0.1:8080}" "${TOKEN:?set TOKEN}"
LANGUAGE=${LANGUAGE:-python}
FILE=${FILE:-main.py}
SOURCE=${SOURCE:-'print("hello from quayside")'}
auth=(-H "Authorization: Bearer $TOKEN")

# 1. Enqueue: 201 and {"id", "created", "state"}. Re-posting the same "id" is a no-op (200).
# (python3 only builds the JSON with proper escaping; any JSON tool will do.)
spec=$(L="$LANGUAGE" F="$FILE" S="$SOURCE" J="${JOB_ID:-}" python3 -c '
import json, os
spec = {"kind": "run", "language": os.environ["L"], "files": {os.environ["F"]: os.environ["S"]}}
if os.environ["J"]:
    spec["id"] = os.environ["J"]
print(json.dumps(spec))')
enqueued=$(curl -sS --fail-with-body "${auth[@]}" -H 'Content-Type: application/json' \
  -d "$spec" "$GATEWAY/v1/jobs")
echo "enqueued: $enqueued"
id=$(printf '%s' "$enqueued" | sed -E 's/.*"id":"([^"]+)".*/\1/')

# 2. Follow the log live: one event per output chunk, then `event: end` with the status.
curl -sS -N --fail-with-body "${auth[@]}" "$GATEWAY/v1/jobs/$id/logs"

# 3. The result: 200 once the job ended (202 and the record if it is still running at timeout).
curl -sS --fail-with-body "${auth[@]}" "$GATEWAY/v1/jobs/$id/wait?timeout=30"
echo
