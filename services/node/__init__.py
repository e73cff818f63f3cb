"""herd-node: finds the routers, samples the machine and its Ollama, sends heartbeats."""
