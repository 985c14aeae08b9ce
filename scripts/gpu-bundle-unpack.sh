#!/usr/bin/env bash
# Copied into every bundle as unpack.sh (scripts/gpu-bundle.sh), where files over 256 KiB
# travel xz-compressed. usage: unpack.sh DEST: makes DEST a runnable copy of the bundle
# (its .xz files unpacked, with xz, or Python's lzma module where there is no xz) and
# prints DEST's absolute path. The bundle itself is left as it is, so it can travel again.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
dest=${1:?usage: unpack.sh DEST}
# Replaces only an earlier unpacked bundle, never another folder.
if [ -e "$dest" ] && [ ! -f "$dest/env.sh" ]; then
  echo "unpack.sh: $dest exists and is not an unpacked bundle; not replacing it" >&2
  exit 1
fi
rm -rf "$dest"
mkdir -p "$dest"
cp -a "$src/." "$dest/"
find "$dest" -type f -name '*.xz' | while read -r f; do
  if command -v xz >/dev/null; then
    xz -d "$f"
  else
    python3 -c 'import lzma, os, shutil, sys
f = sys.argv[1]
with lzma.open(f) as i, open(f[:-3], "wb") as o: shutil.copyfileobj(i, o)
shutil.copymode(f, f[:-3]); os.remove(f)' "$f"
  fi
done
cd "$dest" && pwd
