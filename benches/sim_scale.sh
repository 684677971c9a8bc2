#!/usr/bin/env bash
# The simulator at scale: wall time, events per second and peak memory of `simulations/scale.toml` (9,996
# nodes, 100 streams, one simulated hour with 120 faults), then how wall time grows with the number of nodes
# (the same scenario with 20, 59, 196 and 588 nodes per region: 1,020 / 3,009 / 9,996 / 29,988 nodes).
#
#   benches/sim_scale.sh              # all of it, about 6 minutes on 2 cores
#   SIZES="20 59" benches/sim_scale.sh
#   PROBES="100 1000" SIZES= benches/sim_scale.sh   # at the live default probe intervals (fast, slow ms)
#   THREADS=1 benches/sim_scale.sh    # on one thread (default: one per processor)
set -euo pipefail

cd "$(dirname "$0")/.."
SIZES=${SIZES-"20 59 196 588"}
THREADS=${THREADS:-$(nproc)}
command -v /usr/bin/time >/dev/null || { echo "sim_scale: /usr/bin/time is required (apt-get install time)" >&2; exit 1; }
cargo build --release --quiet
BIN=$PWD/target/release/lightpath
WORK=$(mktemp -d /tmp/lightpath-sim-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {print $2}' /proc/meminfo) kB"
echo
SCALE=simulations/scale.toml
if [ -n "${PROBES:-}" ]; then
    read -r fast slow <<<"$PROBES"
    SCALE=simulations/scale-probes-$$.toml
    sed -e "s/^fast_ms = .*/fast_ms = $fast/" -e "s/^slow_ms = .*/slow_ms = $slow/" simulations/scale.toml >"$SCALE"
    trap 'rm -rf "$WORK" "$SCALE"' EXIT
fi
echo "$SCALE (one simulated hour, probes every ${PROBES:-2000 10000} ms, $THREADS threads):"
/usr/bin/time -f "%e %U %M" -o "$WORK/scale-time.txt" "$BIN" sim --threads "$THREADS" "$SCALE" >"$WORK/scale.txt"
read -r wall user kib <"$WORK/scale-time.txt"
head -1 "$WORK/scale.txt"
events=$(head -1 "$WORK/scale.txt" | sed -E 's/.* ([0-9]+) events.*/\1/')
awk -v w="$wall" -v k="$kib" -v e="$events" 'BEGIN {
    printf "wall %.1f s (target <= 60 s), %.2f M events/s, peak memory %.0f MiB (target < 4096 MiB)\n", w, e / w / 1e6, k / 1024 }'
echo "user CPU $user s"
echo
echo "| nodes | links | events | wall time | peak memory |"
echo "| --- | --- | --- | --- | --- |"
for n in $SIZES; do
    sed "s/^nodes_per_region = .*/nodes_per_region = $n/" "$SCALE" >"$WORK/scale-$n.toml"
    sed -i "s|^topology = .*|topology = \"$PWD/topology/world.toml\"|" "$WORK/scale-$n.toml"
    /usr/bin/time -f "%e %M" -o "$WORK/t.txt" "$BIN" sim --threads "$THREADS" "$WORK/scale-$n.toml" >"$WORK/o.txt"
    read -r wall kib <"$WORK/t.txt"
    line=$(head -1 "$WORK/o.txt")
    nodes=$(sed -E 's/.*: ([0-9]+) nodes.*/\1/' <<<"$line")
    links=$(sed -E 's/.*nodes, ([0-9]+) links.*/\1/' <<<"$line")
    events=$(sed -E 's/.*simulated, ([0-9]+) events.*/\1/' <<<"$line")
    printf "| %s | %s | %s | %.1f s | %.0f MiB |\n" "$nodes" "$links" "$events" "$wall" "$(echo "$kib / 1024" | bc -l)"
done
