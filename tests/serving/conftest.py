from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("websockets")
pytest.importorskip("msgpack")


def tiny_vla():
    """A small untrained VLA over the MetaWorld MT6 vocabulary (fast on one CPU thread)."""
    from latentstack.policies.vla import VLAPolicy, WordTokenizer, get_vla_config
    from latentstack.sim.suites import load_suite

    suite = load_suite("metaworld_mt6")
    vocab = tuple(WordTokenizer.build([t.instruction for t in suite.tasks]).vocab)
    return VLAPolicy(get_vla_config("vla_tiny", vocab=vocab)).eval()


@pytest.fixture(scope="session")
def _vla_model():
    return tiny_vla()


@pytest.fixture()
def vla(_vla_model):
    """The tiny VLA, with one torch thread for the test (restored after it: other suites keep their setting)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _vla_model
    torch.set_num_threads(n)


@pytest.fixture()
def serve(vla):
    """``serve(**server_kwargs) -> port``: a loopback server around the tiny VLA, stopped after the test."""
    from latentstack.serving.server import ChunkBackend, PolicyServer, ServerThread

    threads = []

    def start(policy=None, **kw):
        server = PolicyServer(ChunkBackend(policy or vla), host="127.0.0.1", port=0, **kw)
        t = ServerThread(server)
        port = t.start()
        threads.append(t)
        t.port, t.policy_server = port, server
        return t

    yield start
    for t in threads:
        t.stop()
