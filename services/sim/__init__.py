"""herd sim: an Ollama-compatible server whose behaviour is modelled, for tests and demos."""
