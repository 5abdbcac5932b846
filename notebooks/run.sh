#!/usr/bin/env bash
# Executes the analyst notebooks headlessly (jupyter nbconvert + the .NET Interactive C# kernel) against
# a fresh small simulated dataset, so they never rot. Executed copies go to artifacts/notebooks/; the
# notebooks in the repository keep their outputs cleared (checked here too).
#   notebooks/run.sh            run all three
#   ANALYTICS_NB_CLI=path/analytics.dll notebooks/run.sh   use an already built CLI (the test suite does)
# Exit 77 (and one line saying why) when jupyter or the kernel is not installed: .ci/run installs both.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/notebooks"
export PATH="$PATH:/opt/dotnet-tools:$HOME/.dotnet/tools"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_INTERACTIVE_CLI_TELEMETRY_OPTOUT=1 PYDEVD_DISABLE_FILE_VALIDATION=1

# Outputs stay out of the repository: a notebook committed with outputs fails here, runnable or not.
dirty="$(python3 - <<'PY'
import json, glob
print(" ".join(f for f in sorted(glob.glob("*.ipynb"))
      if any(c.get("outputs") or c.get("execution_count") for c in json.load(open(f))["cells"] if c["cell_type"] == "code")))
PY
)"
if [[ -n "$dirty" ]]; then
  echo "notebooks with outputs committed (clear them: jupyter nbconvert --clear-output --inplace $dirty)" >&2
  exit 1
fi

command -v jupyter >/dev/null && jupyter nbconvert --version >/dev/null 2>&1 ||
  { echo "notebooks not executed: jupyter nbconvert is not installed (apt-get install jupyter-nbconvert python3-ipykernel)" >&2; exit 77; }
# The kernel's registration (77 when the tool is missing, 1 when registering fails).
"$root/notebooks/setup-kernel.sh" || exit $?

if [[ -z "${ANALYTICS_NB_CLI:-}" ]]; then
  "$root/analytics" --version >/dev/null || { echo "the analytics CLI does not build" >&2; exit 1; }
fi

export ANALYTICS_NB_DATA="${ANALYTICS_NB_DATA:-$(mktemp -d "${TMPDIR:-/tmp}/analytics-notebooks.XXXXXX")}"
out="$root/artifacts/notebooks"
mkdir -p "$out"
status=0
for nb in 0*.ipynb; do
  started=$SECONDS
  # --allow-errors keeps the compiler's and the cell's messages in the executed copy; failure is judged below.
  jupyter nbconvert --to notebook --execute --allow-errors --ExecutePreprocessor.timeout=240 \
    --ExecutePreprocessor.kernel_name=.net-csharp --output-dir "$out" "$nb" >"$out/${nb%.ipynb}.log" 2>&1
  if python3 - "$out/$nb" <<'PY'
import json, sys
try:
    cells = json.load(open(sys.argv[1]))["cells"]
except OSError as e:
    print("  not executed:", e); sys.exit(1)
bad = 0
for i, c in enumerate(cells):
    outs = c.get("outputs", [])
    if any(o.get("output_type") == "error" for o in outs):
        bad += 1
        print(f"  cell {i}: " + "".join(c["source"]).splitlines()[0])
        for o in outs:
            if o.get("output_type") == "stream" and o.get("name") == "stderr" or o.get("output_type") == "error":
                print("    " + ("".join(o.get("text", "")) or o.get("ename", "") + ": " + o.get("evalue", "")).strip()[:2000].replace("\n", "\n    "))
sys.exit(1 if bad else 0)
PY
  then
    echo "ok   $nb ($((SECONDS - started)) s)"
  else
    echo "FAIL $nb ($((SECONDS - started)) s); log: $out/${nb%.ipynb}.log"
    status=1
  fi
done
[[ "$ANALYTICS_NB_DATA" == "${TMPDIR:-/tmp}"/analytics-notebooks.* ]] && rm -rf "$ANALYTICS_NB_DATA"
exit $status
