#!/usr/bin/env bash
# Registers the .NET Interactive C# kernel with jupyter for the current user, creating the folders
# it needs (dotnet-interactive refuses to create the kernels folder itself). Idempotent.
#   notebooks/setup-kernel.sh
# Needs jupyter (Debian: jupyter-nbconvert python3-ipykernel) and the dotnet-interactive tool on PATH,
# in /opt/dotnet-tools (where .ci/run installs it) or in ~/.dotnet/tools.
# Exit 77 (and one line saying why) when one of those is missing; 1 when registration fails.
set -euo pipefail
export PATH="$PATH:/opt/dotnet-tools:$HOME/.dotnet/tools"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_INTERACTIVE_CLI_TELEMETRY_OPTOUT=1
command -v jupyter >/dev/null ||
  { echo "setup-kernel: jupyter is not installed (apt-get install jupyter-nbconvert python3-ipykernel)" >&2; exit 77; }
command -v dotnet-interactive >/dev/null ||
  { echo "setup-kernel: the .NET Interactive kernel is not installed (dotnet tool install --tool-path /opt/dotnet-tools Microsoft.dotnet-interactive --version 1.0.712001)" >&2; exit 77; }
# jupyter's per-user data folder (JUPYTER_DATA_DIR, else ~/.local/share/jupyter); Debian's jupyter has
# no `kernelspec` subcommand, so presence is checked on the file itself.
data="$(jupyter --data-dir)"
spec="$data/kernels/.net-csharp/kernel.json"
if [[ -f "$spec" ]]; then exit 0; fi
mkdir -p "$data/kernels"
if ! out="$(dotnet-interactive jupyter install 2>&1)"; then
  echo "setup-kernel: dotnet-interactive jupyter install failed: $out" >&2
  exit 1
fi
[[ -f "$spec" ]] || { echo "setup-kernel: no kernelspec at $spec after installing: $out" >&2; exit 1; }
