# Linked send chains (Connection.send_chain): one SQE per part, IO_LINKed.
from ringline._net.stream cimport Stream

cdef int queue_chain(Stream s, object parts, object waiter) except -1
