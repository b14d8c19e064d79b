"""I/O at the edges: config files, metrics, checkpoints, progress, plots, the train driver.

Nothing here runs under jit; these functions call the pure core between jitted chunks.
"""
