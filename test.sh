#!/usr/bin/env bash
# Builds everything and runs the whole test suite (unit + integration against the real embedded
# ClickHouse, real SMTP over loopback). Fetches the pinned embedded engine on first use.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
"$root/build/fetch-chdb.sh" >/dev/null || exit 1
log="$(mktemp)"
# Build in parallel, then run one test assembly at a time (-m:1): the CLI's scenario tests measure
# time to limit and legitimate users blocked against a live serve on two cores, and another assembly's
# embedded ClickHouse running beside them skews those figures (seen on main too, with Ops.Tests).
dotnet build "$root/Analytics.sln" -c Release --nologo -v q 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if ((status == 0)); then
  dotnet test "$root/Analytics.sln" -c Release --nologo --no-build -m:1 "$@" 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
fi
# One closing line for the whole suite, summed over the test assemblies.
grep -E '^(Passed|Failed)!' "$log" | sed -E 's/.*Failed: +([0-9]+), Passed: +([0-9]+), Skipped: +([0-9]+).*/\1 \2 \3/' |
  awk '{f+=$1; p+=$2; s+=$3} END {printf "%d passed, %d failed, %d skipped\n", p, f, s}'
rm -f "$log"
exit "$status"
