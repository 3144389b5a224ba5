"""What the engine's ``info`` answer and error problems become in the dock (no QGIS needed)."""

from __future__ import annotations

from plugin.scenes import Problem, format_error, parse_info, problems_of, run_specs, short_bands

INFO = {
    "scenes": [
        {"id": "a", "path": "/s/a_20200101.tif", "date": "2020-01-01", "bands": [{"index": 1, "name": "red"},
         {"index": 2, "name": "green"}, {"index": 3, "name": "blue"}, {"index": 4, "name": "nir"}],
         "resolution": [2.5, 2.5], "crs": {"epsg": 32614}, "problems": [], "usable": True,
         "fit": {"resolution_m": 2.5, "model_gsd": 2.0, "resampled": True}},
        {"id": "b", "path": "/s/b.tif", "date": None, "bands": [{"index": 1, "name": "red"}],
         "resolution": [300, 300], "usable": False, "fit": None,
         "problems": [{"code": "band_mismatch", "message": "no nir band", "hint": "use 4-band imagery"},
                      {"code": "missing_date", "message": "no date", "hint": "name it YYYYMMDD"}]},
    ],
    "skipped": [{"path": "/s/a_20200101_mask.tif", "reason": "sidecar mask"}],
}


def test_info_becomes_entries_with_problems_and_skipped_files():
    entries, skipped = parse_info(INFO, "/s")
    a, b = entries
    assert a.usable and a.epsg == 32614 and a.bands == ("red", "green", "blue", "nir")
    assert a.line() == "a_20200101.tif · 2020-01-01 · R,G,B,NIR · 2.5 m → resampled to 2.0 m"
    assert b.usable is False and b.line().endswith("— 2 problems") and "no date" in b.line()
    assert "Hint: use 4-band imagery" in b.details() and "Cannot be used" in b.details()
    assert [(s.path, s.reason) for s in skipped] == [("/s/a_20200101_mask.tif", "sidecar mask")]
    assert short_bands(["red", "swir16"]) == "R,swir16"


def test_a_trimmed_folder_hands_on_its_remaining_files():
    entries, _ = parse_info(INFO, "/s")
    assert run_specs(entries, {}) == ["/s"]
    assert run_specs(entries[1:], {"/s": 1}) == ["/s/b.tif"]


def test_an_error_lists_every_problem_with_its_hint():
    error = {"code": "scenes_unusable", "message": "2 problems", "hint": "h1; h2", "problems": [
        {"code": "band_mismatch", "scene_id": "b", "path": "/s/b.tif", "message": "no nir band", "hint": "h1"},
        {"code": "missing_date", "scene_id": "b", "path": "/s/b.tif", "message": "no date", "hint": "h2"}]}
    text = format_error("Plan failed", error)
    assert text.splitlines()[0] == "Plan failed: 2 problems"
    assert "• b: no nir band\n    Hint: h1" in text and "• b: no date\n    Hint: h2" in text
    single = format_error("Run failed", {"code": "file_missing", "message": "x.tif is missing", "hint": "check"})
    assert single == "Run failed: x.tif is missing\nHint: check"
    assert problems_of({"message": "m"}) == [Problem(code="", message="m", hint="")]
