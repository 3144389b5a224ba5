"""Model package format: validation errors, preprocessing per dtype, the card, torch-free import."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from groundbreak.errors import BandMismatchError, ModelError, OutputError
from groundbreak.model import (
    MODEL_JSON,
    WEIGHTS_FILE,
    default_model_path,
    file_sha256,
    load_model_package,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    from groundbreak.modelpack import make_random_package

    return make_random_package(tmp_path_factory.mktemp("pkg") / "random", seed=0, width=8)


@pytest.fixture()
def pkg_dir(pristine, tmp_path) -> Path:
    """A private copy of the random package that a test may damage."""
    dst = tmp_path / "pkg"
    shutil.copytree(pristine.root, dst)
    return dst


def edit(pkg_dir: Path, change) -> Path:
    """Apply ``change(properties)`` to model.json in place; returns the model.json path."""
    path = pkg_dir / MODEL_JSON
    doc = json.loads(path.read_text())
    change(doc["properties"])
    path.write_text(json.dumps(doc, indent=2))
    return path


def test_roundtrip_fields(pristine):
    pkg = load_model_package(pristine.root)
    assert pkg == pristine
    assert pkg.bands == ("red", "green", "blue", "nir")
    assert pkg.chip_size == 256 and pkg.cell_grid == 16 and pkg.chip_size_m == 512.0
    assert pkg.gsd == 2.0 and pkg.gsd_range == (1.5, 3.0)
    assert pkg.accepts_gsd(2.9) and not pkg.accepts_gsd(3.1)
    assert pkg.classes == ("background", "construction") and pkg.positive_class == "construction"
    assert pkg.scaling["uint16"] == (0.0, 1e-4) and pkg.scaling["uint8"] == (0.0, 1 / 255)
    assert pkg.demo is True
    assert pkg.architecture == "resnet18-w8"
    assert pkg.sha256 == file_sha256(pkg.weights_path)
    assert pkg.provenance()["sha256"] == pkg.sha256
    # Accepts the model.json path as well as the directory.
    assert load_model_package(pristine.root / MODEL_JSON) == pkg


def test_model_json_is_a_stac_mlm_item(pristine):
    import pystac

    doc = json.loads((pristine.root / MODEL_JSON).read_text())
    item = pystac.Item.from_dict(doc)
    props = item.properties
    assert any("/mlm/" in ext for ext in item.stac_extensions)
    assert props["mlm:framework"] == "pytorch" and props["mlm:accelerator"] == "amd64"
    inp = props["mlm:input"][0]
    assert inp["bands"] == ["red", "green", "blue", "nir"]
    assert inp["input"] == {
        "shape": [-1, 4, 256, 256],
        "dim_order": ["batch", "channel", "height", "width"],
        "data_type": "float32",
    }
    assert [v["type"] for v in inp["value_scaling"]] == ["z-score"] * 4
    assert {"classification", "semantic-segmentation"} <= set(props["mlm:tasks"])
    assert props["mlm:output"][1]["result"]["shape"] == [-1, 16, 16]
    assert item.assets["weights"].extra_fields["file:checksum"] == "1220" + pristine.sha256


def test_flat_json_without_stac_wrapper_is_accepted(pkg_dir):
    path = pkg_dir / MODEL_JSON
    path.write_text(json.dumps(json.loads(path.read_text())["properties"]))
    assert load_model_package(pkg_dir).bands == ("red", "green", "blue", "nir")


def test_missing_directory_and_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model_package(tmp_path / "nope")
    with pytest.raises(ModelError, match="has no model.json"):
        load_model_package(tmp_path)


def test_bad_json_says_line_and_column(pkg_dir):
    (pkg_dir / MODEL_JSON).write_text('{\n  "type": "Feature",\n  "properties": {,}\n}\n')
    with pytest.raises(ModelError, match=r"line 3, column 18") as err:
        load_model_package(pkg_dir)
    assert str(pkg_dir / MODEL_JSON) in str(err.value)
    assert err.value.hint


@pytest.mark.parametrize(
    "field",
    ["mlm:name", "mlm:architecture", "mlm:input", "mlm:output", "groundbreak:gsd", "groundbreak:dtype_scaling",
     "groundbreak:threshold", "groundbreak:demo", "groundbreak:weights", "groundbreak:cell_grid"],
)  # fmt: skip
def test_missing_field_is_named(pkg_dir, field):
    path = edit(pkg_dir, lambda p: p.pop(field))
    with pytest.raises(ModelError) as err:
        load_model_package(pkg_dir)
    assert f"'properties.{field}' is missing" in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("groundbreak:gsd", "2.0", "must be a number, got str"),
        ("groundbreak:demo", "yes", "must be true or false"),
        ("groundbreak:threshold", True, "must be a number, got bool"),
        ("groundbreak:threshold", 1.5, "within [0, 1]"),
        ("groundbreak:cell_grid", 15, "divisor of the chip size 256"),
        ("groundbreak:gsd_range", [2.5, 3.0], "min <= gsd"),
        ("mlm:framework", "tensorflow", "must be 'pytorch'"),
        ("groundbreak:positive_class", "road", "not one of the classes"),
    ],
)
def test_ill_typed_field_is_named(pkg_dir, field, value, expected):
    edit(pkg_dir, lambda p: p.__setitem__(field, value))
    with pytest.raises(ModelError, match=re.escape(expected)) as err:
        load_model_package(pkg_dir)
    assert field in str(err.value)


def _set_bands(bands, channels=None):
    def change(p):
        p["mlm:input"][0]["bands"] = bands
        p["mlm:input"][0]["input"]["shape"][1] = channels or len(bands)
        p["mlm:input"][0]["value_scaling"] = p["mlm:input"][0]["value_scaling"][:1]  # broadcast

    return change


@pytest.mark.parametrize("name", ["../../etc/x", "a/b", ".hidden", "", "x" * 65, "name with spaces"])
def test_unsafe_model_names_are_refused(pkg_dir, name):
    # mlm:name reaches cache and output file names: it must not be able to point anywhere else.
    edit(pkg_dir, lambda p: p.__setitem__("mlm:name", name))
    with pytest.raises(ModelError, match="mlm:name"):
        load_model_package(pkg_dir)


def test_runtime_validation_records(pkg_dir):
    record = {"passed": False, "f1": 0.0, "reference_f1": 0.966, "reference_runtime": "eager",
              "data": "demo world 7 (unseen)", "chips": 491, "seen_in_training": False}
    edit(pkg_dir, lambda p: p.__setitem__("groundbreak:runtime_validation", {"openvino-int8": record}))
    got = load_model_package(pkg_dir).runtime_validation["openvino-int8"]
    assert (got.runtime, got.passed, got.f1, got.reference_f1, got.chips) == ("openvino-int8", False, 0.0, 0.966, 491)
    assert got.seen_in_training is False
    assert got.describe() == "F1 0.000 against 0.966 (eager) on demo world 7 (unseen) (491 chips)"


@pytest.mark.parametrize(
    "records, expected",
    [
        ({"tensorrt": {"passed": True}}, "unknown runtime"),
        ({"openvino-int8": {"f1": 0.9}}, "passed' is missing"),
        ({"openvino-int8": {"passed": "no"}}, "must be true or false"),
        ({"openvino-int8": {"passed": True, "f1": "high"}}, "must be a number"),
        ({"openvino-int8": True}, "must be an object"),
    ],
)
def test_bad_runtime_validation_records_are_named(pkg_dir, records, expected):
    edit(pkg_dir, lambda p: p.__setitem__("groundbreak:runtime_validation", records))
    with pytest.raises(ModelError, match=re.escape(expected)) as err:
        load_model_package(pkg_dir)
    assert "groundbreak:runtime_validation" in str(err.value)


def test_unknown_band_name(pkg_dir):
    edit(pkg_dir, _set_bands(["red", "green", "blue", "swir"]))
    with pytest.raises(ModelError, match=r"mlm:input\[0\]\.bands.*'swir'.*not a known band") as err:
        load_model_package(pkg_dir)
    assert "nir" in err.value.hint


def test_bands_not_a_list(pkg_dir):
    edit(pkg_dir, lambda p: p["mlm:input"][0].__setitem__("bands", "red,green,blue,nir"))
    with pytest.raises(ModelError, match="must be a list of band names"):
        load_model_package(pkg_dir)


def test_duplicated_bands(pkg_dir):
    edit(pkg_dir, _set_bands(["red", "green", "red", "nir"]))
    with pytest.raises(ModelError, match="repeats red"):
        load_model_package(pkg_dir)


def test_band_count_disagrees_with_input_shape(pkg_dir):
    edit(pkg_dir, _set_bands(["red", "green", "blue"], channels=4))
    with pytest.raises(ModelError, match=r"declares 4 channels but bands lists 3"):
        load_model_package(pkg_dir)


def test_band_objects_are_accepted(pkg_dir):
    edit(pkg_dir, _set_bands([{"name": "red"}, {"name": "green"}, {"name": "blue"}, {"name": "nir"}]))
    assert load_model_package(pkg_dir).bands == ("red", "green", "blue", "nir")


def test_value_scaling_must_be_z_score_with_positive_std(pkg_dir):
    edit(pkg_dir, lambda p: p["mlm:input"][0]["value_scaling"][2].__setitem__("stddev", 0))
    with pytest.raises(ModelError, match=r"value_scaling\[2\]\.stddev' must be > 0"):
        load_model_package(pkg_dir)
    edit(pkg_dir, lambda p: p["mlm:input"][0]["value_scaling"][2].update(type="min-max", stddev=1))
    with pytest.raises(ModelError, match="must be 'z-score'"):
        load_model_package(pkg_dir)


def test_unknown_dtype_scaling(pkg_dir):
    edit(pkg_dir, lambda p: p["groundbreak:dtype_scaling"].__setitem__("uint12", {"offset": 0, "scale": 1}))
    with pytest.raises(ModelError, match="unknown dtype 'uint12'") as err:
        load_model_package(pkg_dir)
    assert "uint16" in err.value.hint


def test_sha256_mismatch_names_the_weights_file(pkg_dir):
    with open(pkg_dir / WEIGHTS_FILE, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="does not match groundbreak:weights.sha256") as err:
        load_model_package(pkg_dir)
    assert str(pkg_dir / WEIGHTS_FILE) in str(err.value)


def test_missing_weights_file(pkg_dir):
    (pkg_dir / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelError, match="weights file .* not found"):
        load_model_package(pkg_dir)


def test_weights_path_must_stay_inside_the_package(pkg_dir):
    edit(pkg_dir, lambda p: p["groundbreak:weights"].__setitem__("file", "../elsewhere.safetensors"))
    with pytest.raises(ModelError, match="inside the package directory"):
        load_model_package(pkg_dir)


def test_default_model_path(monkeypatch, tmp_path):
    monkeypatch.delenv("GROUNDBREAK_MODEL", raising=False)
    path = default_model_path()
    assert path == REPO / "resources" / "models" / "groundbreak-demo"
    monkeypatch.setenv("GROUNDBREAK_MODEL", str(tmp_path))
    assert default_model_path() == tmp_path


def test_load_none_uses_the_environment(monkeypatch, pristine):
    monkeypatch.setenv("GROUNDBREAK_MODEL", str(pristine.root))
    assert load_model_package(None).sha256 == pristine.sha256


# -- preprocessing -------------------------------------------------------------------------------


def _expected(reflectance: float, pkg) -> np.ndarray:
    return (reflectance - np.array(pkg.mean)) / np.array(pkg.std)


def test_preprocess_scales_by_dtype_then_z_scores_per_band(pristine):
    u8 = np.full((2, 4, 8, 8), 255, np.uint8)
    u16 = np.full((2, 4, 8, 8), 10000, np.uint16)
    f32 = np.ones((2, 4, 8, 8), np.float32)
    for chips in (u8, u16, f32):
        out = pristine.preprocess(chips, chips.dtype.name)
        assert out.dtype == np.float32 and out.shape == chips.shape
        np.testing.assert_allclose(out[0, :, 0, 0], _expected(1.0, pristine), rtol=1e-5)


def test_preprocess_uint16_is_not_divided_by_255(pristine):
    out = pristine.preprocess(np.full((1, 4, 2, 2), 255, np.uint16), "uint16")
    np.testing.assert_allclose(out[0, :, 0, 0], _expected(0.0255, pristine), rtol=1e-5)
    assert not np.allclose(out[0, :, 0, 0], _expected(1.0, pristine))


def test_preprocess_dtype_defaults_to_the_array_dtype(pristine):
    chips = np.arange(4 * 16, dtype=np.uint16).reshape(1, 4, 4, 4) * 50
    np.testing.assert_array_equal(pristine.preprocess(chips), pristine.preprocess(chips, "uint16"))


def test_preprocess_nodata_zero_is_not_special_cased(pristine):
    out = pristine.preprocess(np.zeros((1, 4, 2, 2), np.uint16), "uint16")
    np.testing.assert_allclose(out[0, :, 1, 1], _expected(0.0, pristine), rtol=1e-5)


def test_preprocess_unknown_dtype(pristine):
    with pytest.raises(ModelError, match="no scaling for scene dtype 'int16'") as err:
        pristine.preprocess(np.zeros((1, 4, 2, 2), np.int16), "int16")
    assert "groundbreak:dtype_scaling" in err.value.hint


def test_preprocess_band_mismatch(pristine):
    with pytest.raises(BandMismatchError, match=r"3 bands .* expects 4 bands \(red, green, blue, nir\)"):
        pristine.preprocess(np.zeros((1, 3, 2, 2), np.uint16), "uint16")


# -- writer and card -------------------------------------------------------------------------------


def test_demo_card_says_demo_and_has_the_sections(pristine):
    card = pristine.card_path.read_text()
    assert pristine.card_summary.startswith("**DEMO MODEL.**")
    for section in ("## Training data", "## Metrics", "## Intended use", "## Limits"):
        assert section in card
    assert pristine.sha256 in card


def test_non_demo_card_and_metrics(tmp_path):
    from groundbreak.modelpack import write_model_package
    from groundbreak.network import build_network

    net = build_network("resnet18-w8", 4, seed=3).eval()
    pkg = write_model_package(
        tmp_path / "real", net, model_id="gb-test", version="1.2.3", demo=False, threshold=0.6,
        training_data="Synthetic world v1", metrics={"f1": 0.81},
    )  # fmt: skip
    card = pkg.card_path.read_text()
    assert "DEMO" not in card and "Synthetic world v1" in card and "| f1 | 0.81 |" in card
    assert pkg.demo is False and pkg.threshold == 0.6 and pkg.version == "1.2.3"
    with pytest.raises(OutputError, match="not empty"):
        write_model_package(tmp_path / "real", net, model_id="x", version="1", demo=True, threshold=0.5)


def test_random_packages_are_reproducible(pristine, tmp_path):
    from groundbreak.modelpack import make_random_package

    again = make_random_package(tmp_path / "a", seed=0, width=8)
    other = make_random_package(tmp_path / "b", seed=1, width=8)
    assert again.sha256 == pristine.sha256
    assert other.sha256 != pristine.sha256


def test_import_groundbreak_model_does_not_import_torch():
    code = (
        "import sys, groundbreak, groundbreak.model; "
        "bad = [m for m in ('torch', 'safetensors.torch') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr

