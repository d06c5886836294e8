#!/usr/bin/env bash
# Download a finished job's results: parameters, a byte range, spike records and plots.
#
# Usage: api_examples/results.sh JOB_ID [OUT_DIR]   (default OUT_DIR: ./results-JOB_ID)
# Environment: EMBER_URL (default http://127.0.0.1:8000), EMBER_TOKEN. Needs curl and jq.
set -euo pipefail

id=${1:?usage: results.sh JOB_ID [OUT_DIR]}
out=${2:-results-$id}
url=${EMBER_URL:-http://127.0.0.1:8000}
auth=()
if [ -n "${EMBER_TOKEN:-}" ]; then auth=(-H "Authorization: Bearer $EMBER_TOKEN"); fi
mkdir -p "$out/plots"

# Learned tensors as safetensors; check the download against the listed SHA-256.
curl -sS --fail-with-body "${auth[@]}" -o "$out/parameters.safetensors" "$url/v1/jobs/$id/parameters"
listed=$(curl -sS --fail-with-body "${auth[@]}" "$url/v1/jobs/$id/artifacts" | jq -r '.items[] | select(.name == "parameters.safetensors") | .sha256')
echo "$listed  $out/parameters.safetensors" | sha256sum --check

# The first 8 bytes only (the safetensors header length), with a range request: 206 Partial Content.
curl -sS --fail-with-body "${auth[@]}" -r 0-7 -o "$out/header-length.bin" -w 'range request: HTTP %{http_code}\n' "$url/v1/jobs/$id/parameters"

# Spike records of the first 500 ms of every recorded sample (steps restart at each sample) of one monitor,
# for its first 100 neurons at most, as JSON and as .npz.
monitors=$(curl -sS --fail-with-body "${auth[@]}" "$url/v1/jobs/$id/spikes/monitors")
monitor=$(jq -r '.[0].name // empty' <<<"$monitors")
if [ -n "$monitor" ]; then
  last=$(jq '[(.[0].shape | reduce .[] as $size (1; . * $size)), 100] | min - 1' <<<"$monitors")
  curl -sS --fail-with-body "${auth[@]}" "$url/v1/jobs/$id/spikes?monitor=$monitor&t_start=0&t_stop=500&neurons=0-$last" \
    | jq '{monitor, dt, records: (.step | length), next_cursor}'
  curl -sS --fail-with-body "${auth[@]}" -o "$out/$monitor.npz" "$url/v1/jobs/$id/spikes?monitor=$monitor&format=npz&limit=10000000"
fi

# Every plot.
for name in $(curl -sS --fail-with-body "${auth[@]}" "$url/v1/jobs/$id/artifacts" | jq -r '.items[].name | select(startswith("plots/"))'); do
  curl -sS --fail-with-body "${auth[@]}" -o "$out/$name" "$url/v1/jobs/$id/artifacts/$name"
done
ls -R "$out"
