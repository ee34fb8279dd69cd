"""Train: set-up (setup.py), the clients a rank hosts (client.py), the round loop (loop.py), aggregation
(aggregate.py), rank 0's record of each round (recorder.py), checkpoints (checkpoint.py)."""
