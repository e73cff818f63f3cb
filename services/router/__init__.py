"""The router: a Litestar app that spreads Ollama and OpenAI requests over the fleet."""
