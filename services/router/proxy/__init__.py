"""The request path: reading and parsing a request, planning retries, forwarding to a node."""
