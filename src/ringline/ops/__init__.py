"""Operations: ``python -m ringline serve``'s supervisor, its workers and
the Prometheus export.  Plain Python; the workers run the native face, an
ASGI app (through uvicorn) or an asyncio protocol factory."""
