"""Herd's processes: the router, the node agent, the Ollama simulator, and the CLI over them."""
