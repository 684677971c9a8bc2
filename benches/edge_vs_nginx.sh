#!/usr/bin/env bash
# Edge serving with a hot cache: a lightpath edge against Debian's nginx serving the same bytes.
#
# Builds the release binary, makes a CA and node certificates with `lightpath ca`, starts an origin and an
# edge (`lightpath node`) linked on 127.0.0.1, PUTs a 1 MiB segment and a ~400-byte playlist into the origin,
# warms both at the edge with a GET, then runs wrk against the edge and against an nginx (its own prefix and
# config in a temporary folder) serving the same two files. Prints requests/s, p99 latency and the ratio
# lightpath/nginx for each object. Everything runs on loopback and is stopped on exit.
#
#   benches/edge_vs_nginx.sh                     # wrk -t2 -c100 -d10s --latency
#   DURATION=30s CONNECTIONS=200 benches/edge_vs_nginx.sh
set -euo pipefail

cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-100}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
NGINX=${NGINX:-/usr/sbin/nginx}
KEY=bench-publish-key
STREAM=bench

for tool in wrk "$NGINX" curl ss; do
    command -v "$tool" >/dev/null || { echo "edge_vs_nginx: $tool is required" >&2; exit 1; }
done

cargo build --release --quiet
BIN=$PWD/target/release/lightpath

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lightpath-edge-bench.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# A port free for both TCP and UDP on 127.0.0.1 (and not handed out earlier in this run).
TAKEN=" "
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 30000))
        [[ $TAKEN == *" $port "* ]] && continue
        if [[ -z $(ss -Htuan "sport = :$port") ]]; then
            TAKEN+="$port "
            echo "$port"
            return
        fi
    done
}

ORIGIN_MESH=127.0.0.1:$(free_port)
ORIGIN_HTTP=127.0.0.1:$(free_port)
EDGE_MESH=127.0.0.1:$(free_port)
EDGE_HTTP=127.0.0.1:$(free_port)
NGINX_HTTP=127.0.0.1:$(free_port)

# ---- the objects -------------------------------------------------------------------------------------------
WWW=$WORK/www
mkdir -p "$WWW/live/$STREAM"
head -c 1048576 /dev/urandom >"$WWW/live/$STREAM/seg.ts"
{
    printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1042\n'
    printf '#EXT-X-PROGRAM-DATE-TIME:2025-01-01T00:00:00.000Z\n'
    for n in $(seq 1042 1051); do
        printf '#EXTINF:2.000,\nseg%d.ts\n' "$n"
    done
} >"$WWW/live/$STREAM/index.m3u8"
PLAYLIST_BYTES=$(stat -c %s "$WWW/live/$STREAM/index.m3u8")

# ---- lightpath: CA, topology, configs, two nodes -----------------------------------------------------------
LP=$WORK/lightpath
mkdir -p "$LP"
"$BIN" ca init --dir "$LP/ca" >/dev/null
for node in origin edge; do
    "$BIN" ca issue --dir "$LP/ca" --node "$node" --out "$LP/certs" >/dev/null
done
cat >"$LP/topology.toml" <<EOF
[[regions]]
name = "lab"
lat = 0.0
lon = 0.0

[[nodes]]
id = "origin"
region = "lab"
roles = ["origin"]
mesh = "$ORIGIN_MESH"
http = "$ORIGIN_HTTP"

[[nodes]]
id = "edge"
region = "lab"
roles = ["edge"]
mesh = "$EDGE_MESH"
http = "$EDGE_HTTP"

[[links]]
a = "origin"
b = "edge"
latency_ms = 1.0
EOF
for node in origin edge; do
    cat >"$LP/$node.toml" <<EOF
node = "$node"
topology = "topology.toml"

[tls]
ca = "ca/ca.pem"
cert = "certs/$node.pem"
key = "certs/$node.key"

[ingest]
stream_keys = { $STREAM = "$KEY" }
max_body_bytes = 4194304
EOF
    RUST_LOG=${RUST_LOG:-warn} "$BIN" node --config "$LP/$node.toml" 2>"$LP/$node.log" &
    PIDS+=($!)
done

# Polls a URL until it answers 200 (or gives up after ~10 s).
wait_200() {
    local url=$1 i
    for i in $(seq 200); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "$url") == 200 ]]; then
            return 0
        fi
        sleep 0.05
    done
    echo "edge_vs_nginx: $url never answered 200; logs in $LP" >&2
    tail -n 20 "$LP"/*.log >&2
    exit 1
}

wait_200 "http://$ORIGIN_HTTP/healthz"
wait_200 "http://$EDGE_HTTP/healthz"
for file in seg.ts index.m3u8; do
    curl -sf -X PUT --data-binary "@$WWW/live/$STREAM/$file" -H "Authorization: Bearer $KEY" \
        "http://$ORIGIN_HTTP/live/$STREAM/$file" >/dev/null
done
# The announcement takes a moment to reach the edge; then the first GET subscribes and waits for the object.
for file in seg.ts index.m3u8; do
    wait_200 "http://$EDGE_HTTP/live/$STREAM/$file"
    curl -sf "http://$EDGE_HTTP/live/$STREAM/$file" | cmp -s - "$WWW/live/$STREAM/$file" || {
        echo "edge_vs_nginx: the edge serves different bytes for $file" >&2
        exit 1
    }
done

# ---- nginx: same files, its own prefix -----------------------------------------------------------------------
NG=$WORK/nginx
mkdir -p "$NG/tmp"
# Workers drop to nobody when started as root: the files must be readable by them.
chmod -R a+rX "$WORK"
cat >"$NG/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events {
    worker_connections 4096;
}
http {
    types {
        application/vnd.apple.mpegurl m3u8;
        video/mp2t ts;
    }
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_errors on;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    server {
        listen $NGINX_HTTP reuseport;
        root $WWW;
        location /live/ {
            add_header Cache-Control "public, max-age=86400";
            add_header Access-Control-Allow-Origin "*";
        }
    }
}
EOF
"$NGINX" -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log" &
PIDS+=($!)
wait_200 "http://$NGINX_HTTP/live/$STREAM/index.m3u8"
curl -sf "http://$NGINX_HTTP/live/$STREAM/seg.ts" | cmp -s - "$WWW/live/$STREAM/seg.ts"

# ---- measure ---------------------------------------------------------------------------------------------------
# Converts wrk's latency ("812.00us", "1.20ms", "2.01s") to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
        printf "%.2f", n
    }'
}

# CPU time (clock ticks) used so far by the given processes and their children's threads.
HZ=$(getconf CLK_TCK)
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}

# Runs wrk against one URL while measuring the server processes' CPU; sets RPS, P99 (ms) and CPU_US (server
# CPU microseconds per request).
measure() {
    local url=$1 out before after
    shift
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$url" >/dev/null
    before=$(cpu_ticks "$@")
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url")
    after=$(cpu_ticks "$@")
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
        echo "edge_vs_nginx: errors against $url:" >&2
        grep -E 'Non-2xx|Socket errors' <<<"$out" >&2
    fi
    RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
    # Every response must carry the whole object: wrk's bytes per request (head included) at least its size.
    local per_request
    per_request=$(awk -v rps="$RPS" '/^Transfer\/sec:/ {
        v = $2 + 0
        if ($2 ~ /KB$/) v *= 1024; else if ($2 ~ /MB$/) v *= 1048576; else if ($2 ~ /GB$/) v *= 1073741824
        printf "%.0f", v / rps
    }' <<<"$out")
    if ((per_request < EXPECT_BYTES * 99 / 100)); then
        echo "edge_vs_nginx: $url sent $per_request bytes per response, expected at least $EXPECT_BYTES" >&2
        exit 1
    fi
    P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    REQUESTS=$(awk '/requests in/ { print $1 }' <<<"$out")
    CPU_US=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$REQUESTS" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
}

EDGE_PID=$(pgrep -f "node --config $LP/edge.toml")
NGINX_WORKERS=$(pgrep -P "${PIDS[-1]}" | tr '\n' ' ')
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency on loopback; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-20s %12s %12s %7s %10s %10s %7s %12s %12s\n' object "lightpath/s" "nginx/s" ratio \
    "lp p99 ms" "ng p99 ms" ratio "lp CPU us/r" "ng CPU us/r"
for file in seg.ts index.m3u8; do
    EXPECT_BYTES=$(stat -c %s "$WWW/live/$STREAM/$file")
    # shellcheck disable=SC2086 # the worker list is meant to split
    measure "http://$EDGE_HTTP/live/$STREAM/$file" "$EDGE_PID"
    LP_RPS=$RPS LP_P99=$P99 LP_CPU=$CPU_US
    # shellcheck disable=SC2086
    measure "http://$NGINX_HTTP/live/$STREAM/$file" $NGINX_WORKERS
    NG_RPS=$RPS NG_P99=$P99 NG_CPU=$CPU_US
    case $file in
    seg.ts) label="segment (1 MiB)" ;;
    *) label="playlist ($PLAYLIST_BYTES B)" ;;
    esac
    printf '%-20s %12s %12s %6.2fx %10s %10s %6.2fx %12s %12s\n' "$label" "$LP_RPS" "$NG_RPS" \
        "$(awk -v a="$LP_RPS" -v b="$NG_RPS" 'BEGIN { print a / b }')" "$LP_P99" "$NG_P99" \
        "$(awk -v a="$LP_P99" -v b="$NG_P99" 'BEGIN { print (b > 0 ? a / b : 0) }')" "$LP_CPU" "$NG_CPU"
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
