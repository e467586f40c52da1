"""``ctcasr serve``: recognition over HTTP and WebSocket (:mod:`ctcasr.serve.app`)."""
