# The C socket API the network layer and the asyncio face use, declared once.
from libc.stdint cimport uint16_t, uint32_t

cdef extern from "sys/socket.h" nogil:
    int MSG_NOSIGNAL
    int MSG_WAITALL
    int SOCK_NONBLOCK
    int SOCK_CLOEXEC
    int setsockopt(int fd, int level, int name, const void *val, unsigned len)
    int shutdown(int fd, int how)
    int SHUT_WR
    int SHUT_RD

cdef extern from "errno.h":
    int ECANCELED
    int EOPNOTSUPP
    int ENFILE
    int EMFILE

cdef extern from "netinet/in.h" nogil:
    int IPPROTO_TCP

cdef extern from "sys/socket.h" nogil:
    ctypedef unsigned int socklen_t
    ctypedef struct sockaddr_t "struct sockaddr":
        pass
    int getpeername(int fd, sockaddr_t *addr, socklen_t *len)
    int getsockname(int fd, sockaddr_t *addr, socklen_t *len)
    int AF_INET
    int AF_INET6

cdef extern from "arpa/inet.h" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    uint16_t ntohs(uint16_t v)
    uint32_t ntohl(uint32_t v)

cdef extern from "netinet/tcp.h" nogil:
    int TCP_NODELAY
