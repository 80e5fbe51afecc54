"""Training: the loop (truncated BPTT with the state carried across windows), what a resume restores,
when to validate and save, the optimisers and schedules, several processes, and fine-tuning.

``lstmgen.training.run.train`` is the whole of it behind one call; ``lstmgen.train`` wraps it for
the Python API.
"""
