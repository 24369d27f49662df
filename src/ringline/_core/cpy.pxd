# CPython internals the compiled modules use, declared in one place.
from cpython.ref cimport PyObject, Py_DECREF


cdef extern from "Python.h":
    int _PyBytes_Resize(PyObject **pv, Py_ssize_t newsize) except -1


cdef extern from *:
    """
    /* bytes cache their hash in ob_shash (deprecated for readers since 3.11,
       still how bytes_hash caches): a bytes object rewritten in place for
       reuse (buffers.pyx's spares, udp.pyx's payloads) must start with none. */
    static inline void rl_bytes_forget_hash(PyObject *o) {
        _Py_COMP_DIAG_PUSH
        _Py_COMP_DIAG_IGNORE_DEPR_DECLS
        ((PyBytesObject *)o)->ob_shash = -1;
        _Py_COMP_DIAG_POP
    }
    """
    void bytes_forget_hash "rl_bytes_forget_hash"(PyObject *o) noexcept


cdef inline bytes bytes_resize_stolen(PyObject *raw, Py_ssize_t n):
    """Resize the bytes object ``raw`` to ``n`` in place and return it.

    _PyBytes_Resize needs the object's only reference: the caller hands it
    over (``raw = <PyObject*>b; Py_INCREF(b); b = None``) and keeps none.
    On failure the object is freed and the error raised."""
    _PyBytes_Resize(&raw, n)
    result = <bytes>raw         # a new reference ...
    Py_DECREF(result)           # ... and the stolen one dropped
    return result
