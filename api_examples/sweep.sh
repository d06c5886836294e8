#!/usr/bin/env bash
# Submit a parameter sweep: one base spec, the seed and the number of epochs varied on a grid.
#
# Usage: api_examples/sweep.sh [SPEC.json]   (default: api_examples/diehl_cook_quick.json)
# Environment: EMBER_URL (default http://127.0.0.1:8000), EMBER_TOKEN. Needs curl and jq.
set -euo pipefail

spec=${1:-"$(dirname "$0")/diehl_cook_quick.json"}
url=${EMBER_URL:-http://127.0.0.1:8000}
auth=()
if [ -n "${EMBER_TOKEN:-}" ]; then auth=(-H "Authorization: Bearer $EMBER_TOKEN"); fi

request=$(jq '{base: ., vary: {"seed": [1, 2], "epochs": [1, 2]}, mode: "grid", tags: ["sweep-example"]}' "$spec")
sweep=$(curl -sS --fail-with-body "${auth[@]}" -H 'Content-Type: application/json' --data "$request" "$url/v1/sweeps")
id=$(jq -r .id <<<"$sweep")
echo "sweep $id with $(jq '.children | length' <<<"$sweep") child jobs"
while :; do
  sweep=$(curl -sS --fail-with-body "${auth[@]}" "$url/v1/jobs/$id")
  status=$(jq -r .status <<<"$sweep")
  printf '\r%-10s %s/%s' "$status" "$(jq .progress.done <<<"$sweep")" "$(jq .progress.total <<<"$sweep")"
  case $status in succeeded | failed | cancelled) break ;; esac
  sleep 2
done
echo
# The table of child metrics. Cancel a whole sweep with: curl -X POST $url/v1/jobs/$id/cancel
jq -r '.children[] | "\(.id)  \(.values | tojson)  \(.status)  accuracy=\(.metrics.accuracy // "-")"' <<<"$sweep"
