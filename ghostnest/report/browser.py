"""Does the report page render in a real browser? Headless Chromium from the distribution's packages.

``check_page(index_html)`` opens the page in headless Chromium (``chromium`` from Debian's packages:
``apt-get install -y chromium``; or the binary named by ``$GHOSTNEST_CHROMIUM``) and returns what is wrong, ``[]``
when nothing is:

- an image that does not load (a missing or broken file: ``naturalWidth`` 0 after the load event);
- a script error (an uncaught exception or a failed script load; the report itself carries no script);
- an empty section: a ``<section>`` with nothing but its heading (no text, image or table);
- a page that never finishes loading.

How: a copy of the page, beside it (so that its relative image paths resolve), gets a probe script first in its
``<head>`` that records errors and, on the load event, the checks above, as JSON in a ``<pre>``; Chromium's
``--dump-dom`` prints the DOM after loading, and the JSON is read from it. The browser runs with a fresh, temporary
profile, no sandbox (containers run as root), no GPU and no network services. ``python -m
ghostnest.report.browser DIR/index.html`` runs the check from the command line.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--virtual-time-budget=15000")
RESULT_ID = "ghostnest-browser-check"

PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t.tagName === "IMG") { return; }  // images are checked on load, below
    if (t && t !== window && (t.src || t.href)) { errors.push("resource failed to load: " + (t.src || t.href)); }
    else { errors.push("script error: " + e.message + " (" + (e.filename || "inline") + ":" + e.lineno + ")"); }
  }, true);
  window.addEventListener("unhandledrejection", function (e) { errors.push("unhandled rejection: " + e.reason); });
  window.addEventListener("load", function () {
    var out = {errors: errors, missing_images: [], empty_sections: [], images: 0, sections: 0};
    Array.prototype.forEach.call(document.images, function (img) {
      out.images += 1;
      if (!img.complete || img.naturalWidth === 0) { out.missing_images.push(img.getAttribute("src")); }
    });
    Array.prototype.forEach.call(document.querySelectorAll("section"), function (s) {
      out.sections += 1;
      var clone = s.cloneNode(true);
      Array.prototype.forEach.call(clone.querySelectorAll("h1,h2,h3,h4"), function (h) { h.remove(); });
      var hasText = clone.textContent.replace(/\\s+/g, "").length > 0;
      var hasMedia = clone.querySelector("img,table,svg,canvas,figure") !== null;
      if (!hasText && !hasMedia) {
        var h = s.querySelector("h1,h2,h3,h4");
        out.empty_sections.push(s.id || (h ? h.textContent : "(untitled section)"));
      }
    });
    var pre = document.createElement("pre");
    pre.id = "RESULT_ID";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  });
})();
</script>""".replace("RESULT_ID", RESULT_ID)


def find_chromium() -> str | None:
    """The Chromium binary: ``$GHOSTNEST_CHROMIUM``, else the first of :data:`CHROMIUM_NAMES` on the PATH."""
    env = os.environ.get("GHOSTNEST_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _with_probe(page: str) -> str:
    match = re.search(r"<head[^>]*>", page, flags=re.IGNORECASE)
    if match:
        return page[:match.end()] + PROBE + page[match.end():]
    return PROBE + page


def check_page(index_html: str | Path, chromium: str | None = None, timeout: float = 120.0) -> list[str]:
    """What is wrong with ``index_html`` rendered in headless Chromium (``[]``: nothing). ``OSError`` when
    Chromium is not installed or cannot start."""
    page = Path(index_html).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"{page} does not exist; write it with ghostnest report first")
    binary = chromium or find_chromium()
    if binary is None:
        raise FileNotFoundError("Chromium is not installed: apt-get install -y chromium (or set GHOSTNEST_CHROMIUM)")
    fd, probe = tempfile.mkstemp(prefix=".browser-check-", suffix=".html", dir=page.parent)
    os.close(fd)
    probe = Path(probe)
    try:
        probe.write_text(_with_probe(page.read_text(encoding="utf-8")), encoding="utf-8")
        with tempfile.TemporaryDirectory(prefix="ghostnest-chromium-") as profile:
            cmd = [binary, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", probe.as_uri()]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return [f"Chromium did not finish rendering {page.name} within {timeout:.0f} s"]
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(rf'<pre id="{RESULT_ID}">(.*?)</pre>', proc.stdout, flags=re.DOTALL)
    if not found:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [f"the page did not finish loading in Chromium (exit {proc.returncode}: {err[:200]})"]
    import html

    result = json.loads(html.unescape(found.group(1)))
    problems = [e for e in result["errors"]]
    problems += [f"image does not load: {src}" for src in result["missing_images"]]
    problems += [f"empty section: {name}" for name in result["empty_sections"]]
    if result["sections"] == 0:
        problems.append("the page has no sections")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ghostnest.report.browser DIR/index.html", file=sys.stderr)
        return 2
    try:
        problems = check_page(args[0])
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"problem: {p}")
    print(f"{args[0]}: {'renders cleanly' if not problems else f'{len(problems)} problem(s)'} in headless Chromium")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
