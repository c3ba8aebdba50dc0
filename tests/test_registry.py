import pytest

from torchpare.registry import BuildError, Registry, UnknownTypeError


def _make():
    reg = Registry("things")

    @reg.register(aliases=("Widget",))
    class WidgetThing:
        def __init__(self, size: int, color: str = "red"):
            self.size, self.color = size, color

    return reg, WidgetThing


def test_build_by_class_name_and_alias_gives_same_class():
    reg, cls = _make()
    assert reg.get("Widget") is cls and reg.get("WidgetThing") is cls
    obj = reg.build({"type": "Widget", "size": 3})
    assert isinstance(obj, cls) and obj.size == 3 and obj.color == "red"


def test_unknown_type_names_registry_and_closest_names():
    reg, _ = _make()
    with pytest.raises(UnknownTypeError, match=r"Registry 'things' has no type 'Widgit'.*did you mean 'Widget'"):
        reg.build({"type": "Widgit", "size": 1})


def test_unexpected_argument_names_type_and_argument():
    reg, _ = _make()
    with pytest.raises(BuildError, match=r"'WidgetThing'.*unexpected argument 'colour'.*did you mean 'color'"):
        reg.build({"type": "Widget", "size": 1, "colour": "blue"})


def test_missing_required_argument_is_named():
    reg, _ = _make()
    with pytest.raises(BuildError, match=r"missing required argument 'size'"):
        reg.build({"type": "Widget"})


def test_missing_type_key_lists_known_types():
    reg, _ = _make()
    with pytest.raises(BuildError, match=r"no 'type' key.*WidgetThing"):
        reg.build({"size": 1})


def test_duplicate_registration_raises():
    reg, _ = _make()
    with pytest.raises(ValueError, match="already registered"):

        @reg.register(aliases=("Widget",))
        class Other:
            pass


def test_default_args_are_overridden_by_config():
    reg, _ = _make()
    assert reg.build({"type": "Widget", "size": 2}, color="blue").color == "blue"
    assert reg.build({"type": "Widget", "size": 2, "color": "green"}, color="blue").color == "green"


def test_non_dict_passes_through():
    reg, _ = _make()
    sentinel = object()
    assert reg.build(sentinel) is sentinel


def _source_module(tmp_path, monkeypatch, name, body):
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_declared_source_is_imported_on_the_first_miss_and_only_until_the_name_is_found(tmp_path, monkeypatch):
    import sys

    reg = Registry("sourced things")
    for mod, cls in (("tp_src_a", "Alpha"), ("tp_src_b", "Beta")):
        _source_module(tmp_path, monkeypatch, mod, f"import test_registry_target as t\n@t.REG.register()\nclass {cls}: pass\n")
    target = type(sys)("test_registry_target")
    target.REG = reg
    monkeypatch.setitem(sys.modules, "test_registry_target", target)
    reg.add_source("tp_src_a")
    reg.add_source("tp_src_b")
    assert "tp_src_a" not in sys.modules  # declaring imports nothing
    assert reg.get("Alpha").__name__ == "Alpha"
    assert "tp_src_a" in sys.modules and "tp_src_b" not in sys.modules  # stopped once found
    assert reg.names() == ["Alpha", "Beta"]  # a full listing imports every source


def test_unknown_name_after_all_sources_lists_what_they_registered(tmp_path, monkeypatch):
    import sys

    reg = Registry("sourced widgets")
    _source_module(tmp_path, monkeypatch, "tp_src_c", "import test_registry_target2 as t\n@t.REG.register()\nclass Gamma: pass\n")
    target = type(sys)("test_registry_target2")
    target.REG = reg
    monkeypatch.setitem(sys.modules, "test_registry_target2", target)
    reg.add_source("tp_src_c")
    with pytest.raises(UnknownTypeError, match=r"no type 'Gama'.*did you mean 'Gamma'.*Known types: Gamma"):
        reg.get("Gama")


def test_unknown_name_without_a_near_match_says_to_import_the_defining_module():
    reg, _ = _make()
    with pytest.raises(UnknownTypeError, match=r"no type 'Zzz'; a type registers when the module defining it is "
                                               r"imported: import it \(or its package\) first\. Known types: WidgetThing"):
        reg.get("Zzz")
