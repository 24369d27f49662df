"""The native face: a coroutine per connection (``Connection``), the handler
task that drives it, ``serve``/``connect``, and the launcher and workers."""
