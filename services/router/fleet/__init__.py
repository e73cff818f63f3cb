"""Fleet state: registry, slots and queue, routing inputs, stats, traces, events, leader."""
