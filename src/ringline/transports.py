"""asyncio TCP transports on the ring (filled in by the native TCP work)."""


class RingTransportsMixin:
    """EventLoop methods that put TCP on ringline's own stream machinery."""
