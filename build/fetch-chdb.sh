#!/usr/bin/env bash
# Fetches the pinned embedded ClickHouse engine (libchdb.so) once into a cache outside the repo.
# Version and checksum come from build/chdb.props, the single place they are pinned.
#   ANALYTICS_CHDB_HOME  cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/analytics/chdb)
# Prints the path of libchdb.so on success. Safe to run concurrently (lock + atomic rename).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
props="$here/chdb.props"
prop() { sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$props"; }
package="$(prop ChdbPackage)"; version="$(prop ChdbVersion)"; sha="$(prop ChdbSha256)"
root="${ANALYTICS_CHDB_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/analytics/chdb}"
dest="$root/$version"
lib="$dest/libchdb.so"
if [[ -f "$lib" && -f "$dest/.verified" ]]; then echo "$lib"; exit 0; fi

mkdir -p "$root"
exec 9>"$root/.fetch.lock"
flock 9
if [[ -f "$lib" && -f "$dest/.verified" ]]; then echo "$lib"; exit 0; fi

command -v npm >/dev/null || { echo "fetch-chdb: npm is required to fetch $package@$version" >&2; exit 1; }
work="$(mktemp -d "$root/.tmp.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "fetch-chdb: fetching $package@$version (~170 MB, once) into $dest" >&2
(cd "$work" && npm pack --silent "$package@$version" >/dev/null)
tarball="$(ls "$work"/*.tgz)"
actual="$(sha256sum "$tarball" | cut -d' ' -f1)"
if [[ "$actual" != "$sha" ]]; then
  echo "fetch-chdb: checksum mismatch for $package@$version: expected $sha, got $actual" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work" package/libchdb.so
mkdir -p "$work/out"
mv "$work/package/libchdb.so" "$work/out/libchdb.so"
echo "$sha" > "$work/out/.verified"
rm -rf "$dest"
mv "$work/out" "$dest"
echo "$lib"
