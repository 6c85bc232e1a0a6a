import pytest

from dstlab.errors import ConfigError
from dstlab.registry import Registry


def test_register_get_and_names_sorted():
    reg: Registry[int] = Registry("thing")
    reg.register("b")(2)

    @reg.register("a")
    def a():
        return 1

    assert reg.get("b") == 2 and reg.get("a") is a
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"]
    assert "a" in reg and "c" not in reg and len(reg) == 2


def test_unknown_name_is_one_sentence_listing_known_names():
    reg: Registry[int] = Registry("model")
    reg.register("resnet56")(1)
    reg.register("lenet5")(2)
    with pytest.raises(ConfigError) as info:
        reg.get("resnet5")
    msg = str(info.value)
    assert "unknown model 'resnet5'" in msg and "did you mean 'resnet56'" in msg
    assert "lenet5, resnet56" in msg and msg.count(".") == 1 and "\n" not in msg


def test_registering_a_name_twice_fails():
    reg: Registry[int] = Registry("thing")
    reg.register("x")(1)
    with pytest.raises(ValueError, match="twice"):
        reg.register("x")(2)
