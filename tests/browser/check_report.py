"""What headless Chromium made of `fedkit report --html`: its DOM and a screenshot.

  check_report.py DOM.html SHOT.png
"""

import re
import sys

from PIL import Image


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


dom = open(sys.argv[1], encoding="utf-8").read()
figures = re.findall(r'<figure class="plot" data-metric="([^"]+)">(.*?)</figure>', dom, re.S)
if len(figures) < 5:
    fail(f"{len(figures)} plots in the DOM, expected at least 5 (accuracy, loss, uplink, local mean, local min)")
for metric, body in figures:
    if "<svg" not in body:
        fail(f"plot {metric} has no SVG in the DOM")
    lines = re.findall(r"<polyline[^>]*points=\"([^\"]+)\"", body)
    rects = body.count("<rect")
    if metric != "local_eval" and sum(len(p.split()) >= 10 for p in lines) < 2:
        fail(f"plot {metric}: fewer than two curves of 10+ points in the DOM")
    if metric == "local_eval" and rects < 4:
        fail("the local-accuracy histogram has no bars")
for section in ("Final results", "Configurations", "Provenance", "Wall time per phase"):
    if section not in dom:
        fail(f"no section {section!r}")
diff_rows = dom.count('class="diff"')
if diff_rows != 2:
    fail(f"{diff_rows} highlighted config rows; the runs differ in algorithm.use and algorithm.mu")

# The screenshot: plotters' palette colours 0 and 1 (the two runs' curves) must be painted.
img = Image.open(sys.argv[2]).convert("RGB")
px = img.load()
w, h = img.size
counts = {"run 1 (230,25,75)": 0, "run 2 (60,180,75)": 0}
for y in range(0, h):
    for x in range(0, w):
        r, g, b = px[x, y]
        if abs(r - 230) < 30 and abs(g - 25) < 40 and abs(b - 75) < 40:
            counts["run 1 (230,25,75)"] += 1
        elif abs(r - 60) < 30 and abs(g - 180) < 40 and abs(b - 75) < 40:
            counts["run 2 (60,180,75)"] += 1
for k, n in counts.items():
    if n < 1500:
        fail(f"the screenshot has {n} pixels of {k}'s curve colour; the curves did not render")
print(f"ok report: {len(figures)} plots in Chromium's DOM; curve pixels in the screenshot: {counts}")
