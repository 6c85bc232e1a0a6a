import pytest


@pytest.fixture
def restore_criteria():
    """Unregisters every pruning and growth criterion a test registers, so no name leaks into
    the next test's known criteria."""
    from dstlab.topology.criteria import GROWERS, PRUNERS

    before = {registry: set(registry.names()) for registry in (PRUNERS, GROWERS)}
    yield
    for registry, names in before.items():
        for name in set(registry.names()) - names:
            registry.unregister(name)
