#!/usr/bin/env bash
# Submit a job spec to an Ember service with curl, wait for it, print its metrics.
#
# Usage: api_examples/submit.sh [SPEC.json]   (default: api_examples/diehl_cook_quick.json)
# Environment: EMBER_URL (default http://127.0.0.1:8000), EMBER_TOKEN (when the
# service has authentication on). Needs curl and jq.
set -euo pipefail

spec=${1:-"$(dirname "$0")/diehl_cook_quick.json"}
url=${EMBER_URL:-http://127.0.0.1:8000}
auth=()
if [ -n "${EMBER_TOKEN:-}" ]; then auth=(-H "Authorization: Bearer $EMBER_TOKEN"); fi

# A dry run first: the normalized spec's size and time estimate, or the errors with their JSON paths.
curl -sS --fail-with-body "${auth[@]}" -H 'Content-Type: application/json' --data @"$spec" "$url/v1/validate" \
  | jq '{queue, estimate: .estimate | {neurons, synapses, steps, seconds, bytes}}'

# Submit; the Idempotency-Key makes a retried request return the same job.
job=$(curl -sS --fail-with-body "${auth[@]}" -H 'Content-Type: application/json' \
  -H "Idempotency-Key: submit-$(basename "$spec")-$$" --data @"$spec" "$url/v1/jobs")
id=$(jq -r .id <<<"$job")
echo "job $id queued"

while :; do
  job=$(curl -sS --fail-with-body "${auth[@]}" "$url/v1/jobs/$id")
  status=$(jq -r .status <<<"$job")
  printf '\r%-10s %s/%s' "$status" "$(jq .progress.done <<<"$job")" "$(jq .progress.total <<<"$job")"
  case $status in succeeded | failed | cancelled) break ;; esac
  sleep 2
done
echo
if [ "$status" != succeeded ]; then
  jq -r '"error: \(.error)"' <<<"$job" >&2
  exit 1
fi
jq '.metrics | del(.confusion_matrix, .assignments)' <<<"$job"
echo "artifacts:"
curl -sS --fail-with-body "${auth[@]}" "$url/v1/jobs/$id/artifacts" | jq -r '.items[] | "  \(.name)  \(.size) bytes  sha256 \(.sha256[:12])..."'
