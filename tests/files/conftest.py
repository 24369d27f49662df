"""``native_backend``: the parametrised fixture that runs the native-API and
fs suites once per backend (tests/support/backends.py); a module takes it
with ``pytestmark = pytest.mark.usefixtures("native_backend")``."""

from tests.support.backends import URING_ONLY_HELP, native_backend

__all__ = ["native_backend"]


def pytest_configure(config):
    config.addinivalue_line("markers", URING_ONLY_HELP)
