from conftest import REPO


def test_plugin_protocol_is_a_byte_identical_copy_of_the_engines():
    engine = (REPO / "engine" / "groundbreak" / "protocol.py").read_bytes()
    plugin = (REPO / "plugin" / "protocol.py").read_bytes()
    assert plugin == engine, "copy engine/groundbreak/protocol.py to plugin/protocol.py"
