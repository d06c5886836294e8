#!/usr/bin/env bash
# Follow a job's progress as server-sent events until it ends.
#
# Usage: api_examples/follow.sh JOB_ID
# Environment: EMBER_URL (default http://127.0.0.1:8000), EMBER_TOKEN.
set -euo pipefail

id=${1:?usage: follow.sh JOB_ID}
url=${EMBER_URL:-http://127.0.0.1:8000}
auth=()
if [ -n "${EMBER_TOKEN:-}" ]; then auth=(-H "Authorization: Bearer $EMBER_TOKEN"); fi

# -N turns off curl's buffering so each event prints as it arrives; the
# stream closes after the `end` event.
curl -sS -N --fail-with-body "${auth[@]}" -H 'Accept: text/event-stream' "$url/v1/jobs/$id/events"
