# Socket operations on the ring and the socket-address helpers (sockops.pyx).


cdef bint peer_is_local(int fd) noexcept
cdef bint addresses_are_local(peer, local) noexcept
