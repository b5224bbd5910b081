import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Tiny models gain nothing from threads; 2 threads on a shared 2-core machine oversubscribe."""
