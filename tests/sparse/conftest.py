import pytest

from dstlab.sparse import kernels


@pytest.fixture(params=["numba", "torch"])
def kernel_path(request, monkeypatch):
    """Runs a test on the numba kernels and on their PyTorch fallbacks."""
    if request.param == "numba" and not kernels.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    if request.param == "torch":
        monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    return request.param
