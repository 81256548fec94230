"""Make the published asv dashboard render without internet access.

`asv publish` writes an index.html that loads jQuery, flot, bootstrap and a few plugins from public CDNs, so on an
air-gapped cluster (or this project's CI machines) the page shows only "external dependencies failed to load".
This module fetches the same libraries from the npm registry with `npm pack` (same versions where the registry has
them), copies the files into `<html>/vendor/` and points every page's <script>/<link> at the local copies.

    python -m benchmarks.offline_assets benchmarks/html

Nothing is vendored into the repository: the files are fetched at publish time into the git-ignored html folder.
Without `npm` or a reachable registry the pages keep their CDN links and the function says so.

`file_openable` makes the page work when opened as a file (file:// URL), where Chromium refuses scripts marked
`crossorigin` and every XMLHttpRequest: it drops those attributes from local copies and embeds the dashboard's JSON
(index, graphs, regressions) in `mhc_data.js`, served to asv's `$.ajax` calls by `mhc_offline.js`; that shim also
draws markers on one-point series (a single commit draws no line, so the grid's thumbnails looked empty).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# CDN URL written by asv -> (npm package spec, path inside the package tarball)
ASSETS: dict[str, tuple[str, str]] = {
    "https://code.jquery.com/jquery-3.3.1.min.js": ("jquery@3.3.1", "package/dist/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js": ("flot@0.8.3", "package/jquery.flot.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js":
        ("flot@0.8.3", "package/jquery.flot.time.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js":
        ("flot@0.8.3", "package/jquery.flot.selection.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js":
        ("flot@0.8.3", "package/jquery.flot.categories.js"),
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js":
        ("flot-orderbars@1.0.0", "package/js/jquery.flot.orderBars.js"),
    # the registry has no 1.0.1; 1.1.3 keeps the same $.fn.stupidtable API
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js":
        ("stupid-table-plugin@1.1.3", "package/stupidtable.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js":
        ("blueimp-md5@2.19.0", "package/js/md5.min.js"),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js":
        ("bootstrap@3.1.1", "package/dist/js/bootstrap.min.js"),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css":
        ("bootstrap@3.1.1", "package/dist/css/bootstrap.min.css"),
}


def _pack(spec: str, workdir: Path) -> Path:
    out = subprocess.run(["npm", "pack", spec, "--silent"], cwd=workdir, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip().splitlines()
    return workdir / out[-1]


def localize(html_dir: Path) -> bool:
    """Fetch the assets and rewrite the pages under `html_dir`; False (pages untouched) when npm is unavailable."""
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").is_file():
        raise ValueError(f"html_dir must hold an asv dashboard (index.html), got {html_dir}")
    if shutil.which("npm") is None:
        print("offline_assets: npm not found; the dashboard keeps its CDN links (needs internet to render)")
        return False
    vendor = html_dir / "vendor"
    vendor.mkdir(exist_ok=True)
    local: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tarballs: dict[str, Path] = {}
        try:
            for url, (spec, member) in ASSETS.items():
                if spec not in tarballs:
                    tarballs[spec] = _pack(spec, Path(tmp))
                with tarfile.open(tarballs[spec]) as tar:
                    data = tar.extractfile(member)
                    if data is None:
                        raise FileNotFoundError(f"{member} in {spec}")
                    name = f"{spec.split('@')[0]}-{Path(member).name}"
                    (vendor / name).write_bytes(data.read())
                local[url] = f"vendor/{name}"
        except (subprocess.SubprocessError, OSError, KeyError) as e:
            print(f"offline_assets: could not fetch the dashboard's libraries ({e}); keeping the CDN links")
            return False
    for page in html_dir.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        for url, path in local.items():
            # the CDN's subresource-integrity hash names the CDN's file; the local copy comes from the npm tarball
            text = re.sub(rf'"{re.escape(url)}"(\s+integrity="[^"]*")?', f'"{path}"', text)
        page.write_text(text, encoding="utf-8")
    print(f"offline_assets: {len(local)} libraries copied to {vendor}; the dashboard renders offline")
    return True


# Served over HTTP the shim only adds the one-point markers; opened as a file it answers asv's $.ajax from the data
# embedded in mhc_data.js (anything not embedded fails, as a missing file would).
SHIM = """(function ($) {
  var files = window.MHC_ASV_FILES || {};
  var ajax = $.ajax;
  if (window.location.protocol === "file:") {
    $.ajax = function (options) {
      var url = (typeof options === "string" ? options : options.url).split("?")[0];
      var key = url.split("/").map(decodeURIComponent).join("/");
      var answer = $.Deferred();
      setTimeout(function () {
        if (Object.prototype.hasOwnProperty.call(files, key)) { answer.resolve(files[key], "success", {}); }
        else { answer.reject({status: 404}, "error", "not embedded: " + key); }
      }, 0);
      return answer.promise();
    };
  }
  // one commit draws no line: a bar in the grid's thumbnails, a marker in the graphs
  var plot = $.plot;
  $.plot = function (target, series, options) {
    var thumbnail = $(target).hasClass("benchmark-plot");
    series = (series || []).map(function (s) {
      var data = $.isArray(s) ? s : s.data;
      var points = (data || []).filter(function (p) { return p && p[1] !== null; });
      if (points.length === 1) {
        s = $.extend({}, $.isArray(s) ? {data: s} : s, thumbnail ?
          {bars: {show: true, align: "center", barWidth: 0.8, fill: 0.6}, lines: {show: false}} :
          {points: {show: true, radius: 4}});
        if (thumbnail) {  // a narrow bar in the middle, below the top edge
          options = $.extend(true, {}, options, {xaxis: {min: points[0][0] - 3, max: points[0][0] + 3},
                                                 yaxis: {max: 1.25 * points[0][1]}});
        }
      }
      return s;
    });
    return plot.call(this, target, series, options);
  };
  $.extend($.plot, plot);

  // A benchmark page without a parameter choice opens on the first combination that has data, with the lines
  // (values of the first parameter) that have data there: no blank chart, no legend entry for what did not run.
  function withData(hash) {
    var m = /^#([^?]+)$/.exec(hash);
    var index = files["index.json"];
    var bench = m && index && index.benchmarks[decodeURIComponent(m[1])];
    if (!bench || !bench.params || bench.params.length < 2) { return null; }
    var name = decodeURIComponent(m[1]), params = bench.params, names = bench.param_names;
    var sizes = params.map(function (v) { return v.length; });
    function combo(i) {  // flat index -> value index per parameter (the last one varies fastest)
      var out = [];
      for (var k = sizes.length - 1; k >= 0; --k) { out[k] = i % sizes[k]; i = Math.floor(i / sizes[k]); }
      return out;
    }
    var found = null, lines = {};
    Object.keys(files).forEach(function (key) {
      if (key.indexOf("graphs/summary/") === 0 || key.slice(-(name.length + 6)) !== "/" + name + ".json") { return; }
      files[key].forEach(function (point) {
        (point[1] || []).forEach(function (v, i) {
          if (v === null || v === undefined) { return; }
          var c = combo(i);
          if (found === null) { found = c; }
          if (c.slice(1).join() === found.slice(1).join()) { lines[c[0]] = true; }
        });
      });
    });
    if (found === null) { return null; }
    var query = Object.keys(lines).sort(function (a, b) { return a - b; }).map(function (j) {
      return "p-" + encodeURIComponent(names[0]) + "=" + encodeURIComponent(params[0][j]);
    });
    for (var k = 1; k < names.length; ++k) {
      query.push("p-" + encodeURIComponent(names[k]) + "=" + encodeURIComponent(params[k][found[k]]));
    }
    return "#" + m[1] + "?" + query.join("&");
  }
  function chooseParams() {
    var better = withData(window.location.hash);
    if (better) { history.replaceState(null, "", better); }
  }
  window.addEventListener("hashchange", chooseParams);  // registered before asv's own handler: runs first
  chooseParams();
})(jQuery);
"""
DATA_FILES = ("info.json", "index.json", "regressions.json")


def file_openable(html_dir: Path) -> int:
    """Make the dashboard work from a file:// URL (see the module docstring); the number of embedded JSON files."""
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").is_file():
        raise ValueError(f"html_dir must hold an asv dashboard (index.html), got {html_dir}")
    files: dict[str, object] = {"swallow.ico": ""}  # asv fetches it to tell "no data" from "server down"
    for path in [html_dir / n for n in DATA_FILES] + sorted((html_dir / "graphs").rglob("*.json")):
        if path.is_file():
            files[path.relative_to(html_dir).as_posix()] = json.loads(path.read_text(encoding="utf-8"))
    vendor = html_dir / "vendor"
    vendor.mkdir(exist_ok=True)
    (vendor / "mhc_offline.js").write_text(SHIM, encoding="utf-8")
    (html_dir / "mhc_data.js").write_text(f"window.MHC_ASV_FILES = {json.dumps(files, separators=(',', ':'))};\n",
                                          encoding="utf-8")
    tags = '<script src="mhc_data.js"></script>\n    <script src="vendor/mhc_offline.js"></script>\n    '
    for page in html_dir.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        # local copies: file:// pages refuse scripts and styles marked crossorigin
        text = re.sub(r'<(?:script|link)\b[^>]*="vendor/[^>]*>',
                      lambda m: re.sub(r'\s+(?:crossorigin|referrerpolicy)(?:="[^"]*")?', "", m.group(0)), text)
        if "mhc_offline.js" not in text:
            text = re.sub(r'<script[^>]*src="asv\.js"', lambda m: tags + m.group(0), text, count=1)
        page.write_text(text, encoding="utf-8")
    return len(files) - 1


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "html")
    ok = localize(target)
    print(f"offline_assets: {file_openable(target)} data files embedded; index.html opens from the file system")
    sys.exit(0 if ok else 1)
