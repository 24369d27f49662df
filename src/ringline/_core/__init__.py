"""The core: the io_uring ABI, the ring, SQE builders, completion tags and the loop.

Data flows one way through this package: an SQE built by ``ops`` is tagged
(``tags``), submitted through ``ring``, and its CQE is dispatched by ``loop`` to
the ``Completion`` that owns the operation.  Nothing here imports a face
(``ringline.native``, ``ringline.aio``, ``ringline.files``) or the network layer.
"""
