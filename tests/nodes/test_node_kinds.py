"""Every graph-file node kind resolves to a NodeCore subclass with a Params dataclass."""
import dataclasses

import pytest

from latentstack.nodes import NODE_KINDS, NodeCore, node_class


@pytest.mark.parametrize("kind", sorted(NODE_KINDS))
def test_node_kind_resolves(kind):
    cls = node_class(kind)
    assert issubclass(cls, NodeCore) and dataclasses.is_dataclass(cls.Params)


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown node kind"):
        node_class("nope")
