"""Policy serving over websockets, openpi's protocol: ``server`` (``lstack serve``: the model side, batching
concurrent clients off the event loop), ``client`` (robot side: numpy, msgpack and websockets only; the policy
node's ``policy: ws://host:port``) and ``msgpack_numpy`` (the wire format, no pickle).

Nothing is imported here, so ``import latentstack.serving.client`` never loads the server's torch stack.
"""
