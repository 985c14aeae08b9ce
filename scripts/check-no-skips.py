#!/usr/bin/env python3
"""Fails when ctest reported a test as skipped (Not Run) outside the `gpu` label.

usage: check-no-skips.py BUILD_DIR [JUNIT_XML]

Reads the JUnit file that `ctest --output-junit` wrote (default BUILD_DIR/ctest-junit.xml)
and the labels of every test (`ctest --show-only=json-v1` in BUILD_DIR). A skipped test is
a hole in the suite: gtest's SKIPPED (a GTEST_SKIP, or a fatal failure in
SetUpTestSuite), a missing executable, an unmet requirement. Allowed:
  - tests labelled gpu (no GPU on CPU-only hosts; tests/gpu/gpu_fixture.h says why);
  - CheckpointFaults.FullDiskDuringASave_SmallTmpfs, only where mounting a tmpfs was
    refused (its skip message says "cannot mount a tmpfs here"; the file-size-limit case
    covers the same path).
Exit 0 when nothing else skipped, 1 otherwise (each offending test named), 2 when the
inputs are missing.
"""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

ALLOWED_LABELS = {"gpu"}
TMPFS_TEST = "CheckpointFaults.FullDiskDuringASave_SmallTmpfs"
TMPFS_REASON = "cannot mount a tmpfs here"


def labels_by_test(build_dir):
    out = subprocess.run(["ctest", "--show-only=json-v1"], cwd=build_dir, check=True,
                         capture_output=True, text=True).stdout
    labels = {}
    for t in json.loads(out)["tests"]:
        found = []
        for p in t.get("properties", []):
            if p.get("name") == "LABELS":
                found = p.get("value", [])
        labels[t["name"]] = set(found)
    return labels


def main(build_dir, junit):
    if not os.path.isfile(junit):
        print(f"check-no-skips: no JUnit report at {junit} (did ctest run with --output-junit?)")
        return 2
    labels = labels_by_test(build_dir)
    bad, allowed, total = [], 0, 0
    for case in ET.parse(junit).getroot().iter("testcase"):
        total += 1
        name = case.get("name")
        skipped = case.get("status") in ("notrun", "disabled") or case.find("skipped") is not None
        if not skipped:
            continue
        output = "".join(e.text or "" for e in case.iter("system-out"))
        if labels.get(name, set()) & ALLOWED_LABELS:
            allowed += 1
        elif name == TMPFS_TEST and TMPFS_REASON in output:
            allowed += 1
            print(f"check-no-skips: {name} skipped, allowed: tmpfs mounting refused here")
        else:
            reason = next((l.strip() for l in output.splitlines() if "SKIPPED" in l or "Skipped" in l
                           or "skip" in l.lower()), "")
            bad.append(f"{name} [{', '.join(sorted(labels.get(name, []))) or 'no label'}] {reason}")
    if bad:
        print(f"check-no-skips: FAIL: {len(bad)} of {total} tests were skipped outside the gpu label "
              "(a skip hides a failure or a missing dependency; see docs/testing.md):")
        for b in bad:
            print("  " + b)
        return 1
    print(f"check-no-skips: ok: {total} tests, {allowed} skipped where allowed (gpu label, tmpfs)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    build = sys.argv[1]
    sys.exit(main(build, sys.argv[2] if len(sys.argv) == 3 else os.path.join(build, "ctest-junit.xml")))
