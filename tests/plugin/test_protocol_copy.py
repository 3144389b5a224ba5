"""The plugin carries byte-identical copies of the engine's stdlib-only shared modules."""

import pytest
from conftest import REPO


@pytest.mark.parametrize("name", ["protocol.py", "names.py"])
def test_plugin_copy_is_byte_identical_to_the_engines(name):
    engine = (REPO / "engine" / "groundbreak" / name).read_bytes()
    plugin = (REPO / "plugin" / name).read_bytes()
    assert plugin == engine, "copy engine/groundbreak/%s to plugin/%s" % (name, name)


def test_the_plugin_retypes_no_runtime_name():
    """Runtime names come from plugin/names.py only (settings_dialog once lacked openvino-bf16)."""
    from plugin import names

    for path in (REPO / "plugin").glob("*.py"):
        # engine_status names the openvino *package*, setup_engine the engine's pip extras ([openvino])
        if path.name in ("names.py", "engine_status.py", "setup_engine.py"):
            continue
        text = path.read_text()
        for runtime in names.RUNTIMES:
            assert '"%s"' % runtime not in text and "'%s'" % runtime not in text, (path.name, runtime)
