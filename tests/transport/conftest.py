import random

import pytest


@pytest.fixture
def dds_domain() -> int:
    """A random DDS domain per test (the transport pins traffic to 127.0.0.1, multicast off)."""
    pytest.importorskip("cyclonedds")
    return random.randint(1, 200)
