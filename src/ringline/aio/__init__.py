"""The asyncio face: ``EventLoop``, its TCP transports, and readiness
(``add_reader``/``add_writer`` as POLL_ADD on the ring) for the rest of asyncio."""
