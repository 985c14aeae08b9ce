#!/usr/bin/env python3
"""Opens a run's report.html in headless Chromium, as a person would, and checks it.

  check_report_in_browser.py REPORT_HTML SCREENSHOT_PNG

Fails (exit 1, saying why) when:
  - Chromium logs any console message for the page (the report has no scripts, so any
    message is an error: a resource that failed, a parse error), or when a control page
    that calls console.error is *not* seen to (the check itself would be blind);
  - the page asks for anything on the network (Chromium runs with every host name
    unresolvable, and the DOM may name no http(s) URL but the SVG namespace);
  - the screenshot is blank: too few pixels off the background, too few colours, or no
    pixels of the training-loss line's colour;
  - the training-loss curve against step does not fall (its first value not above its last),
    or a chart the report must have is missing.
The screenshot is kept at SCREENSHOT_PNG for a person to look at.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from PIL import Image

CHARTS = ["loss-step", "loss-tokens", "lr", "grad-norm", "throughput", "mfu", "memory"]
TRAINING_COLOUR = (0x1F, 0x77, 0xB4)  # the training series (src/report/run_report.cpp)
WIDTH, HEIGHT = 1280, 1800


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("FAIL: no chromium on PATH (scripts/install-deps.sh installs Debian's)")


def run_chromium(args, url, profile):
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}",
           "--host-resolver-rules=MAP * ~NOTFOUND", *args, url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if r.returncode != 0:
        sys.exit(f"FAIL: chromium exited {r.returncode}:\n{r.stderr[-4000:]}")
    return r


def console_lines(stderr):
    return [line for line in stderr.splitlines() if "CONSOLE" in line]


def main():
    report, shot = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if os.path.exists(shot):
        os.remove(shot)
    with tempfile.TemporaryDirectory() as tmp:
        profile = os.path.join(tmp, "profile")
        # The control: a page that does log an error must be seen to.
        control = os.path.join(tmp, "control.html")
        with open(control, "w") as f:
            f.write("<!DOCTYPE html><title>control</title>"
                    "<script>console.error('deliberate control error')</script>")
        seen = console_lines(run_chromium(["--dump-dom"], "file://" + control, profile).stderr)
        if not any("deliberate control error" in line for line in seen):
            sys.exit("FAIL: the control page's console.error was not seen: console capture is blind")

        dom_run = run_chromium(["--dump-dom"], "file://" + report, profile)
        shot_run = run_chromium(["--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}",
                                 f"--screenshot={shot}"], "file://" + report, profile)
    errors = console_lines(dom_run.stderr) + console_lines(shot_run.stderr)
    if errors:
        sys.exit("FAIL: console messages from the report:\n" + "\n".join(errors))
    dom = dom_run.stdout

    urls = set(re.findall(r"https?://[^\s\"'<>)]+", dom)) - {"http://www.w3.org/2000/svg"}
    if urls:
        sys.exit(f"FAIL: the report names network URLs: {sorted(urls)}")
    for chart in CHARTS:
        if f'data-chart="{chart}"' not in dom:
            sys.exit(f"FAIL: no {chart} chart in the report")
    loss = dom[dom.index('data-chart="loss-step"'):]
    m = re.search(r'<polyline[^>]*data-series="training"[^>]*data-first="([^"]+)"[^>]*data-last="([^"]+)"',
                  loss[:loss.index("</svg>")])
    if not m:
        sys.exit("FAIL: no training series in the loss-step chart")
    first, last = float(m.group(1)), float(m.group(2))
    if not first > last:
        sys.exit(f"FAIL: the training loss does not fall: {first} -> {last}")

    img = Image.open(shot).convert("RGB")
    if img.size != (WIDTH, HEIGHT):
        sys.exit(f"FAIL: screenshot is {img.size}, not {(WIDTH, HEIGHT)}")
    pixels = list(img.getdata())
    background = pixels[0]
    off = sum(1 for p in pixels if p != background) / len(pixels)
    colours = len(set(pixels))
    near = sum(1 for p in pixels if all(abs(a - b) <= 24 for a, b in zip(p, TRAINING_COLOUR)))
    print(f"report: {report}\nscreenshot: {shot} ({WIDTH}x{HEIGHT}): {off:.1%} of pixels off the "
          f"background {background}, {colours} colours, {near} pixels of the training line's colour\n"
          f"training loss {first:.4f} -> {last:.4f}; {len(CHARTS)} charts; no console messages; no URLs")
    if off < 0.03 or colours < 16:
        sys.exit("FAIL: the screenshot is blank or nearly")
    if near < 200:
        sys.exit("FAIL: the training loss line is not drawn in the screenshot")
    print("PASS")


if __name__ == "__main__":
    main()
