"""The network layer: receive/send buffers, ``Stream`` and socket operations.

Built on ``ringline._core`` only; both faces (``ringline.native`` and
``ringline.aio``) put their connections on a ``Stream``.
"""
