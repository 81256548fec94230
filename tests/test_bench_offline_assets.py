"""benchmarks.offline_assets rewrites the dashboard's CDN links to local copies (npm is faked: no network in tests)."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is a folder of the checkout, not installed
from benchmarks import offline_assets  # noqa: E402


def _fake_pack(spec, workdir):
    path = workdir / (spec.replace("@", "-") + ".tgz")
    with tarfile.open(path, "w:gz") as tar:
        for member in {m for s, m in offline_assets.ASSETS.values() if s == spec}:
            data = f"/* {spec} {member} */".encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _page(urls):
    tags = "\n".join(f'<script src="{u}" integrity="sha512-abc==" crossorigin="anonymous"></script>' for u in urls)
    return f"<html><head>{tags}<script src=\"asv.js\"></script></head></html>"


def test_links_point_at_local_copies_without_integrity(tmp_path, monkeypatch):
    monkeypatch.setattr(offline_assets, "_pack", _fake_pack)
    monkeypatch.setattr(offline_assets.shutil, "which", lambda name: "/usr/bin/npm")
    (tmp_path / "index.html").write_text(_page(offline_assets.ASSETS), encoding="utf-8")
    assert offline_assets.localize(tmp_path)
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "https://" not in html and "integrity" not in html and 'src="asv.js"' in html
    for url, (spec, member) in offline_assets.ASSETS.items():
        local = tmp_path / "vendor" / f"{spec.split('@')[0]}-{member.rsplit('/', 1)[-1]}"
        assert local.read_text() == f"/* {spec} {member} */", url


def test_without_npm_the_pages_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(offline_assets.shutil, "which", lambda name: None)
    page = _page(offline_assets.ASSETS)
    (tmp_path / "index.html").write_text(page, encoding="utf-8")
    assert not offline_assets.localize(tmp_path)
    assert (tmp_path / "index.html").read_text(encoding="utf-8") == page


def test_rejects_a_folder_without_a_dashboard(tmp_path):
    with pytest.raises(ValueError, match="html_dir"):
        offline_assets.localize(tmp_path)


def test_file_openable_embeds_the_data_and_drops_crossorigin(tmp_path):
    page = ('<html><head><script src="vendor/jquery-jquery.min.js" crossorigin="anonymous" '
            'referrerpolicy="no-referrer" onerror="js_load_failure()"></script>\n'
            '<link rel="stylesheet" href="vendor/bootstrap-bootstrap.min.css" crossorigin="anonymous">\n'
            '<script language="javascript" type="text/javascript"\n        src="asv.js">\n</script></head></html>')
    (tmp_path / "index.html").write_text(page, encoding="utf-8")
    (tmp_path / "index.json").write_text('{"benchmarks": {}}', encoding="utf-8")
    (tmp_path / "graphs" / "summary").mkdir(parents=True)
    (tmp_path / "graphs" / "summary" / "b.json").write_text("[[1, 2.5]]", encoding="utf-8")
    assert offline_assets.file_openable(tmp_path) == 2
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "crossorigin" not in html and "referrerpolicy" not in html and 'onerror="js_load_failure()"' in html
    assert html.index("mhc_data.js") < html.index("vendor/mhc_offline.js") < html.index('src="asv.js"')
    data = (tmp_path / "mhc_data.js").read_text(encoding="utf-8")
    assert '"graphs/summary/b.json":[[1,2.5]]' in data and '"index.json":{"benchmarks":{}}' in data
    offline_assets.file_openable(tmp_path)  # idempotent: the scripts are inserted once
    assert (tmp_path / "index.html").read_text(encoding="utf-8").count("mhc_offline.js") == 1
