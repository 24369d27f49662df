"""A native echo handler for `python -m ringline serve native_app:echo`
(bench/scaleout_bench.py)."""


async def echo(conn) -> None:
    recv = conn.recv
    send = conn.send_nowait
    while data := await recv(65536):
        send(data)
