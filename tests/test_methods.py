"""The method registry (onnx_lbyl.methods): one object per --method value, chosen once."""
import pytest

from onnx_lbyl.errors import InputError
from onnx_lbyl.methods import DEFAULT_METHOD, METHOD_HELP, METHODS, method_named
from onnx_lbyl.options import CompressOptions


def test_registry_order_is_the_cli_choices():
    import click
    from onnx_lbyl.cli import compress_command
    choice = next(p for p in compress_command.params if p.name == "method").type
    assert isinstance(choice, click.Choice)
    assert list(choice.choices) == list(METHODS) == [
        "moments-greedy", "lbyl", "merge", "prune", "lbyl-mean", "merge-mean", "prune-mean", "moments",
        "lbyl-authors", "lbyl-auto"]
    assert DEFAULT_METHOD == "moments-greedy" and DEFAULT_METHOD in METHODS
    assert set(METHOD_HELP) == set(METHODS)
    assert all(METHODS[name].help == text for name, text in METHOD_HELP.items())


def test_each_mean_variant_uses_its_base_coefficients():
    variants = [m for m in METHODS.values() if m.name.endswith("-mean")]
    assert [m.name for m in variants] == ["lbyl-mean", "merge-mean", "prune-mean"]
    for method in variants:
        base = METHODS[method.base]
        assert method.name == base.name + "-mean"
        assert method.mean_corrected and not base.mean_corrected and base.base is None
        assert method.chain_coefficients is base.chain_coefficients
    assert all(m.base is None for m in METHODS.values() if not m.name.endswith("-mean"))


def test_what_each_method_asks_for():
    def names(flag):
        return [m.name for m in METHODS.values() if getattr(m, flag)]
    assert names("needs_statistics") == ["moments-greedy", "lbyl-mean", "merge-mean", "prune-mean", "moments",
                                         "lbyl-auto"]
    assert names("needs_covariance") == ["moments-greedy", "moments", "lbyl-auto"]
    assert names("prunes_groups") == ["moments-greedy", "prune", "prune-mean", "moments"]
    assert names("compensates_groups") == ["moments-greedy", "moments"]
    assert names("greedy_selection") == ["moments-greedy"]
    assert names("lambdas_per_layer") == ["lbyl-auto"]
    # a chain's S comes from the criterion's split unless the method solves it with its choice
    for m in METHODS.values():
        assert (m.chain_coefficients is None) == (m.greedy_selection or m.lambdas_per_layer)


@pytest.mark.parametrize("name", ["magic", "", "LBYL", None])
def test_unknown_name_is_a_one_line_input_error(name):
    expected = f"unknown method {name!r}; choose from {', '.join(METHODS)}"
    with pytest.raises(InputError) as raised:
        method_named(name)
    assert str(raised.value) == expected and "\n" not in expected
    with pytest.raises(InputError) as raised:
        CompressOptions(method=name).check()
    assert str(raised.value) == expected


def test_options_resolve_their_method_once_named():
    options = CompressOptions(method="lbyl-mean").check()
    assert options.method == "lbyl-mean" and options.method_spec is METHODS["lbyl-mean"]
    assert options.to_dict()["method"] == "lbyl-mean"
