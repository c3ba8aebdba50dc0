"""Training engine: loop, checkpoints and exact resume, logging, teacher cache, several processes."""
